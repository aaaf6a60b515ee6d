"""What ships. The wheel, which every verl worker installs, holds the library and its Hydra overlay and
needs only verl, torch and packaging; nothing of the tests or the CPU harness. The sdist holds the suite
with every helper and the patch series, and its tests run from the unpacked sdist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "runs", "outputs", "__pycache__", ".venv", ".pytest_cache", ".ruff_cache"
)
BUILD = (  # setuptools logs to stdout too: the names come last, on one line
    "import sys; from setuptools import build_meta as b; out = sys.argv[1]; "  # the backend rewrites sys.argv
    "names = b.build_sdist(out), b.build_wheel(out); print('built', *names)"
)


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """An sdist and a wheel built with setuptools' own backend from a copy of the source tree."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    out = tmp / "dist"
    built = subprocess.run([sys.executable, "-c", BUILD, str(out)], cwd=source, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    _, sdist_name, wheel_name = built.stdout.splitlines()[-1].split()
    return {"source": source, "sdist": out / sdist_name, "wheel": out / wheel_name, "tmp": tmp}


def test_the_wheel_holds_the_library_and_its_overlay_and_nothing_else(dists):
    names = zipfile.ZipFile(dists["wheel"]).namelist()
    library = {name for name in names if not re.match(r"verl_cov-[^/]+\.dist-info/", name)}
    assert all(name.startswith("verl_cov/") for name in library), sorted(library)
    expected = {path.relative_to(dists["source"]).as_posix() for path in (dists["source"] / "verl_cov").rglob("*.py")}
    assert expected <= library  # every subpackage: analysis, study, dapo_math
    assert "verl_cov/hydra_config/verl_cov_trainer.yaml" in library
    assert not [name for name in names if "harness" in name or name.startswith("tests/")]


def test_the_core_install_requires_only_verl_torch_and_packaging(dists):
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        (metadata,) = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
        lines = wheel.read(metadata).decode().splitlines()
        (entry_points,) = [name for name in wheel.namelist() if name.endswith(".dist-info/entry_points.txt")]
        plugins = wheel.read(entry_points).decode()
    requires = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]
    core = {re.match(r"[A-Za-z0-9_.-]+", item).group(0).lower() for item in requires if "extra ==" not in item}
    assert core == {"verl", "torch", "packaging"}
    heavy = [item for item in requires if re.match(r"(scipy|matplotlib|math-verify)\b", item)]
    assert heavy and all("extra ==" in item for item in heavy)
    assert "[verl.plugins]" in plugins and "verl_cov = verl_cov.plugin" in plugins


def test_the_sdist_carries_the_suite_its_helpers_and_the_patch_series(dists):
    with tarfile.open(dists["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    source = dists["source"]
    for folder in ("tests", "contrib", "recipes", "scripts"):
        files = {path.relative_to(source).as_posix() for path in (source / folder).rglob("*") if path.is_file()}
        assert files and files <= names, sorted(files - names)[:10]
    assert {"LICENSE", "README.md", "pyproject.toml", ".ci/run"} <= names


def test_the_sdists_tests_run_from_the_unpacked_sdist(dists):
    unpacked = dists["tmp"] / "unpacked"
    with tarfile.open(dists["sdist"]) as sdist:
        sdist.extractall(unpacked, filter="data")
    (root,) = unpacked.iterdir()
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import verl_cov; print(verl_cov.__file__)"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(root), where.stdout + where.stderr  # the sdist's copy, not ours
    # conftest, paper_reference and synthetic_logs are the helpers these need
    suite = ["tests/test_losses.py", "tests/test_logs.py", "tests/test_layout.py"]
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *suite],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-2000:]
    assert re.search(r"\d+ passed", ran.stdout) and " error" not in ran.stdout
