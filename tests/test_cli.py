"""The verl-cov command line: fit, compare, plots, JSON, and errors without tracebacks."""

import json
import subprocess
import sys

import pytest
from synthetic_logs import A, B, synthetic_run, write_jsonl, write_wandb_csv

from verl_cov.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000


def test_fit_json_and_plot(tmp_path, capsys):
    log = write_jsonl(synthetic_run(seed=3), tmp_path / "run.jsonl")
    out = tmp_path / "fit.png"
    assert main(["fit", str(log), "--json", "--fit-until", "40", "--plot", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"a", "b", "r2", "ceiling", "n_points", "heldout_rmse"} <= set(result)
    assert result["a"] == pytest.approx(A, rel=0.1) and result["ceiling"] == pytest.approx(B - A, abs=0.03)
    assert_png(out)


def test_fit_text_and_list_keys(tmp_path, capsys):
    log = write_wandb_csv(synthetic_run(), tmp_path / "export.csv")
    assert main(["fit", str(log)]) == 0
    assert "ceiling" in capsys.readouterr().out
    assert main(["fit", str(log), "--list-keys"]) == 0
    assert "actor/entropy\t80 points" in capsys.readouterr().out


def test_compare_table_and_figure(tmp_path, capsys):
    logs = [write_jsonl(synthetic_run(seed=s, a=A * (1 + s), b=B), tmp_path / f"run{s}.jsonl") for s in range(3)]
    out = tmp_path / "compare.png"
    assert main(["compare", *map(str, logs), "--plot", str(out)]) == 0
    table = capsys.readouterr().out
    assert all(f"run{s}" in table for s in range(3)) and "ceiling" in table
    assert_png(out)
    assert main(["compare", *map(str, logs), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [round(r["a"], 1) for r in rows] == [round(A * (1 + s), 1) for s in range(3)]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "{log}", "--entropy-key", "actor/entropi"], "Close keys: actor/entropy"),
        (["fit", "{log}", "--fit-until", "5"], "only 1 (entropy, performance) points"),
        (["fit", "{tmp}/missing.jsonl"], "does not exist"),
        (["fit", "{tmp}/notes.txt"], "not a known log format"),
    ],
)
def test_bad_input_is_an_error_message_not_a_traceback(argv, message, tmp_path):
    log = write_jsonl(synthetic_run(), tmp_path / "run.jsonl")
    (tmp_path / "notes.txt").write_text("plain text\n")
    argv = [a.format(log=log, tmp=tmp_path) for a in argv]
    result = subprocess.run([sys.executable, "-m", "verl_cov.cli", *argv], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
