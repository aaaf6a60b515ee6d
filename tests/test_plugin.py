"""Loading: verl's entry-point discovery, the external_lib fallback, Ray workers, visible failures."""

import os
import subprocess
import sys

import pytest
from packaging.version import Version
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
from verl_support import HAS_ENTRY_POINTS, VERL

from verl_cov import plugin
from verl_cov.compat import check_version, register_once

OUR_MODES = ["verl_cov.clip_cov", "verl_cov.forking", "verl_cov.kl_cov", "verl_cov.vanilla"]
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


# What a verl worker does with `actor_rollout_ref.model.external_lib=verl_cov.plugin` (every supported verl).
EXTERNAL_LIB = "from verl.utils.import_utils import import_external_libs; import_external_libs('verl_cov.plugin'); "


@pytest.mark.skipif(not HAS_ENTRY_POINTS, reason="verl < 0.9 has no verl.plugins entry points")
def test_plain_import_verl_registers_both_modes():
    result = run_python("import verl; " + LIST_OUR_MODES)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(sorted(["clip_cov", "kl_cov", "vanilla", *OUR_MODES]))


def test_external_lib_fallback_registers_when_entry_points_are_off():
    code = (
        "import verl; from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY as R; "
        "assert 'verl_cov.kl_cov' not in R; "
        "from verl.utils.import_utils import import_external_libs; import_external_libs('verl_cov.plugin'); "
        + LIST_OUR_MODES
    )
    result = run_python(code, VERL_USE_EXTERNAL_PLUGINS="none")
    assert result.returncode == 0, result.stderr
    assert "verl_cov.kl_cov" in result.stdout


BUILD_OUR_CONFIG = (
    "import verl; from verl.utils.config import omega_conf_to_dataclass; "
    "omega_conf_to_dataclass({'_target_': 'verl_cov.config.CovPolicyLossConfig', 'loss_mode': 'verl_cov.kl_cov'}); "
)


def test_building_our_config_registers_nothing():
    """The config is a leaf: building it installs no mode and no hook (the plugin does)."""
    result = run_python(
        BUILD_OUR_CONFIG.replace("verl_cov.kl_cov", "vanilla") + LIST_OUR_MODES, VERL_USE_EXTERNAL_PLUGINS="none"
    )
    assert result.returncode == 0, result.stderr
    assert "verl_cov" not in result.stdout


@pytest.mark.skipif(not HAS_ENTRY_POINTS, reason="verl < 0.9 loads plugins in the workers only")
@pytest.mark.parametrize("policy", ["none", "some_other_plugin"])
def test_config_check_names_the_fix_when_the_plugin_did_not_load(policy):
    """The driver's config check (verl's validate_config builds this config) sees the mode unregistered."""
    result = run_python(BUILD_OUR_CONFIG, VERL_USE_EXTERNAL_PLUGINS=policy)
    assert result.returncode != 0
    assert "loss_mode='verl_cov.kl_cov' is not registered in this process" in result.stderr
    assert f"VERL_USE_EXTERNAL_PLUGINS={policy}" in result.stderr
    assert "actor_rollout_ref.model.external_lib=verl_cov.plugin" in result.stderr


def test_importing_the_package_loads_neither_verl_nor_torch():
    result = run_python("import sys, verl_cov, verl_cov.cli; print(sorted({'verl', 'torch'} & set(sys.modules)))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(VERL < Version("0.8"), reason="verl < 0.8 has no engine train_batch")
def test_the_plugin_wraps_the_engine_without_importing_it():
    """Loading the plugin leaves verl's engine module alone (0.7 s, ~800 modules); importing it later wraps it."""
    code = (
        "import sys, verl, verl_cov.plugin; loaded = 'verl.workers.engine.base' in sys.modules; "
        "from verl.workers.engine.base import BaseEngine; "
        "print(loaded, getattr(BaseEngine.train_batch, '__verl_cov_wrapped__', False))"
    )
    result = run_python(code, VERL_USE_EXTERNAL_PLUGINS="none")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["False", "True"]


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


@pytest.mark.parametrize("installed", ["0.5.0", "0.6.0", "0.4.1", "0.6.1rc1"])
def test_too_old_verl_is_refused_naming_both_versions(installed):
    with pytest.raises(ImportError, match=rf"needs verl >=0.6.1; verl {installed} is installed"):
        check_version(installed)


@pytest.mark.parametrize("installed", ["0.6.1", "0.7.1", "0.8.0", "0.9.1"])
def test_tested_verl_is_accepted_quietly(installed, recwarn):
    check_version(installed)
    assert not recwarn.list


@pytest.mark.parametrize("installed", ["0.10.0.dev0", "0.10.0", "1.0.0"])
def test_newer_verl_is_accepted_with_a_warning(installed):
    """verl's git head (0.10.0.dev0) must not be refused: pip would not downgrade it either."""
    with pytest.warns(UserWarning, match=rf"tested on verl >=0.6.1,<0.10; verl {installed} is newer"):
        check_version(installed)


def test_one_rule_for_pip_and_the_import_check():
    from pathlib import Path

    import tomllib

    from verl_cov.compat import REQUIRES_VERL

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert f"verl{REQUIRES_VERL}" in [dependency.split("#")[0].strip() for dependency in project["dependencies"]]


def test_importing_with_an_unsupported_verl_fails_at_import():
    code = "import verl; verl.__version__ = '0.5.0'; import verl_cov.plugin"
    result = run_python(code, VERL_USE_EXTERNAL_PLUGINS="none")
    assert result.returncode != 0
    assert "ImportError: verl-cov needs verl >=0.6.1; verl 0.5.0 is installed" in result.stderr


def test_plugin_import_adds_nothing_beyond_verls_loss_module():
    """The plugin imports only what verl's own policy-loss module (imported by every actor) already has,
    and packaging's version specifiers (verl's requirement check)."""
    code = (
        "import sys, verl, verl.trainer.ppo.core_algos, verl.workers.config, packaging.specifiers; "
        "before = set(sys.modules); "
        "import verl_cov.plugin; "
        "print(sorted(m for m in set(sys.modules) - before if not m.startswith('verl_cov')))"
    )
    result = run_python(code, VERL_USE_EXTERNAL_PLUGINS="none")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_registration_is_idempotent_and_leaves_verl_modes_alone():
    from verl.trainer.ppo import core_algos

    verl_clip_cov, verl_kl_cov = POLICY_LOSS_REGISTRY["clip_cov"], POLICY_LOSS_REGISTRY["kl_cov"]
    ours = {name: POLICY_LOSS_REGISTRY[name] for name in OUR_MODES}
    plugin.register()
    plugin.register()
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
                import_external_libs("verl_cov.plugin")

            return sorted(name for name in registry if name.startswith("verl_cov."))

        assert ray.get(registered_modes.remote(), timeout=240) == OUR_MODES
    finally:
        ray.shutdown()
