"""The benchmark scripts run and print what their docs quote: one record per mode and size, ratios to
the modes they compare against (a smoke run on tiny inputs; the timings themselves are not asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from verl_cov.compat import HAS_ENGINE_TRAIN_BATCH

REPO = Path(__file__).resolve().parents[1]


def run_script(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300, env=None, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_bench_loss_prints_every_mode_with_its_ratios():
    records = [
        json.loads(line)
        for line in run_script(
            "scripts/bench_loss.py", "--sizes", "2x64", "--repeat", "2", "--device", "cpu"
        ).splitlines()
    ]
    assert [r["mode"] for r in records] == [
        "vanilla",
        "verl_cov.vanilla",
        "clip_cov",
        "kl_cov",
        "verl_cov.clip_cov",
        "verl_cov.kl_cov",
        *(["verl_cov.forking"] if HAS_ENGINE_TRAIN_BATCH else []),  # the 80/20 rule needs verl >= 0.8
    ]
    by_mode = {r["mode"]: r for r in records}
    assert by_mode["vanilla"]["vs_vanilla"] == 1.0
    for mode, builtin in (("verl_cov.clip_cov", "clip_cov"), ("verl_cov.kl_cov", "kl_cov")):
        record = by_mode[mode]
        assert record["ms"] > 0 and record["tokens"] == 128 and record["ms_median"] >= record["ms"]
        assert record["vs_verl_builtin"] == pytest.approx(record["ms"] / by_mode[builtin]["ms"], rel=0.01)


def test_bench_logs_prints_the_cost_ratio_and_the_resync_speed():
    out = run_script("scripts/bench_logs.py", "--steps", "20", "--keys", "5", "--bad-mb", "1", "--repeats", "1")
    assert "TensorBoard / JSONL cost:" in out
    assert out.count("s per MB") == 2
