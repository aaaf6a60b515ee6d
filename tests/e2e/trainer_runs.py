"""Run verl's trainer on CPU in a subprocess (``verl_cpu_harness.launch``) and read what it wrote.

Every run keeps its whole log in ``OUT/run.log``; its wall time and the peak memory of its process tree
(the driver, Ray's daemons and every worker, sampled twice a second) go to ``STATS``, which the e2e
conftest prints at the end of the session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

HARNESS_ROOT = Path(__file__).resolve().parent
REPO = HARNESS_ROOT.parents[1]
PL = "actor_rollout_ref.actor.policy_loss"
TARGET = f"{PL}._target_=verl_cov.config.CovPolicyLossConfig"
STATS: list[dict] = []
TIMEOUT = 600


@dataclass
class TrainerRun:
    out: Path
    returncode: int
    log: str
    seconds: float

    def metrics(self) -> list[dict]:
        """verl's file-logger records, one per step, in order."""
        path = self.out / "metrics.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [record for record in records if "data" in record]

    def steps(self) -> dict[int, dict]:
        """The training steps' records (step 0, if any, holds only the validation before training)."""
        return {record["step"]: record["data"] for record in self.metrics() if record["step"] >= 1}

    def trace(self, name: str) -> list[dict]:
        path = self.out / "trace" / name
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class _PeakMemory(threading.Thread):
    """Peak summed RSS of a process and all its descendants."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            try:
                root = psutil.Process(self.root)
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for process in tree:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)


def run_command(command: list[str], out: Path, env: dict, label: str) -> TrainerRun:
    """Run ``command`` with ``env``, its output in ``OUT/run.log``; record its time and peak memory."""
    start = time.perf_counter()
    with (out / "run.log").open("w") as log:
        # In OUT: Hydra writes its outputs/ folder into the working directory.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out)
        sampler = _PeakMemory(process.pid)
        sampler.start()
        try:
            returncode = process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = process.wait()
        sampler.done.set()
    seconds = time.perf_counter() - start
    STATS.append({"run": label, "seconds": round(seconds, 1), "peak_gib": round(sampler.peak / 2**30, 2)})
    return TrainerRun(out, returncode, (out / "run.log").read_text(errors="replace"), seconds)


def run_trainer(
    out: Path, *overrides: str, gpus: int = 1, steps: int = 3, env: dict | None = None, label: str = ""
) -> TrainerRun:
    """``python -m verl_cpu_harness.launch OUT overrides...`` with a trace folder; blocks until it exits."""
    (out / "trace").mkdir(parents=True, exist_ok=True)
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HARNESS_ROOT), os.environ.get("PYTHONPATH")])),
        "GPUS": str(gpus),
        "STEPS": str(steps),
        "VERL_CPU_HARNESS_TRACE": str(out / "trace"),
        **(env or {}),
    }
    command = [sys.executable, "-m", "verl_cpu_harness.launch", str(out), *overrides]
    return run_command(command, out, environment, label or out.name)
