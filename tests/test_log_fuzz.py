"""The log tool on the files, folders and values users really have (issue 22): each case is generated here,
and each must end in a fit, a note, or one error line with exit code 2, never a traceback, a hang or a
silently wrong answer. Permission denied is simulated (root, which CI runs as, bypasses file modes)."""

import errno
import json
import math
import os
import pathlib
import signal
import struct
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from synthetic_logs import (
    PERF_KEY,
    STEPS,
    synthetic_run,
    write_console,
    write_jsonl,
    write_tensorboard,
    write_wandb_csv,
)

from verl_cov.analysis.discover import discover, read_runs
from verl_cov.analysis.run_log import LogError, UnknownFormat
from verl_cov.cli import main


def run_main(capsys, *argv):
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def error_lines(err):
    return [line for line in err.splitlines() if line.startswith("verl-cov: error:")]


@pytest.fixture
def deny(monkeypatch):
    """``deny(path)``: opening or listing ``path`` raises PermissionError, as for a user without the mode bits."""
    denied = set()
    real_open, real_scandir = pathlib.Path.open, os.scandir

    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    def guarded_open(self, *args, **kwargs):
        if str(self) in denied:
            refuse(self)
        return real_open(self, *args, **kwargs)

    def guarded_scandir(path="."):
        if str(path) in denied:
            refuse(path)
        return real_scandir(path)

    monkeypatch.setattr(pathlib.Path, "open", guarded_open)
    monkeypatch.setattr(os, "scandir", guarded_scandir)
    return lambda path: denied.add(str(path))


# --- OS errors: one line naming the path and the cause, exit 2; with --json an error object too ---


def test_a_file_without_permission_is_one_error_line(tmp_path, deny, capsys):
    log = write_jsonl(synthetic_run(), tmp_path / "run.jsonl")
    deny(log)
    code, out, err = run_main(capsys, "fit", log)
    assert code == 2 and error_lines(err) == [f"verl-cov: error: {log} cannot be read: Permission denied"]
    code, out, err = run_main(capsys, "fit", log, "--json")
    assert code == 2 and json.loads(out) == {"error": f"{log} cannot be read: Permission denied"}
    other = write_jsonl(synthetic_run(seed=1), tmp_path / "other.jsonl")
    code, out, err = run_main(capsys, "compare", other, log)
    assert code == 2 and "Permission denied" in err and str(log) in err


def test_a_folder_without_permission_says_so_not_that_it_is_empty(tmp_path, deny, capsys):
    write_jsonl(synthetic_run(), tmp_path / "runs" / "a.jsonl")
    deny(tmp_path / "runs")
    code, _, err = run_main(capsys, "fit", tmp_path / "runs")
    assert code == 2 and "Permission denied" in err and "holds no run" not in err


def test_a_runs_folder_fits_what_it_can_read_and_names_the_rest(tmp_path, deny, capsys):
    runs = tmp_path / "runs"
    write_jsonl(synthetic_run(seed=1), runs / "good.jsonl")
    write_jsonl(synthetic_run(seed=2), runs / "locked.jsonl")
    write_jsonl(synthetic_run(seed=3), runs / "closed" / "c.jsonl")
    deny(runs / "locked.jsonl")
    deny(runs / "closed")
    code, out, err = run_main(capsys, "fit", runs, "--json")
    payload = json.loads(out)
    assert code == 0 and payload["run"] == "good"  # one run: one object, whatever was skipped
    skipped = {item["path"]: item["reason"] for item in payload["skipped"]}
    assert "Permission denied" in skipped[str(runs / "locked.jsonl")]
    assert "Permission denied" in skipped[str(runs / "closed")]
    assert f"verl-cov: warning: skipped {runs / 'closed'}: cannot read it (Permission denied)" in err


@pytest.mark.parametrize("path", ["", "x" * 5000, "{tmp}/missing.jsonl", "/dev/null"])
def test_paths_that_cannot_be_logs_are_one_error_line(path, tmp_path, capsys):
    code, out, err = run_main(capsys, "fit", path.format(tmp=tmp_path), "--json")
    assert code == 2 and len(error_lines(err)) == 1 and "error" in json.loads(out)
    if path == "":
        assert "the log path is empty" in err
    if path.startswith("x"):
        assert "File name too long" in err


