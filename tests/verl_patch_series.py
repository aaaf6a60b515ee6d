"""contrib/'s patch series: verl's applied to a copy of the installed verl, its opt-in overrides, and the
verl-recipe folder written out from its patch (shared by the contrib and e2e tests)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import verl

CONTRIB = Path(__file__).resolve().parents[1] / "contrib"
PATCHES = sorted((CONTRIB / "verl").glob("*.patch"))
OPT_IN = CONTRIB / "verl" / "OPT_IN.txt"
RECIPE_PATCHES = sorted((CONTRIB / "verl-recipe").glob("*.patch"))
INSTALLED = Path(verl.__file__).parent
POLICY_LOSS = "actor_rollout_ref.actor.policy_loss."


def patched_files(patch: Path) -> list[str]:
    return re.findall(r"^diff --git a/(\S+) b/", patch.read_text(), flags=re.MULTILINE)


def deleted_files(patch: Path) -> list[str]:
    return re.findall(r"^diff --git a/(\S+) b/\S+\ndeleted file mode", patch.read_text(), flags=re.MULTILINE)


def created_files(patch: Path) -> list[str]:
    return re.findall(r"^diff --git a/\S+ b/(\S+)\nnew file mode", patch.read_text(), flags=re.MULTILINE)


def opt_in_overrides() -> list[str]:
    """The Hydra overrides of contrib/verl/OPT_IN.txt that turn the series' new selection on, one per line."""
    return [line.strip() for line in OPT_IN.read_text().splitlines() if line.strip()]


def opt_in_policy_loss(path: Path = OPT_IN) -> dict[str, object]:
    """OPT_IN.txt as ``PolicyLossConfig`` keyword arguments (every line sets a ``policy_loss`` key)."""
    kwargs = {}
    for line in (line.strip() for line in path.read_text().splitlines()):
        if line:
            key, value = line.lstrip("+").split("=", 1)
            assert key.startswith(POLICY_LOSS), line
            kwargs[key.removeprefix(POLICY_LOSS)] = int(value) if value.lstrip("-").isdigit() else value
    return kwargs


def _git_apply(tree: Path, patch: Path, *args: str) -> None:
    result = subprocess.run(
        ["git", "apply", *args, str(patch)],
        cwd=tree,
        env={**os.environ, "GIT_CEILING_DIRECTORIES": str(tree.parent)},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{patch.name} does not apply cleanly:\n{result.stderr}")


def apply_series(tree: Path) -> Path:
    """Copy the installed verl into ``tree`` and apply the series in order with ``git apply``. Raises with
    git's message if a patch does not apply."""
    shutil.copytree(INSTALLED, tree / "verl", ignore=shutil.ignore_patterns("__pycache__"))
    for patch in PATCHES:
        _git_apply(tree, patch)
    return tree


def write_recipe(tree: Path) -> Path:
    """The recipe folder as verl-recipe will hold it, written from the patches into an empty ``tree``: the
    deletions (``format-patch -D``, no content) are left out, the new files are created. Returns the folder."""
    tree.mkdir(parents=True, exist_ok=True)
    for patch in RECIPE_PATCHES:
        _git_apply(tree, patch, *(f"--exclude={path}" for path in deleted_files(patch)))
    return tree / "entropy"
