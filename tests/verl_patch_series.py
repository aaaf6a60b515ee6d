"""contrib/verl's patch series applied to a copy of the installed verl (shared by the contrib and e2e tests)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import verl

PATCHES = sorted((Path(__file__).resolve().parents[1] / "contrib" / "verl").glob("*.patch"))
INSTALLED = Path(verl.__file__).parent


def patched_files(patch: Path) -> list[str]:
    return re.findall(r"^diff --git a/(\S+) b/", patch.read_text(), flags=re.MULTILINE)


def apply_series(tree: Path) -> Path:
    """Copy the installed verl into ``tree`` and apply the series in order with ``git apply``; the docs
    patch has no target in an installed package. Raises with git's message if a patch does not apply."""
    shutil.copytree(INSTALLED, tree / "verl", ignore=shutil.ignore_patterns("__pycache__"))
    for patch in PATCHES:
        result = subprocess.run(
            ["git", "apply", "--exclude=docs/*", str(patch)],
            cwd=tree,
            env={**os.environ, "GIT_CEILING_DIRECTORIES": str(tree.parent)},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{patch.name} does not apply cleanly:\n{result.stderr}")
    return tree