@pytest.mark.parametrize("interval", ["-1", "nan", "0", "inf"])
def test_follow_refuses_an_interval_that_is_no_period(interval, tmp_path, capsys):
    log = write_jsonl(synthetic_run(), tmp_path / "run.jsonl")
    code, _, err = run_main(capsys, "fit", log, "--follow", "--interval", interval)
    assert code == 2 and f"--interval {float(interval)}" in err


# --- folder walking ---


def test_stray_files_in_a_runs_folder_are_skipped_with_a_note(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_jsonl(synthetic_run(seed=1), runs / "a" / "metrics.jsonl")
    write_console(synthetic_run(seed=2), runs / "b" / "stdout.log")
    (runs / "a" / "wandb-metadata.json").write_text(json.dumps({"os": "Linux", "gpu": "H100"}, indent=2))
    (runs / "notes.txt").write_bytes("caf\xe9 au lait, run b is the good one\n".encode("latin-1"))
    (runs / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    (runs / "empty.log").write_text("")
    found = discover(runs)
    assert sorted(run.name for run in found.runs) == ["a/metrics", "b/stdout"]
    assert {pathlib.Path(item.path).name for item in found.skipped} == {
        "wandb-metadata.json",
        "notes.txt",
        "runs",  # plot.png, not opened: one note for the folder
        "empty.log",
    }
    assert any("plot.png" in item.reason for item in found.skipped)
    code, out, err = run_main(capsys, "fit", runs)
    assert code == 0 and err.count("verl-cov: warning: skipped") == 4 and "not UTF-8" in err


def test_symlinked_runs_are_followed_once_and_loops_end(tmp_path):
    elsewhere = write_jsonl(synthetic_run(seed=1), tmp_path / "store" / "exp1" / "run.jsonl").parent
    runs = tmp_path / "runs"
    write_jsonl(synthetic_run(seed=2), runs / "local" / "run.jsonl")
    (runs / "linked").symlink_to(elsewhere, target_is_directory=True)
    (runs / "local" / "loop").symlink_to(runs, target_is_directory=True)
    (runs / "again").symlink_to(elsewhere, target_is_directory=True)
    (runs / "dangling.jsonl").symlink_to(tmp_path / "gone.jsonl")
    found = discover(runs)
    assert sorted(run.name for run in found.runs) == ["again/run", "local/run"]  # "linked" is the same folder
    reasons = " ".join(item.reason for item in found.skipped)
    assert "a broken link" in reasons and "already read through another path" in reasons


def test_a_renamed_event_file_in_a_folder_is_read_by_its_content(tmp_path):
    write_tensorboard(synthetic_run(seed=1), tmp_path / "runs" / "tb")
    (event,) = (tmp_path / "runs" / "tb").iterdir()
    event.rename(event.with_name("backup.bin"))
    (run,) = read_runs(tmp_path / "runs")
    assert run.name == "tb" and max(run.series["actor/entropy"]) == STEPS


# --- content detection ---


@pytest.mark.parametrize("opening", ["{'trainer': {'total_epochs': 1}}", '{"trainer": {"total_epochs": 1}}'])
def test_a_console_log_opening_with_a_printed_config_is_console(opening, tmp_path):
    log = write_console(synthetic_run(), tmp_path / "out.log")
    log.write_text(opening + "\n" + log.read_text())
    (run,) = read_runs(log)
    assert len(run.series["actor/entropy"]) == STEPS


def test_a_console_log_with_backspace_progress_bars_reads(tmp_path):
    log = write_console(synthetic_run(), tmp_path / "out.log")
    bars = "".join(f"{percent:3d}%" + "\b" * 4 for percent in range(0, 100, 3))
    log.write_text("\n".join(bars + line for line in log.read_text().splitlines()) + "\n")
    (run,) = read_runs(log)
    assert len(run.series["actor/entropy"]) == STEPS and len(run.series[PERF_KEY]) == STEPS // 4


def test_unknown_content_is_refused_by_type(tmp_path):
    (tmp_path / "model.bin").write_bytes(bytes(4096))
    with pytest.raises(UnknownFormat):
        read_runs(tmp_path / "model.bin")


# --- W&B CSV: never merged, never rounded ---


def test_two_wandb_runs_with_one_display_name_stay_two_runs(tmp_path):
    first, second = synthetic_run(seed=1, a=0.2), synthetic_run(seed=2, a=0.6)
    a = write_wandb_csv({"grpo": first}, tmp_path / "a.csv").read_text().splitlines()
    b = write_wandb_csv({"grpo": second}, tmp_path / "b.csv").read_text().splitlines()
    (tmp_path / "panel.csv").write_text("\n".join(x + y[y.index(",") :] for x, y in zip(a, b, strict=True)) + "\n")
    runs = {run.name: run for run in read_runs(tmp_path / "panel.csv")}
    assert set(runs) == {"panel/grpo", "panel/grpo #2"}
    assert runs["panel/grpo"].series[PERF_KEY][8] == pytest.approx(first[8][PERF_KEY])
    assert runs["panel/grpo #2"].series[PERF_KEY][8] == pytest.approx(second[8][PERF_KEY])
    assert any("several runs are named 'grpo'" in w for w in runs["panel/grpo #2"].warnings)


def test_fractional_wandb_steps_are_refused_not_rounded(tmp_path):
    (tmp_path / "x.csv").write_text("Step,r - actor/entropy\n1,0.5\n1.5,0.4\n2,0.3\n")
    with pytest.raises(LogError, match=r"x.csv:3: step 1.5 is not a whole number"):
        read_runs(tmp_path / "x.csv")


# --- impossible values: left out with the reason, or the run refused; no numpy warning ---


@pytest.mark.parametrize(
    "key, value, reason",
    [
        ("actor/entropy", -0.3, "the entropy logged at step 13 is -0.3 < 0, impossible for an entropy"),
        ("actor/entropy", 1e308, "the entropy logged at step 13 is 1e+308, beyond any vocabulary's entropy"),
        ("actor/entropy", math.nan, "the entropy logged at step 13 is nan, not a number"),
        (PERF_KEY, 1e308, "the score is 1e+308, beyond any plausible score"),
        (PERF_KEY, -math.inf, "the score is -inf, not a number"),
    ],
)
def test_an_impossible_value_is_left_out_with_its_reason(key, value, reason, tmp_path, capsys):
    records = synthetic_run()
    records[12 if key == PERF_KEY else 13][key] = value
    log = tmp_path / "run.jsonl"
    log.write_text("".join(json.dumps({"step": s, "data": d}) + "\n" for s, d in records.items()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy RuntimeWarning would fail here
        code, out, err = run_main(capsys, "fit", log, "--json")
    fit = json.loads(out)
    assert code == 0 and any(item["step"] == 12 and item["reason"].startswith(reason) for item in fit["left_out"])
    assert fit["n_points"] == STEPS // 4 - 2 and "Warning" not in err


def test_an_entropy_flat_to_float32_resolution_is_refused(tmp_path, capsys):
    records = synthetic_run()
    for step, data in records.items():
        data["actor/entropy"] = 0.7 + 6e-8 * ((step // 4) % 2)  # the paired steps 4k + 1 alternate
    code, _, err = run_main(capsys, "fit", write_jsonl(records, tmp_path / "flat.jsonl"))
    assert code == 2 and "varies by only 6e-08" in err and "resolution" in err


# --- resumed runs: the latest attempt wins from the resume point, for every key ---


def resumed(records, resume_at=21, abandoned_until=40):
    """An attempt logged up to ``abandoned_until`` (with a validation the resumed attempt never repeats),
    then a resume from ``resume_at`` to the end."""
    first = {s: dict(d) for s, d in records.items() if s <= abandoned_until}
    first[30] = {**first[30], "val-core/stale/acc/mean@1": 0.99, PERF_KEY: 0.01}
    second = {s: d for s, d in records.items() if s >= resume_at}
    return [(s, d) for s, d in first.items()] + [(s, d) for s, d in second.items()]


@pytest.mark.parametrize("fmt", ["jsonl", "console", "tensorboard"])
def test_a_resumed_run_keeps_the_latest_attempt_and_says_so(fmt, tmp_path):
    records = synthetic_run()
    rows = resumed(records)
    if fmt == "jsonl":
        path = tmp_path / "r.jsonl"
        path.write_text("".join(json.dumps({"step": s, "data": d}) + "\n" for s, d in rows))
    elif fmt == "console":
        path = write_console(dict(rows[:40]), tmp_path / "r.log")
        path.write_text(path.read_text() + write_console(dict(rows[40:]), tmp_path / "more.log").read_text())
    else:  # a restart opens a second event file in the same folder
        write_tensorboard(dict(rows[:40]), tmp_path / "tb")
        time.sleep(1.1)  # event files are named by the second they were opened
        write_tensorboard(dict(rows[40:]), tmp_path / "tb")
        path = tmp_path / "tb"
    (run,) = read_runs(path)
    assert "val-core/stale/acc/mean@1" not in run.series  # logged only by the abandoned attempt, after step 21
    assert run.series[PERF_KEY][32] == pytest.approx(records[32][PERF_KEY])
    assert sorted(run.series["actor/entropy"]) == list(range(1, STEPS + 1))
    assert sum("the steps go back from 40 to 21 (a resumed run)" in w for w in run.warnings) == 1


# --- TensorBoard: every layout decoded as protobuf does, corruption costs one record ---


def event_record(event) -> bytes:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    body = event.SerializeToString()
    header = struct.pack("<Q", len(body))
    return header + struct.pack("<I", masked_crc32c(header)) + body + struct.pack("<I", masked_crc32c(body))


def varied_events():
    """Events in every layout a writer may produce, and the (tag, step, value) each should give."""
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2

    rng = np.random.default_rng(7)
    events, expected = [event_pb2.Event(file_version="brain.Event:2")], []
    tags = ["actor/entropy", "é/ü", "t" * 130, "", "val-core/x/acc/mean@1"]
    for index in range(300):
        step = int(rng.choice([0, 1, 127, 128, 2**40, index]))
        tag = tags[index % len(tags)]
        value = float(np.float32(rng.normal() * 10.0 ** rng.integers(-3, 4)))
        kind = index % 3
        if kind == 0:
            values = [summary_pb2.Summary.Value(tag=tag, simple_value=value)]
        elif kind == 1:
            tensor = tensor_pb2.TensorProto(dtype=1, float_val=[value])
            values = [summary_pb2.Summary.Value(tag=tag, tensor=tensor)]
        else:  # two scalars in one summary
            values = [summary_pb2.Summary.Value(tag=t, simple_value=value) for t in (tag, tag + "/2")]
        events.append(event_pb2.Event(step=step, wall_time=1e9 + index, summary=summary_pb2.Summary(value=values)))
        expected += [(v.tag, step, value) for v in values]
    return events, expected


def test_every_event_layout_reads_as_protobuf_reads_it(tmp_path):
    events, expected = varied_events()
    (tmp_path / "tb").mkdir()
    (tmp_path / "tb" / "events.out.tfevents.1").write_bytes(b"".join(event_record(e) for e in events))
    (run,) = read_runs(tmp_path / "tb")
    want, highest = {}, {}
    for tag, step, value in expected:  # the same rule by hand: a key's step going back drops every key from it
        if tag in highest and step < highest[tag]:
            want = {k: {s: v for s, v in series.items() if s < step} for k, series in want.items()}
            highest = {k: max(series) for k, series in want.items() if series}
        highest[tag] = max(step, highest.get(tag, step))
        want.setdefault(tag, {})[step] = value
    assert run.series == {k: v for k, v in want.items() if v}


def test_one_flipped_byte_anywhere_loses_at_most_one_record(tmp_path):
    records = {step: {"actor/entropy": 1.0 / step, PERF_KEY: step / 100} for step in range(1, 41)}
    write_tensorboard(records, tmp_path / "tb")
    (path,) = (tmp_path / "tb").iterdir()
    healthy = path.read_bytes()
    for position in np.random.default_rng(0).choice(len(healthy), 25, replace=False).tolist():
        data = bytearray(healthy)
        data[position] ^= 1 << (position % 8)
        path.write_bytes(bytes(data))
        (run,) = read_runs(tmp_path / "tb")
        kept = sum(len(series) for series in run.series.values())
        assert kept >= 80 - 1, position  # the record hit, no more


def test_an_event_file_whose_first_record_is_damaged_is_still_an_event_file(tmp_path):
    """Detection does not hang on ``brain.Event:`` alone: a valid TFRecord header at offset 0 also tells."""
    records = {step: {"actor/entropy": 1.0 / step, PERF_KEY: step / 100} for step in range(1, 41)}
    write_tensorboard(records, tmp_path / "tb")
    (path,) = (tmp_path / "tb").iterdir()
    data = bytearray(path.read_bytes())
    at = data.index(b"brain.Event:")
    data[at] ^= 1  # the file_version record is lost, the header before it still checks out
    renamed = tmp_path / "runs" / "tb" / "events_backup"  # no "tfevents" in the name either
    renamed.parent.mkdir(parents=True)
    renamed.write_bytes(bytes(data))
    (run,) = read_runs(tmp_path / "runs")
    assert sum(len(series) for series in run.series.values()) == 80


def text_event(step: int, wall: float):
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2

    tensor = tensor_pb2.TensorProto(dtype=7, string_val=[b"sample generation"])
    value = summary_pb2.Summary.Value(tag="val/generations/text_summary", tensor=tensor)
    return event_pb2.Event(step=step, wall_time=wall, summary=summary_pb2.Summary(value=[value]))


def scalar_event(tag: str, step: int, value: float, wall: float):
    from tensorboard.compat.proto import event_pb2, summary_pb2

    values = [summary_pb2.Summary.Value(tag=tag, simple_value=value)]
    return event_pb2.Event(step=step, wall_time=wall, summary=summary_pb2.Summary(value=values))


def test_a_second_writer_of_text_in_the_same_folder_is_no_resume(tmp_path):
    """verl's trainer.log_val_generations opens a second SummaryWriter in the run's folder; its file, read
    after the scalars', opens with a text event at the first validation step: no resume, nothing dropped.
    Its own scalars, interleaved with the first file's steps, are no resume either."""
    records = synthetic_run()
    folder = tmp_path / "tb"
    folder.mkdir()
    scalars = [event_record(scalar_event(k, s, v, 1e9 + s)) for s, d in records.items() for k, v in d.items()]
    validations = [s for s, d in records.items() if PERF_KEY in d]
    texts = []
    for step in validations:
        texts.append(event_record(text_event(step, 1e9 + step)))
        texts.append(event_record(scalar_event("val/generations/count", step, 4.0, 1e9 + step)))
    (folder / "events.out.tfevents.1000.host.7.0").write_bytes(b"".join(scalars))
    (folder / "events.out.tfevents.1001.host.7.1").write_bytes(b"".join(texts))
    (run,) = read_runs(folder)
    assert not run.warnings
    assert sorted(run.series[PERF_KEY]) == validations
    assert sorted(run.series["actor/entropy"]) == list(range(1, STEPS + 1))
    assert sorted(run.series["val/generations/count"]) == validations


def test_event_files_are_ordered_by_their_opening_time_as_numbers(tmp_path):
    """``...tfevents.99...`` (the first attempt) before ``...tfevents.100...`` (the resume), not text order."""
    folder = tmp_path / "tb"
    folder.mkdir()
    first = [event_record(scalar_event("actor/entropy", s, 9.0, 1e9 + s)) for s in range(1, 31)]
    second = [event_record(scalar_event("actor/entropy", s, 1.0 / s, 2e9 + s)) for s in range(21, 41)]
    (folder / "events.out.tfevents.99.host.7.0").write_bytes(b"".join(first))
    (folder / "events.out.tfevents.100.host.8.0").write_bytes(b"".join(second))
    (run,) = read_runs(folder)
    assert run.series["actor/entropy"][30] == pytest.approx(1 / 30)  # the resume's value, not the abandoned 9.0
    assert run.series["actor/entropy"][40] == pytest.approx(1 / 40)
    assert sum("go back from 30 to 21" in w for w in run.warnings) == 1


def test_reading_resumes_after_megabytes_of_zeros(tmp_path):
    write_tensorboard({step: {"actor/entropy": 1.0 / step} for step in range(1, 11)}, tmp_path / "a")
    write_tensorboard({step: {"actor/entropy": 1.0 / step} for step in range(11, 21)}, tmp_path / "b")
    (first,), (second,) = (tmp_path / "a").iterdir(), (tmp_path / "b").iterdir()
    (tmp_path / "tb").mkdir()
    joined = first.read_bytes()[:-5] + bytes(3 << 20) + second.read_bytes()
    (tmp_path / "tb" / "events.out.tfevents.1").write_bytes(joined)
    (run,) = read_runs(tmp_path / "tb")
    assert sorted(run.series["actor/entropy"]) == list(range(1, 10)) + list(range(11, 21))
    assert len(run.warnings) == 1 and "skipped corrupt or cut-off data" in run.warnings[0]


# --- --json: JSON on stdout whatever happens ---


def test_list_keys_json(tmp_path, capsys):
    log = write_jsonl(synthetic_run(), tmp_path / "run.jsonl")
    code, out, _ = run_main(capsys, "fit", log, "--list-keys", "--json")
    assert code == 0 and json.loads(out)["keys"]["actor/entropy"] == STEPS


def test_a_run_name_holding_colons_keeps_its_error_apart(tmp_path, capsys):
    lacking = {s: {k: v for k, v in d.items() if k != PERF_KEY} for s, d in synthetic_run().items()}
    export = write_wandb_csv({"exp: 1": synthetic_run(), "exp: 2": lacking}, tmp_path / "panel.csv")
    code, out, _ = run_main(capsys, "fit", export, "--json")
    runs = {run["run"]: run for run in json.loads(out)["runs"]}
    assert code == 0 and runs["panel/exp: 1"]["n_points"] > 0
    assert "has no validation score" in runs["panel/exp: 2"]["error"]


# --- --follow from launch, through a rotation, with --plot and --json, ended by Ctrl-C ---


def wait_for(condition, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_follow_from_launch_through_rotation_to_ctrl_c(tmp_path):
    log, plot = tmp_path / "train.log", tmp_path / "fit.png"
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    command = [sys.executable, "-m", "verl_cov.cli", "fit", str(log), "--follow", "--interval", "0.1"]
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen([*command, "--json", "--plot", str(plot)], stdout=stdout, stderr=stderr)
    try:
        wait_for(lambda: "does not exist" in err.read_text(), "the wait for the log")
        log.write_text("Starting the trainer\n{'trainer': {'total_epochs': 1}}\n")  # launched, no step yet
        wait_for(lambda: "not a known log format" in err.read_text(), "the wait for a step line")
        records = synthetic_run()
        write_console({s: d for s, d in records.items() if s <= 30}, log)
        wait_for(lambda: out.read_text().count("\n") == 1 and plot.exists(), "the first fit and its plot")
        log.rename(tmp_path / "train.log.1")  # rotated: gone for a while, then back with more
        wait_for(lambda: err.read_text().count("does not exist") == 2, "the wait through the rotation")
        write_console(records, log)
        wait_for(lambda: out.read_text().count("\n") == 2, "the refit after the rotation")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    fits = [json.loads(line) for line in out.read_text().splitlines()]
    assert process.returncode == 0 and "Traceback" not in err.read_text()
    assert [fit["n_points"] for fit in fits] == [7, STEPS // 4 - 1]  # validations 4..28 pair with 5..29
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("presses, code", [(1, 0), (2, 130)])
def test_ctrl_c_during_the_plot_lets_it_finish_and_a_second_one_stops_at_once(presses, code, tmp_path, monkeypatch):
    """Ctrl-C lands mid-plot (a KeyboardInterrupt raised inside matplotlib's drawing once ended --follow with
    a traceback): the first one lets the plot be written whole and ends with 0, a second one interrupts."""
    from verl_cov.analysis import fit_report

    plot = tmp_path / "fit.png"

    def plot_while_interrupted(fitted, out):
        for _ in range(presses):
            os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler at once, in this thread
        real_plot(fitted, out)

    real_plot, before = fit_report.plot, signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(fit_report, "plot", plot_while_interrupted)
    log = write_jsonl(synthetic_run(), tmp_path / "run.jsonl")
    assert main(["fit", str(log), "--follow", "--interval", "0.05", "--plot", str(plot)]) == code
    assert plot.exists() is (presses == 1) and list(tmp_path.glob(".fit.png*")) == []
    assert signal.getsignal(signal.SIGINT) is before  # restored for whatever runs next


def test_ctrl_c_is_left_alone_where_python_does_not_own_it():
    """An ignored SIGINT (nohup, a background job) stays ignored; off the main thread nothing is installed."""
    from threading import Thread

    from verl_cov.analysis.fit_report import ctrl_c_between_polls

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with ctrl_c_between_polls() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert not stop.pressed
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    seen = []

    def off_the_main_thread():
        with ctrl_c_between_polls() as stop:
            seen.append((stop.pressed, signal.getsignal(signal.SIGINT)))

    thread = Thread(target=off_the_main_thread)
    thread.start()
    thread.join()
    assert seen == [(False, previous)]


def test_an_interrupted_plot_leaves_the_old_one_whole(tmp_path, monkeypatch):
    """The figure is drawn into a hidden file and renamed over the plot: a failure mid-draw keeps the old one."""
    import matplotlib.figure

    from verl_cov.analysis.plots import pyplot, save

    out = tmp_path / "fit.png"
    out.write_bytes(b"the old plot")

    def interrupted(self, path, **kwargs):
        pathlib.Path(path).write_bytes(b"\x89PNG cut off")
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(pyplot().figure(), out)
    assert out.read_bytes() == b"the old plot" and [p.name for p in tmp_path.iterdir()] == ["fit.png"]


# --- --follow waits only on what growing can cure; everything else ends it with exit 2 ---


class Hung(BaseException):
    """--follow still waiting when the guard went off (BaseException: main does not catch it)."""


@pytest.fixture
def guard():
    """A --follow run in-process that waits instead of failing raises ``Hung`` after 20 s, never hangs."""

    def alarm(*_):
        raise Hung

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def follow_failures(tmp_path):
    records = synthetic_run()
    good = [json.dumps({"step": s, "data": d}) for s, d in records.items()]
    (tmp_path / "mid.jsonl").write_text("\n".join(good[:10] + ["{not json"] + good[10:]) + "\n")
    (tmp_path / "binary.log").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "frac.csv").write_text("Step,actor/entropy\n1.5,0.5\n2.5,0.4\n")
    write_jsonl(records, tmp_path / "ok.jsonl")
    return {
        "malformed line": (["mid.jsonl"], "is not a verl file-logger line"),
        "binary": (["binary.log"], "not a known log format"),
        "fractional steps": (["frac.csv"], "step"),
        "unknown perf key": (["ok.jsonl", "--perf-key", "val-core/nope/acc/mean@1"], "val-core/nope/acc/mean@1"),
    }


@pytest.mark.parametrize("case", ["malformed line", "binary", "fractional steps", "unknown perf key"])
def test_follow_ends_on_an_error_that_waiting_cannot_clear(case, tmp_path, capsys, guard):
    argv, message = follow_failures(tmp_path)[case]
    code, _, err = run_main(capsys, "fit", tmp_path / argv[0], *argv[1:], "--follow", "--interval", "0.05")
    assert code == 2 and message in err and "waiting" not in err


def test_follow_ends_on_permission_denied(tmp_path, deny, capsys, guard):
    log = write_jsonl(synthetic_run(), tmp_path / "run.jsonl")
    deny(log)
    code, _, err = run_main(capsys, "fit", log, "--follow", "--interval", "0.05")
    assert code == 2 and "Permission denied" in err and "waiting" not in err


def test_follow_warns_once_per_warning_not_at_every_refit(tmp_path, capsys):
    from verl_cov.analysis.fit_report import warn_about
    from verl_cov.analysis.run_log import RunLog

    run, shown = RunLog("r", warnings=["a line was cut"]), set()
    warn_about([run], shown=shown)
    run.warnings.append("a new one")
    warn_about([run], shown=shown)
    err = capsys.readouterr().err
    assert err.count("a line was cut") == 1 and err.count("a new one") == 1


def test_json_error_into_a_closed_pipe_is_no_traceback(tmp_path):
    command = f"{sys.executable} -m verl_cov.cli fit {tmp_path / 'missing.jsonl'} --json | true"
    result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr and "does not exist" in result.stderr


# --- values, names and corrupt logs in folders ---


@pytest.mark.parametrize("entropy, kept", [(10.0, True), (50.0, False)])
def test_an_entropy_beyond_30_nats_is_left_out(entropy, kept, tmp_path, capsys):
    records = synthetic_run()
    records[13]["actor/entropy"] = entropy
    log = write_jsonl(records, tmp_path / "r.jsonl")
    code, out, _ = run_main(capsys, "fit", log, "--json")
    reasons = [item["reason"] for item in json.loads(out)["left_out"]]
    left_out = any("beyond any vocabulary's entropy (> 30 nats)" in reason for reason in reasons)
    assert code == 0 and left_out is not kept


def test_two_files_of_one_name_in_a_folder_stay_two_runs_with_a_warning(tmp_path):
    runs = tmp_path / "runs"
    write_jsonl(synthetic_run(seed=1), runs / "a.jsonl")
    write_console(synthetic_run(seed=2), runs / "a.log")
    found = discover(runs)
    assert sorted(run.name for run in found.runs) == ["a.jsonl", "a.log"]
    assert all(any("also run 'a'" in w for w in run.warnings) for run in found.runs)


def test_a_corrupt_log_in_a_runs_folder_is_an_error_naming_it(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_jsonl(synthetic_run(seed=1), runs / "good.jsonl")
    bad = write_jsonl(synthetic_run(seed=2), runs / "bad.jsonl")
    lines = bad.read_text().splitlines()
    bad.write_text("\n".join(lines[:5] + ['{"step": 6, "data": {"actor/ent'] + lines[5:]) + "\n")
    code, _, err = run_main(capsys, "fit", runs)
    assert code == 2 and f"{bad}:6 is not a verl file-logger line" in err


def test_checkpoints_in_a_runs_folder_are_not_sniffed_and_get_one_note(tmp_path):
    runs = tmp_path / "runs"
    write_jsonl(synthetic_run(), runs / "run.jsonl")
    for name in ("model.safetensors", "optim.pt", "data.parquet", "rollout.npy"):
        (runs / "ckpt" / name).parent.mkdir(parents=True, exist_ok=True)
        (runs / "ckpt" / name).write_bytes(b"\x00" * 64)
    found = discover(runs)
    assert [run.name for run in found.runs] == ["run"]
    (note,) = found.skipped
    assert note.path == str(runs / "ckpt") and "4 checkpoint/data/image files" in note.reason


def test_a_large_text_file_in_a_runs_folder_is_not_read_to_its_end(tmp_path, monkeypatch):
    import verl_cov.analysis.discover as discover_module

    monkeypatch.setattr(discover_module, "FOLDER_SCAN_CHARS", 10_000)
    runs = tmp_path / "runs"
    write_jsonl(synthetic_run(), runs / "run.jsonl")
    (runs / "dump.txt").write_text("a line of some other tool's output\n" * 2000 + "step:1 - actor/entropy:0.5\n")
    found = discover(runs)
    assert [run.name for run in found.runs] == ["run"]
    (note,) = found.skipped
    assert "in its first 10000 characters" in note.reason
