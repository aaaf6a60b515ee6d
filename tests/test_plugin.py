"""Loading: verl's entry-point discovery, the external_lib fallback, Ray workers, visible failures."""

import os
import subprocess
import sys

import pytest
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

import verl_cov
from verl_cov.compat import register_once

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


def test_a_broken_plugin_warns_where_users_can_see_it():
    result = run_python("import sys; sys.modules['verl_cov.losses'] = None; import verl; " + LIST_OUR_MODES)
    assert result.returncode == 0, result.stderr  # verl itself keeps working
    assert "verl-cov: could not register" in result.stderr
    assert "verl_cov.kl_cov" not in result.stdout


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

            return sorted(name for name in registry if name.startswith("verl_cov."))

        assert ray.get(registered_modes.remote(), timeout=240) == OUR_MODES
    finally:
        ray.shutdown()
