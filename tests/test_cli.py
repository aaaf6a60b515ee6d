"""The verl-cov command line: fit and compare on every shape of input, the JSON contract, plots, --follow,
and one error line with exit code 2 (never a traceback) for bad input."""

import json
import subprocess
import sys
import time

import pytest
from synthetic_logs import (
    FIT_FIELDS,
    PERF_KEY,
    A,
    B,
    synthetic_run,
    write_console,
    write_jsonl,
    write_tensorboard,
    write_wandb_csv,
)

from verl_cov.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cli(*argv, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "verl_cov.cli", *map(str, argv)], capture_output=True, text=True, timeout=timeout
    )


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000


def test_fit_json_contract_and_plot(tmp_path, capsys):
    log = write_jsonl(synthetic_run(seed=3), tmp_path / "run.jsonl")
    out = tmp_path / "fit.png"
    assert main(["fit", str(log), "--json", "--fit-until", "40", "--plot", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert FIT_FIELDS | {"heldout_rmse", "n_heldout", "predicted", "fit_until"} <= set(result)
    assert result["a"] == pytest.approx(A, rel=0.1) and result["ceiling"] == pytest.approx(B - A, abs=0.03)
    assert_png(out)


def test_fit_text_names_keys_and_points_left_out(tmp_path, capsys):
    log = write_console(synthetic_run(), tmp_path / "stdout.log", width=150)
    assert main(["fit", str(log)]) == 0
    text = capsys.readouterr().out
    assert f"score {PERF_KEY}" in text and "entropy actor/entropy" in text
    assert "left out:    step 80: no entropy logged after it" in text and "ceiling:" in text
    assert main(["fit", str(log), "--list-keys"]) == 0
    assert "actor/entropy\t80 points" in capsys.readouterr().out


def test_several_sources_give_one_fit_each(tmp_path, capsys):
    """A run validated on two data sources used to be fitted on the first one only, silently."""
    records = synthetic_run()
    for data in records.values():
        if PERF_KEY in data:
            data["val-core/math/acc/mean@1"] = data[PERF_KEY] / 2
    log = write_jsonl(records, tmp_path / "r.jsonl")
    assert main(["fit", str(log), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [run["perf_key"] for run in runs] == ["val-core/math/acc/mean@1", PERF_KEY]
    assert runs[0]["a"] == pytest.approx(runs[1]["a"] / 2, rel=1e-6)


def test_a_folder_and_a_multi_run_export_give_one_fit_per_run(tmp_path, capsys):
    write_tensorboard(synthetic_run(seed=1, a=0.2), tmp_path / "tb" / "proj" / "grpo")
    write_tensorboard(synthetic_run(seed=2, a=0.6), tmp_path / "tb" / "proj" / "klcov")
    assert main(["fit", str(tmp_path / "tb"), "--json"]) == 0
    runs = {run["run"]: run for run in json.loads(capsys.readouterr().out)["runs"]}
    assert set(runs) == {"proj/grpo", "proj/klcov"}
    assert runs["proj/grpo"]["a"] == pytest.approx(0.2, rel=0.1) and runs["proj/klcov"]["a"] == pytest.approx(
        0.6, rel=0.1
    )
    export = write_wandb_csv({"grpo": synthetic_run(a=0.2), "klcov": synthetic_run(a=0.6)}, tmp_path / "panel.csv")
    assert main(["fit", str(export)]) == 0
    text = capsys.readouterr().out
    assert "run:         panel/grpo" in text and "run:         panel/klcov" in text and "ceiling" in text


def test_compare_uses_one_score_key_whatever_order_runs_logged_keys_in(tmp_path, capsys):
    """compare used to fit each run on whichever validation key came first (ceilings 0.21 vs 0.61)."""
    other = "val-core/aux/acc/mean@1"
    first, second = synthetic_run(seed=5), synthetic_run(seed=5)
    for data in first.values():
        if PERF_KEY in data:
            data[other] = 0.1
    for step, data in second.items():
        if PERF_KEY in data:
            second[step] = {other: 0.1, **data}  # the same values, logged in the other order
    logs = [write_jsonl(first, tmp_path / "a.jsonl"), write_jsonl(second, tmp_path / "b.jsonl")]
    refused = cli("compare", *logs)
    assert refused.returncode == 2 and "share several validation scores" in refused.stderr
    assert main(["compare", *map(str, logs), "--perf-key", PERF_KEY, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["perf_key"] == PERF_KEY
    assert result["runs"][0]["ceiling"] == pytest.approx(result["runs"][1]["ceiling"], rel=1e-9)


def test_compare_refuses_a_run_without_the_score_and_tells_same_names_apart(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    logs = [write_jsonl(synthetic_run(seed=s), tmp_path / d / "run.jsonl") for s, d in ((1, "x"), (2, "y"))]
    assert main(["compare", *map(str, logs)]) == 0
    table = capsys.readouterr().out
    assert f"score key: {PERF_KEY}" in table
    assert f"run ({logs[0]})" in table and f"run ({logs[1]})" in table
    records = synthetic_run()
    for data in records.values():
        data.pop(PERF_KEY, None)
        data["val-core/other/acc/mean@1"] = 0.5
    lacking = write_jsonl(records, tmp_path / "lacking.jsonl")
    result = cli("compare", logs[0], lacking)
    assert result.returncode == 2 and "share no validation score key" in result.stderr and "lacking" in result.stderr


def test_compare_table_and_figure(tmp_path, capsys):
    logs = [write_jsonl(synthetic_run(seed=s, a=A * (1 + s), b=B), tmp_path / f"run{s}.jsonl") for s in range(3)]
    out = tmp_path / "compare.png"
    assert main(["compare", *map(str, logs), "--plot", str(out)]) == 0
    table = capsys.readouterr().out
    assert all(f"run{s}" in table for s in range(3)) and "ceiling" in table
    assert_png(out)


def test_the_fit_is_printed_before_a_plot_that_cannot_be_written(tmp_path):
    log = write_jsonl(synthetic_run(), tmp_path / "run.jsonl")
    (tmp_path / "not_a_folder").write_text("")
    result = cli("fit", log, "--plot", tmp_path / "not_a_folder" / "fit.png")  # writing fails with an OSError
    assert result.returncode == 2 and "ceiling:" in result.stdout and "cannot write it" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "plot, message",
    [("fit.xyz", "unknown format 'xyz'"), ("missing/fit.png", "does not exist"), (".", "is a folder")],
)
def test_a_bad_plot_path_is_refused_before_fitting(plot, message, tmp_path):
    log = write_jsonl(synthetic_run(), tmp_path / "run.jsonl")
    result = cli("fit", log, "--plot", tmp_path / plot)
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""
    assert "Traceback" not in result.stderr


def test_warnings_reach_stderr_and_json(tmp_path):
    records = synthetic_run()
    for step, data in records.items():
        if PERF_KEY in data:
            data[PERF_KEY] = 0.5 + 0.001 * (step % 3)  # a score that does not follow the entropy
    log = write_jsonl(records, tmp_path / "r.jsonl")
    result = cli("fit", log, "--json")
    assert result.returncode == 0
    assert "verl-cov: warning: r: R² =" in result.stderr
    assert any("R² =" in w for w in json.loads(result.stdout)["warnings"])


def test_follow_prints_a_new_forecast_after_each_new_validation(tmp_path):
    records = synthetic_run()
    path = tmp_path / "live.jsonl"
    write_jsonl({s: d for s, d in records.items() if s <= 20}, path)
    process = subprocess.Popen(
        [sys.executable, "-m", "verl_cov.cli", "fit", str(path), "--follow", "--interval", "0.2", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(3)
        with path.open("a") as handle:  # the run goes on; the last line arrives in two writes
            for step in range(21, 41):
                handle.write(json.dumps({"step": step, "data": records[step]}) + "\n")
            handle.write('{"step": 41, "data": {"actor/')
            handle.flush()
            time.sleep(2)
            handle.write('entropy": 0.2}}\n')
        time.sleep(3)
    finally:
        process.terminate()
        out, err = process.communicate(timeout=30)
    fits = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [fit["n_points"] for fit in fits] == [4, 9, 10], (out, err)
    assert "Traceback" not in err


BAD_INPUTS = {
    "missing file": (["fit", "{tmp}/missing.jsonl"], "does not exist"),
    "unknown key": (["fit", "{log}", "--entropy-key", "actor/entropi"], "Close keys: actor/entropy"),
    "too few points": (["fit", "{log}", "--fit-until", "5"], "only 1 (entropy, score) points"),
    "unknown format": (["fit", "{tmp}/notes.txt"], "not a known log format"),
    "non-UTF-8": (["fit", "{tmp}/latin1.jsonl"], "not UTF-8 text"),
    "step null": (["fit", "{tmp}/null.jsonl"], '"step" must be an integer'),
    "data list": (["fit", "{tmp}/list.jsonl"], '"data" must be an object'),
    "csv extra cell": (["fit", "{tmp}/extra.csv"], "has 3 cells for 2 columns"),
    "degenerate key": (["fit", "{log}", "--entropy-key", "val-aux/synthetic/reward/mean@1"], "does not vary"),
    "predict without fit": (["fit", "{log}", "--predict-until", "40"], "--predict-until needs --fit-until"),
    "demo out is a file": (["demo", "--out", "{tmp}/notes.txt"], "is a file"),
    "demo negative seed": (["demo", "--seed", "-1"], "--seed=-1 is out of range"),
    "demo empty modes": (["demo", "--modes", ""], "--modes is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_error_line_and_exit_2(case, tmp_path):
    log = write_jsonl(synthetic_run(), tmp_path / "run.jsonl")
    (tmp_path / "notes.txt").write_text("plain text\n")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"step": 1, "data": {"caf\xe9": 1}}\n')
    (tmp_path / "null.jsonl").write_text('{"step": null, "data": {}}\n')
    (tmp_path / "list.jsonl").write_text('{"step": 1, "data": []}\n')
    (tmp_path / "extra.csv").write_text("Step,r - actor/entropy\n1,0.5,7\n")
    argv, message = BAD_INPUTS[case]
    result = cli(*[a.format(log=log, tmp=tmp_path) for a in argv])
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("verl-cov: error:")]) == 1


def test_a_key_of_large_values_as_entropy_fits_or_refuses_without_a_traceback(tmp_path):
    """--entropy-key response_length/mean (hundreds of tokens) used to end in a LinAlgError traceback."""
    records = synthetic_run()
    for step, data in records.items():
        data["response_length/mean"] = 300.0 + 2 * step
    log = write_jsonl(records, tmp_path / "r.jsonl")
    result = cli("fit", log, "--entropy-key", "response_length/mean", "--json")
    assert result.returncode in (0, 2) and "Traceback" not in result.stderr
    if result.returncode == 0:
        json.loads(result.stdout)
