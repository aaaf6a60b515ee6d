"""The log readers' cost, measured side by side in one run: a healthy TensorBoard run against the same
series as verl's JSON lines (the ratio is what carries over between machines), and the resync through
corrupt TensorBoard data in seconds per MB of bad bytes (zeros after a cut-off file, and random bytes).

    python scripts/bench_logs.py                 # 300 steps x 60 keys, 8 MB of bad data
    python scripts/bench_logs.py --steps 1000 --keys 100 --bad-mb 32
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from verl_cov.analysis.discover import read_runs


def best_of(repeats: int, action) -> float:
    """The fastest of ``repeats`` runs: the machine's noise only ever adds time."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def write_logs(folder: Path, steps: int, keys: int) -> tuple[Path, Path]:
    """The same series as a TensorBoard run (torch's SummaryWriter, as verl's logger) and as JSON lines."""
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(0)
    names = [f"actor/metric_{index}/mean" for index in range(keys)]
    records = {step: dict(zip(names, rng.random(keys).tolist(), strict=True)) for step in range(1, steps + 1)}
    writer = SummaryWriter(str(folder / "tb"))
    for step, data in records.items():
        for key, value in data.items():
            writer.add_scalar(key, value, step)
    writer.close()
    with (folder / "run.jsonl").open("w") as handle:
        for step, data in records.items():
            handle.write(json.dumps({"step": step, "data": data}) + "\n")
    return folder / "tb", folder / "run.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--keys", type=int, default=60)
    parser.add_argument("--bad-mb", type=int, default=8, help="MB of corrupt data appended for the resync")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tensorboard, jsonl = write_logs(folder, args.steps, args.keys)
        (events,) = tensorboard.iterdir()
        healthy = events.read_bytes()
        values = args.steps * args.keys
        tb_time = best_of(args.repeats, lambda: read_runs(tensorboard))
        jsonl_time = best_of(args.repeats, lambda: read_runs(jsonl))
        print(
            f"healthy run, {values} values: TensorBoard {len(healthy) / 1e6:.2f} MB in {tb_time * 1e3:.1f} ms, "
            f"JSON lines {jsonl.stat().st_size / 1e6:.2f} MB in {jsonl_time * 1e3:.1f} ms"
        )
        print(f"TensorBoard / JSONL cost: {tb_time / jsonl_time:.2f}x (target <= 2x)")
        bad = args.bad_mb << 20
        rng = np.random.default_rng(1)
        for label, garbage in (("zeros", bytes(bad)), ("random bytes", rng.integers(0, 256, bad, np.uint8).tobytes())):
            # a file cut off mid-record, then the bad bytes, then the healthy records again
            events.write_bytes(healthy[:-7] + garbage + healthy)
            resync = best_of(max(1, args.repeats // 2), lambda: read_runs(tensorboard)) - tb_time
            print(f"resync through {args.bad_mb} MB of {label}: {resync / args.bad_mb:.3f} s per MB (target <= 0.2)")


if __name__ == "__main__":
    main()
