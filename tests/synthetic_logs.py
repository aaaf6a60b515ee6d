"""Synthetic verl run logs with a known entropy–performance law, written the way verl writes each format.

verl logs ``actor/entropy`` at step N before update N and validates after update N, so the score
logged at step N is drawn from the law at the entropy logged at step N + 1; the final validation has
no entropy after it. Console lines come from verl's own ``concat_dict_to_str`` (values through
``pprint``, hence ``np.float64(0.5)``), wrapped as Ray prints them; TensorBoard files from the
``SummaryWriter`` verl's tensorboard logger uses; W&B exports in a panel's CSV layout.
"""

import csv
import json
from pathlib import Path

import numpy as np

A, B = 0.3, 0.9
STEPS = 80
VAL_EVERY = 4
PERF_KEY = "val-core/synthetic/acc/mean@1"
# The fields every fit has in the JSON contract of `verl-cov fit --json`.
FIT_FIELDS = frozenset(
    {"run", "a", "b", "r2", "ceiling", "ceiling_se", "n_points", "entropy_key", "perf_key", "left_out", "warnings"}
)


def entropy_curve(steps: int = STEPS) -> np.ndarray:
    return 0.05 + 1.2 * np.exp(-np.arange(steps + 2) / 20)


def synthetic_run(
    seed: int = 0,
    noise: float = 0.005,
    a: float = A,
    b: float = B,
    perf_key: str = PERF_KEY,
    entropy_key: str = "actor/entropy",
) -> dict[int, dict]:
    """step -> metrics: entropy decays; the validation at step N scores R = −a·exp(H_{N+1}) + b + noise."""
    rng = np.random.default_rng(seed)
    records = {}
    H = entropy_curve()
    for step in range(1, STEPS + 1):
        data = {entropy_key: float(H[step]), "actor/pg_loss": float(rng.normal())}
        # dH = H[step+1] − H[step] ≈ −η·Cov with η = 0.5
        data["actor/cov/mean"] = float(-(H[step + 1] - H[step]) / 0.5 + rng.normal(0, 1e-4))
        if step % VAL_EVERY == 0:
            data[perf_key] = float(-a * np.exp(H[step + 1]) + b + rng.normal(0, noise))
            data["val-aux/synthetic/reward/mean@1"] = 0.5
        records[step] = data
    return records


def expected_points(records: dict[int, dict], perf_key: str = PERF_KEY, entropy_key: str = "actor/entropy") -> list:
    """(step, H, R) pairs by the pairing rule, computed by hand: entropy from the next logged step."""
    steps = sorted(records)
    out = []
    for step in steps:
        if perf_key in records[step] and step + 1 in records:
            out.append((step, records[step + 1][entropy_key], records[step][perf_key]))
    return out


def write_jsonl(records: dict[int, dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
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


def write_console(records: dict[int, dict], path: Path, width: int | None = None, actor: str = "TaskRunner") -> Path:
    """verl's console logger as saved from a Ray driver's stdout: colours, the actor prefix, progress bars
    joined by carriage returns, numpy scalars, and (``width``) each step line cut into pieces of that many
    characters, each printed with its own prefix."""
    from verl.utils.logger.aggregate_logger import concat_dict_to_str

    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"\x1b[36m({actor} pid=4242)\x1b[0m "
    lines = [f"{prefix}Training from scratch"]
    for step, data in records.items():
        line = concat_dict_to_str({key: np.float64(value) for key, value in data.items()}, step=step)
        pieces = [line[i : i + width] for i in range(0, len(line), width)] if width else [line]
        lines.append(
            f"{prefix}Training Progress:  {step}%|██  | {step}/{len(records)} [00:01<00:02]\r" + prefix + pieces[0]
        )
        lines += [prefix + piece for piece in pieces[1:]]
        lines.append(f"{prefix}\x1b[33mWARNING\x1b[0m 2025-05-01 12:00:00 - some - other - output")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_wandb_csv(runs: dict[str, dict[int, dict]], path: Path) -> Path:
    """A W&B panel's CSV export of several runs: Step, then '<run> - <key>' with __MIN / __MAX companions."""
    keys = sorted({k for records in runs.values() for data in records.values() for k in data})
    columns = ["Step"] + [f"{run} - {k}{suffix}" for run in runs for k in keys for suffix in ("", "__MIN", "__MAX")]
    steps = sorted({s for records in runs.values() for s in records})
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for step in steps:
            row = [step]
            for records in runs.values():
                for k in keys:
                    value = records.get(step, {}).get(k, "")
                    row += [value, value, value]
            writer.writerow(row)
    return path


WRITERS = {
    "jsonl": lambda records, tmp: write_jsonl(records, tmp / "run.jsonl"),
    "tensorboard": lambda records, tmp: write_tensorboard(records, tmp / "tb"),
    "wandb_csv": lambda records, tmp: write_wandb_csv({"grpo-7b": records}, tmp / "export.csv"),
    "console": lambda records, tmp: write_console(records, tmp / "console.log"),
    "console_cut": lambda records, tmp: write_console(records, tmp / "console.log", width=97),
}
