"""Every ``main_ppo`` launch in the README, pasted as written, composes with verl's own Hydra config and
builds verl's actor config (our schema included): no missing ``+``, no stale key, no bad value."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from verl_hydra import build_actor

from verl_cov.config import CovPolicyLossConfig

README = Path(__file__).resolve().parents[1] / "README.md"


def launch_snippets() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    return [block for block in blocks if "verl.trainer.main_ppo" in block]


def overrides_of(snippet: str) -> tuple[list[str], bool]:
    """The Hydra overrides of a launch (``...`` stands for the user's own), and whether it uses the overlay."""
    text = snippet.replace("\\\n", " ").replace("$(verl-cov config-path)", "OVERLAY")
    words = shlex.split(text, comments=True)
    words = words[words.index("verl.trainer.main_ppo") + 1 :]
    overlay = "--config-path=OVERLAY" in words
    return [word for word in words if word != "..." and not word.startswith("--config-")], overlay


def test_the_readme_has_launch_snippets():
    assert len(launch_snippets()) >= 2


@pytest.mark.parametrize("snippet", launch_snippets(), ids=lambda s: s.split("\n")[0][:60])
def test_launch_snippet_builds_verl_actor_config(snippet):
    overrides, overlay = overrides_of(snippet)
    assert overrides, snippet
    actor = build_actor(overrides, overlay=overlay)
    assert isinstance(actor.policy_loss, CovPolicyLossConfig)
    for override in overrides:
        key, value = override.lstrip("+").split("=", 1)
        if key.startswith("actor_rollout_ref.actor.policy_loss.") and not key.endswith("_target_"):
            assert str(getattr(actor.policy_loss, key.rsplit(".", 1)[1])) == value
