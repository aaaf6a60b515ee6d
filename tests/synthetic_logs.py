"""Synthetic verl run logs with a known entropy–performance law, in the three formats verl users have."""

import csv
import json
from pathlib import Path

import numpy as np

A, B = 0.3, 0.9
STEPS = 80
VAL_EVERY = 4
PERF_KEY = "val-core/synthetic/acc/mean@1"


def synthetic_run(seed: int = 0, noise: float = 0.005, a: float = A, b: float = B) -> dict[int, dict]:
    """step -> metrics: entropy decays and drives R = −a·exp(H) + b + noise, validated every VAL_EVERY steps."""
    rng = np.random.default_rng(seed)
    records = {}
    H = 0.05 + 1.2 * np.exp(-np.arange(STEPS + 2) / 20)
    for step in range(1, STEPS + 1):
        data = {"actor/entropy": float(H[step]), "actor/pg_loss": float(rng.normal())}
        # dH = H[step+1] − H[step] ≈ −η·Cov with η = 0.5
        data["actor/cov/mean"] = float(-(H[step + 1] - H[step]) / 0.5 + rng.normal(0, 1e-4))
        if step % VAL_EVERY == 0:
            data[PERF_KEY] = float(-a * np.exp(H[step]) + b + rng.normal(0, noise))
            data["val-aux/synthetic/reward/mean@1"] = 0.5
        records[step] = data
    return records


def write_jsonl(records: dict[int, dict], path: Path) -> Path:
    with path.open("w") as handle:
        for step, data in records.items():
            handle.write(json.dumps({"step": step, "data": data}) + "\n")
    return path


def write_tensorboard(records: dict[int, dict], folder: Path) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder))
    for step, data in records.items():
        for key, value in data.items():
            writer.add_scalar(key, value, step)
    writer.close()
    return folder


def write_wandb_csv(records: dict[int, dict], path: Path, run: str = "grpo-7b") -> Path:
    """The layout of a W&B chart's CSV export: Step, '<run> - <key>', and __MIN/__MAX companions."""
    keys = sorted({k for data in records.values() for k in data})
    columns = ["Step"] + [f"{run} - {k}{suffix}" for k in keys for suffix in ("", "__MIN", "__MAX")]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for step, data in records.items():
            row = [step]
            for k in keys:
                value = data.get(k, "")
                row += [value, value, value]
            writer.writerow(row)
    return path


WRITERS = {
    "jsonl": lambda records, tmp: write_jsonl(records, tmp / "run.jsonl"),
    "tensorboard": lambda records, tmp: write_tensorboard(records, tmp / "tb"),
    "wandb_csv": lambda records, tmp: write_wandb_csv(records, tmp / "export.csv"),
}
