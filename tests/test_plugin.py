"""Loading: verl's entry-point discovery, the external_lib fallback, Ray workers, visible failures."""

import os
import subprocess
import sys

import pytest
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
from verl_support import HAS_ENTRY_POINTS

import verl_cov
from verl_cov.compat import check_version, register_once

OUR_MODES = ["verl_cov.clip_cov", "verl_cov.kl_cov", "verl_cov.vanilla"]
LIST_OUR_MODES = (
    "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY as R; "
    "print(sorted(k for k in R if 'cov' in k or k == 'vanilla'))"
)


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
        check=False,
    )


# What a verl worker does with `actor_rollout_ref.model.external_lib=verl_cov` (every supported verl).
EXTERNAL_LIB = "from verl.utils.import_utils import import_external_libs; import_external_libs('verl_cov'); "


@pytest.mark.skipif(not HAS_ENTRY_POINTS, reason="verl < 0.9 has no verl.plugins entry points")
def test_plain_import_verl_registers_both_modes():
    result = run_python("import verl; " + LIST_OUR_MODES)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(sorted(["clip_cov", "kl_cov", "vanilla", *OUR_MODES]))


def test_external_lib_fallback_registers_when_entry_points_are_off():
    code = (
        "import verl; from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY as R; "
        "assert 'verl_cov.kl_cov' not in R; "
        "from verl.utils.import_utils import import_external_libs; import_external_libs('verl_cov'); " + LIST_OUR_MODES
    )
    result = run_python(code, VERL_USE_EXTERNAL_PLUGINS="none")
    assert result.returncode == 0, result.stderr
    assert "verl_cov.kl_cov" in result.stdout


def test_our_config_target_registers_the_modes_where_it_is_built():
    """A worker that builds the actor config from `_target_: verl_cov.config.CovPolicyLossConfig` has the modes."""
    code = (
        "import verl; from verl.utils.config import omega_conf_to_dataclass; "
        "omega_conf_to_dataclass({'_target_': 'verl_cov.config.CovPolicyLossConfig'}); " + LIST_OUR_MODES
    )
    result = run_python(code, VERL_USE_EXTERNAL_PLUGINS="none")
    assert result.returncode == 0, result.stderr
    assert "verl_cov.clip_cov" in result.stdout


@pytest.mark.skipif(not HAS_ENTRY_POINTS, reason="verl < 0.9 has no verl.plugins entry points")
def test_a_broken_plugin_warns_where_users_can_see_it():
    result = run_python("import sys; sys.modules['verl_cov.losses'] = None; import verl; " + LIST_OUR_MODES)
    assert result.returncode == 0, result.stderr  # verl itself keeps working
    assert "verl-cov: could not register" in result.stderr
    assert "verl_cov.kl_cov" not in result.stdout


def test_a_broken_plugin_fails_loudly_through_external_lib():
    result = run_python("import sys; sys.modules['verl_cov.losses'] = None; import verl; " + EXTERNAL_LIB)
    assert result.returncode != 0
    assert "verl-cov: could not register" in result.stderr


@pytest.mark.parametrize("installed", ["0.5.0", "0.6.0", "0.4.1", "0.10.0", "1.0.0"])
def test_unsupported_verl_is_refused_naming_both_versions(installed):
    with pytest.raises(ImportError, match=rf"supports verl >=0.6.1,<0.10; verl {installed} is installed"):
        check_version(installed)


@pytest.mark.parametrize("installed", ["0.6.1", "0.7.1", "0.8.0", "0.9.1"])
def test_supported_verl_is_accepted(installed):
    check_version(installed)


def test_importing_with_an_unsupported_verl_fails_at_import():
    code = "import verl; verl.__version__ = '0.5.0'; import verl_cov"
    result = run_python(code, VERL_USE_EXTERNAL_PLUGINS="none")
    assert result.returncode != 0
    assert "ImportError: verl-cov supports verl >=0.6.1,<0.10; verl 0.5.0 is installed" in result.stderr


def test_plugin_import_adds_nothing_beyond_verls_loss_module():
    """The plugin imports only what verl's own policy-loss module (imported by every actor) already has."""
    code = (
        "import sys, verl, verl.trainer.ppo.core_algos; before = set(sys.modules); import verl_cov; "
        "print(sorted(m for m in set(sys.modules) - before if not m.startswith('verl_cov')))"
    )
    result = run_python(code, VERL_USE_EXTERNAL_PLUGINS="none")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_registration_is_idempotent_and_leaves_verl_modes_alone():
    from verl.trainer.ppo import core_algos

    verl_clip_cov, verl_kl_cov = POLICY_LOSS_REGISTRY["clip_cov"], POLICY_LOSS_REGISTRY["kl_cov"]
    ours = {name: POLICY_LOSS_REGISTRY[name] for name in OUR_MODES}
    verl_cov.register()
    verl_cov.register()
    assert {name: POLICY_LOSS_REGISTRY[name] for name in OUR_MODES} == ours
    assert POLICY_LOSS_REGISTRY["clip_cov"] is verl_clip_cov is core_algos.compute_policy_loss_clip_cov
    assert POLICY_LOSS_REGISTRY["kl_cov"] is verl_kl_cov is core_algos.compute_policy_loss_kl_cov


def test_register_once_refuses_to_overwrite_another_function():
    with pytest.raises(RuntimeError, match="already registered"):
        register_once("vanilla", lambda *args, **kwargs: None)
    assert POLICY_LOSS_REGISTRY["vanilla"].__module__ == "verl.trainer.ppo.core_algos"


def test_ray_worker_sees_both_modes():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:

        @ray.remote
        def registered_modes():
            import verl  # noqa: F401  what a verl worker process does first
            from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY as registry
            from verl.utils.import_utils import import_external_libs

            if not HAS_ENTRY_POINTS:  # older verl: the worker imports actor_rollout_ref.model.external_lib
                import_external_libs("verl_cov")

            return sorted(name for name in registry if name.startswith("verl_cov."))

        assert ray.get(registered_modes.remote(), timeout=240) == OUR_MODES
    finally:
        ray.shutdown()
