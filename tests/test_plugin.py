"""Loading: verl's entry-point discovery, the external_lib fallback, Ray workers, visible failures."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
from verl_support import HAS_ENTRY_POINTS, VERL

from verl_cov import plugin
from verl_cov.compat import check_version
from verl_cov.plugin import register_once

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


# Imports verl's engine module, then prints whether verl-cov wrapped its train_batch.
PRINT_ENGINE_WRAPPED = (
    "from verl.workers.engine.base import BaseEngine; "
    "print(getattr(BaseEngine.train_batch, '__verl_cov_wrapped__', False))"
)

# What a verl worker does with `actor_rollout_ref.model.external_lib=verl_cov.plugin` (every supported verl).
EXTERNAL_LIB = "from verl.utils.import_utils import import_external_libs; import_external_libs('verl_cov.plugin'); "


@pytest.mark.skipif(not HAS_ENTRY_POINTS, reason="verl < 0.9 has no verl.plugins entry points")
def test_plain_import_verl_registers_both_modes():
    result = run_python("import verl; " + LIST_OUR_MODES)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(sorted(["clip_cov", "kl_cov", "vanilla", *OUR_MODES]))


# A user's script or test that imports one verl-cov module before verl: on verl >= 0.9 that import runs verl's
# entry point, hence the plugin, while the module is half-imported. Then a verl config check and one loss call,
# as a driver and a worker do, and whether verl's engine got wrapped once it was imported.
IMPORT_FIRST = """
import json, sys
{first}
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, get_policy_loss_fn
from verl.utils.config import omega_conf_to_dataclass
sys.path.insert(0, {tests!r})
from conftest import actor_config, random_batch
{external_lib}
omega_conf_to_dataclass({{"_target_": "verl_cov.config.CovPolicyLossConfig", "loss_mode": "verl_cov.kl_cov"}})
loss, _ = get_policy_loss_fn("verl_cov.kl_cov")(*random_batch(), "token-mean", actor_config(kl_cov_ratio=0.1))
wrapped = None
if {engine}:
    from verl.workers.engine.base import BaseEngine
    wrapped = getattr(BaseEngine.train_batch, "__verl_cov_wrapped__", False)
modes = sorted(name for name in POLICY_LOSS_REGISTRY if name.startswith("verl_cov."))
print(json.dumps({{"modes": modes, "finite": bool(loss.isfinite()), "wrapped": wrapped}}))
"""
PACKAGE = Path(plugin.__file__).parent
FIRST_IMPORTS = [
    "import verl",
    *(f"import verl_cov.{path.stem}" for path in sorted(PACKAGE.glob("[!_]*.py"))),
    "import verl_cov.study.rl",  # the study: it imports the plugin itself, from inside its own import
]


def import_first(first: str, environment: dict[str, str]) -> subprocess.Popen:
    fallback = "" if HAS_ENTRY_POINTS and environment.get("VERL_USE_EXTERNAL_PLUGINS") != "none" else EXTERNAL_LIB
    code = IMPORT_FIRST.format(
        first=first, tests=str(Path(__file__).parent), external_lib=fallback, engine=VERL >= Version("0.8")
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **environment},
    )


@pytest.mark.parametrize(
    "environment, firsts",
    [
        ({}, FIRST_IMPORTS),  # verl >= 0.9: the entry point; older verl: external_lib
        ({"VERL_USE_EXTERNAL_PLUGINS": "verl_cov"}, ["import verl_cov.config", "import verl_cov.losses"]),
        ({"VERL_USE_EXTERNAL_PLUGINS": "none"}, ["import verl_cov.config", "import verl_cov.losses"]),
    ],
    ids=["every_module", "entry_point_named", "external_lib"],
)
def test_every_import_order_registers_the_modes_and_wraps_the_engine(environment, firsts):
    """Whichever verl-cov module a process imports first: the modes are registered without a warning, the
    config check passes, a loss runs, verl's engine is wrapped (verl >= 0.8)."""
    if environment and not HAS_ENTRY_POINTS:
        pytest.skip("verl < 0.9 reads no VERL_USE_EXTERNAL_PLUGINS: the first case covers external_lib")
    for start in range(0, len(firsts), 2):  # two processes at a time: each imports verl and torch
        processes = {first: import_first(first, environment) for first in firsts[start : start + 2]}
        for first, process in processes.items():
            stdout, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, f"{first}: {stderr}"
            assert "verl-cov: could not register" not in stderr, f"{first}: {stderr}"
            outcome = json.loads(stdout.strip().splitlines()[-1])
            assert outcome["modes"] == OUR_MODES and outcome["finite"], first
            assert outcome["wrapped"] is (True if VERL >= Version("0.8") else None), first


def test_the_plugin_imports_only_leaf_names_at_module_level():
    """What lets verl import the plugin from inside a half-imported verl-cov module: at module level it imports
    nothing of verl-cov but ``verl_cov.names``, which imports nothing."""
    tree = ast.parse(Path(plugin.__file__).read_text())
    ours = {
        node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("verl_cov")
    }
    ours |= {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names} & {
        f"verl_cov.{path.stem}" for path in PACKAGE.glob("*.py")
    }
    assert ours == {"verl_cov.names"}
    names = ast.parse((PACKAGE / "names.py").read_text())
    assert not [node for node in ast.walk(names) if isinstance(node, (ast.Import, ast.ImportFrom))]


@pytest.mark.skipif(not HAS_ENTRY_POINTS, reason="verl < 0.9 has no verl.plugins entry points")
def test_a_module_that_fails_to_import_still_warns():
    """Where no verl-cov module is half-imported, the plugin imports the losses first: a module that fails to
    import is reported, and nothing is registered."""
    code = "import sys; sys.modules['verl_cov.scope'] = None; import verl; " + LIST_OUR_MODES
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "verl-cov: could not register" in result.stderr and "verl_cov.scope" in result.stderr
    assert "verl_cov.kl_cov" not in result.stdout


def test_a_registered_mode_pickles_as_its_loss_function():
    import pickle

    from verl_cov import losses

    for name, function in plugin.LOSSES.items():
        assert pickle.loads(pickle.dumps(POLICY_LOSS_REGISTRY[name])) is getattr(losses, function)


@pytest.mark.skipif(VERL < Version("0.8"), reason="verl < 0.8 has no engine train_batch")
def test_a_failed_wrap_warns_and_leaves_verls_engine_importable():
    code = "import sys, verl, verl_cov.plugin; sys.modules['verl_cov.engine_adapter'] = None; " + PRINT_ENGINE_WRAPPED
    result = run_python(code, VERL_USE_EXTERNAL_PLUGINS="none")
    assert result.returncode == 0, result.stderr
    assert "verl-cov: could not wrap verl's verl.workers.engine.base" in result.stderr
    assert result.stdout.split()[-1] == "False"


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
        "import sys, verl, verl_cov.plugin; print('verl.workers.engine.base' in sys.modules); " + PRINT_ENGINE_WRAPPED
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
