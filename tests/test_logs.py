"""verl_cov.analysis readers: every format verl users have, folders of runs, partial reads, bad input."""

import json
import os
import struct

import numpy as np
import pytest
from synthetic_logs import (
    PERF_KEY,
    STEPS,
    VAL_EVERY,
    WRITERS,
    synthetic_run,
    write_console,
    write_jsonl,
    write_tensorboard,
    write_wandb_csv,
)

from verl_cov.analysis.discover import read_runs
from verl_cov.analysis.run_log import LogError


def only(runs):
    assert len(runs) == 1, [run.name for run in runs]
    return runs[0]


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_each_format_reads_the_same_series(fmt, tmp_path):
    records = synthetic_run()
    run = only(read_runs(WRITERS[fmt](records, tmp_path)))
    steps, H = run.get("actor/entropy")
    assert steps.tolist() == list(range(1, STEPS + 1))
    np.testing.assert_allclose(H, [records[s]["actor/entropy"] for s in steps], rtol=1e-6)
    perf_steps, R = run.get(PERF_KEY)
    assert perf_steps.tolist() == list(range(VAL_EVERY, STEPS + 1, VAL_EVERY))
    np.testing.assert_allclose(R, [records[s][PERF_KEY] for s in perf_steps], rtol=1e-6)
    assert not run.warnings


def test_console_values_keep_their_precision_and_other_lines_are_skipped(tmp_path):
    records = {1: {"actor/entropy": 0.123456789012, "val-core/x/acc/mean@1": 0.5}}
    run = only(read_runs(write_console(records, tmp_path / "out.txt")))
    assert run.series == {"actor/entropy": {1: 0.123456789012}, "val-core/x/acc/mean@1": {1: 0.5}}


def test_a_wandb_export_of_two_runs_gives_two_runs(tmp_path):
    """The runs of a multi-run panel export used to be merged (last run's columns won)."""
    grpo, klcov = synthetic_run(seed=1, a=0.3), synthetic_run(seed=2, a=0.6)
    export = write_wandb_csv({"grpo": grpo, "qwen - klcov - 7b": klcov}, tmp_path / "panel.csv")
    runs = {run.name: run for run in read_runs(export)}
    assert set(runs) == {"panel/grpo", "panel/qwen - klcov - 7b"}  # run names may hold " - "
    assert runs["panel/grpo"].series[PERF_KEY][8] == pytest.approx(grpo[8][PERF_KEY])
    assert runs["panel/qwen - klcov - 7b"].series[PERF_KEY][8] == pytest.approx(klcov[8][PERF_KEY])


def test_a_csv_with_a_byte_order_mark_reads(tmp_path):
    path = write_wandb_csv({"r": synthetic_run()}, tmp_path / "bom.csv")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert only(read_runs(path)).get("actor/entropy")[0].size == STEPS


def test_a_folder_of_runs_gives_one_run_per_run_named_by_path(tmp_path):
    """A TensorBoard project folder with several experiments used to be merged into one run."""
    write_tensorboard(synthetic_run(seed=1), tmp_path / "proj" / "grpo")
    write_tensorboard(synthetic_run(seed=2), tmp_path / "proj" / "klcov")
    write_jsonl(synthetic_run(seed=3), tmp_path / "proj" / "file_logger" / "clip_cov.jsonl")
    write_console(synthetic_run(seed=4), tmp_path / "proj" / "console" / "kl_cov.log", width=120)
    (tmp_path / "proj" / "notes.txt").write_text("not a log\n")
    runs = {run.name: run for run in read_runs(tmp_path / "proj")}
    assert set(runs) == {"grpo", "klcov", "file_logger/clip_cov", "console/kl_cov"}
    assert runs["klcov"].series[PERF_KEY][4] == pytest.approx(synthetic_run(seed=2)[4][PERF_KEY], rel=1e-6)


def event_files(folder):
    return sorted(folder.rglob("*tfevents*"))


def test_a_corrupt_tensorboard_record_is_skipped_with_a_warning_and_the_rest_kept(tmp_path):
    """One flipped byte in the middle of an event file used to drop the rest of the run silently."""
    write_tensorboard(synthetic_run(), tmp_path / "tb")
    (path,) = event_files(tmp_path / "tb")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    run = only(read_runs(tmp_path / "tb"))
    assert len(run.warnings) == 1 and "skipped corrupt" in run.warnings[0]
    total = sum(len(series) for series in run.series.values())
    expected = sum(len(data) for data in synthetic_run().values())
    assert expected - 2 <= total < expected  # one record lost (or two if the flip hit a boundary), not half
    assert max(run.series["actor/entropy"]) == STEPS


def test_a_cut_off_event_file_keeps_what_was_written(tmp_path):
    write_tensorboard(synthetic_run(), tmp_path / "tb")
    (path,) = event_files(tmp_path / "tb")
    path.write_bytes(path.read_bytes()[:-7])
    run = only(read_runs(tmp_path / "tb"))
    assert run.warnings and max(run.series["actor/entropy"]) >= STEPS - 1


def test_a_run_still_writing_is_read_up_to_its_last_line_with_a_warning(tmp_path):
    """A truncated last JSONL line used to reject the whole log."""
    path = write_jsonl(synthetic_run(), tmp_path / "live.jsonl")
    path.write_bytes(path.read_bytes() + b'{"step": 81, "data": {"actor/ent')
    run = only(read_runs(path))
    assert max(run.series["actor/entropy"]) == STEPS
    assert len(run.warnings) == 1 and "live.jsonl:81: the last line is cut off" in run.warnings[0]


