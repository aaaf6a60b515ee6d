"""The shell scripts' own guards: the venv folder's owner, the e2e launcher's usage line."""

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_setup_venv_refuses_a_folder_others_can_write(tmp_path):
    """A venv under a predictable /tmp path that another user could plant is never run."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "setup_venv.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "VERL_COV_VENVS": str(shared)},
        timeout=60,
    )
    assert result.returncode == 2
    assert "must be yours and not group- or world-writable" in result.stderr
    assert list(shared.iterdir()) == []


def test_e2e_launcher_needs_an_output_folder():
    result = subprocess.run(["bash", str(REPO / "scripts" / "e2e_cpu.sh")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "usage:" in result.stderr