def test_old_verl_names_are_found(tmp_path):
    """verl before 0.3: actor/entropy_loss and val/test_score/<source>."""
    from verl_cov.analysis.keys import entropy_key, performance_keys

    records = synthetic_run(perf_key="val/test_score/openai/gsm8k", entropy_key="actor/entropy_loss")
    run = only(read_runs(write_console(records, tmp_path / "old.log")))
    assert entropy_key(run) == "actor/entropy_loss"
    assert performance_keys(run) == ["val/test_score/openai/gsm8k"]


def test_one_score_key_per_validation_source(tmp_path):
    from verl_cov.analysis.keys import performance_keys

    records = synthetic_run()
    for data in records.values():
        if PERF_KEY in data:
            data["val-core/math/acc/mean@1"] = data["val-core/math/reward/mean@1"] = 0.2
            data["val-core/gsm8k/reward/mean@4"] = data["val-core/gsm8k/reward/mean@1"] = 0.3
    run = only(read_runs(write_jsonl(records, tmp_path / "r.jsonl")))
    assert performance_keys(run) == ["val-core/gsm8k/reward/mean@1", "val-core/math/acc/mean@1", PERF_KEY]


BAD_JSONL = {
    "step null": ('{"step": null, "data": {}}\n', 'r.jsonl:1: "step" must be an integer, not None'),
    "step NaN": ('{"step": NaN, "data": {}}\n', '"step" must be an integer, not nan'),
    "step string": ('{"step": "3", "data": {}}\n', "\"step\" must be an integer, not '3'"),
    "data list": ('{"step": 1, "data": [1, 2]}\n', '"data" must be an object of metrics, not list'),
    "huge number": ('{"step": 1, "data": {"x": ' + "9" * 5000 + "}}\n", "r.jsonl:1 is not a verl file-logger line"),
    "deep nesting": ('{"step": 1, "data": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "r.jsonl:1 is not a verl"),
    "not json": ('{"step": 1, "data": {}}\nnot json\n{"step": 2, "data": {}}\n', "r.jsonl:2 is not a verl"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSONL))
def test_malformed_file_logger_lines_are_one_clear_error(case, tmp_path):
    text, message = BAD_JSONL[case]
    (tmp_path / "r.jsonl").write_text(text)
    with pytest.raises(LogError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        read_runs(tmp_path / "r.jsonl")


def test_other_bad_inputs_are_one_clear_error(tmp_path):
    cases = {
        "latin1.jsonl": (b'{"step": 1, "data": {"x": 1}}\n{"step": 2, "data": {"caf\xe9": 1}}\n', "not UTF-8 text"),
        "extra.csv": (b"Step,r - actor/entropy\n1,0.5\n2,0.4,9\n", "extra.csv:3 has 3 cells for 2 columns"),
        "wide.csv": (b"Step,r - actor/entropy\n1," + b"7" * 200_000 + b"\n", "holds no numeric metrics"),
        "notes.txt": (b"just some notes\n", "not a known log format"),
        "nostep.csv": (b"Step,x\n", "holds no numeric metrics"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(LogError, match=message):
            read_runs(tmp_path / name)


def test_an_unknown_large_file_is_refused_after_one_small_read(tmp_path):
    """Its format is sniffed from the first 64 KB: a 1 GB file (sparse here) costs no more than that."""
    import resource

    big = tmp_path / "huge.bin"
    with big.open("wb") as handle:
        handle.truncate(1 << 30)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(LogError, match="not a known log format"):
        read_runs(big)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB
    with pytest.raises(LogError, match="is not a regular file or a folder"):
        read_runs("/dev/zero")


def test_a_tensorboard_scalar_written_as_a_tensor_is_read(tmp_path):
    """TensorBoard 2's writer stores scalars as one-element tensors, not simple_value."""
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    def record(event):
        body = event.SerializeToString()
        header = struct.pack("<Q", len(body))
        return header + struct.pack("<I", masked_crc32c(header)) + body + struct.pack("<I", masked_crc32c(body))

    tensor = tensor_pb2.TensorProto(dtype=1, float_val=[0.75])
    value = summary_pb2.Summary.Value(tag="actor/entropy", tensor=tensor)
    events = [event_pb2.Event(file_version="brain.Event:2")] + [
        event_pb2.Event(step=step, summary=summary_pb2.Summary(value=[value])) for step in (1, 2)
    ]
    (tmp_path / "events.out.tfevents.1").write_bytes(b"".join(record(e) for e in events))
    assert only(read_runs(tmp_path)).series["actor/entropy"] == {1: 0.75, 2: 0.75}


def test_json_lines_values_that_are_not_finite_numbers_are_skipped(tmp_path):
    path = tmp_path / "r.jsonl"
    rows = [{"step": 1, "data": {"a": 1.5, "b": "text", "c": None, "d": [1], "e": True, "f": float("nan")}}]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    assert only(read_runs(path)).series == {"a": {1: 1.5}}


def test_files_are_streamed_not_read_whole(tmp_path):
    """A line over 16 MiB is refused as no log line, without holding the file in memory."""
    path = tmp_path / "one_line.jsonl"
    with path.open("w") as handle:
        handle.write('{"step": 1, "data": {"x": "' + "y" * (17 << 20))
    with pytest.raises(LogError, match="longer than 16 MiB"):
        read_runs(path)
    assert os.path.getsize(path) > 16 << 20
