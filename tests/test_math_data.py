"""scripts/prepare_data.py on small local files in each source's format (no Hub access)."""

import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from verl_cov.dapo_math.math_data import INSTRUCTION, SOURCES, DataError, prepare

REPO = Path(__file__).resolve().parents[1]

DAPO_ROW = {
    "data_source": "math_dapo",
    "prompt": [{"role": "user", "content": "Solve ... What is 1+1?\n\nRemember to put your answer after Answer:"}],
    "ability": "MATH",
    "reward_model": {"ground_truth": "2", "style": "rule-lighteval/MATH_v2"},
    "extra_info": {"index": "a1"},
}
FIXTURES = {  # name: (file suffix, rows as the public source has them, expected ground truths)
    "aime24": (".jsonl", [{"id": 60, "problem": "Find $x$.", "answer": "204", "solution": "..."}], ["204"]),
    "aime25": (".jsonl", [{"problem": "Compute $y$.", "answer": "70"}], ["70"]),
    "amc23": (".jsonl", [{"id": 0, "question": "How many?", "answer": 27.0}], ["27.0"]),
    "math500": (".jsonl", [{"problem": "Simplify.", "answer": "\\frac{1}{2}", "level": 3}], ["\\frac{1}{2}"]),
    "olympiadbench": (".json", [{"question": "Let $n$...", "final_answer": ["$\\frac{3}{4}$"]}], ["\\frac{3}{4}"]),
    "minerva": (".csv", [{"question": "A star...", "answer": "0.5"}], ["0.5"]),
    "omni_math": (".parquet", [{"problem": "Prove...", "answer": "(1,2]", "domain": ["Algebra"]}], ["(1,2]"]),
}


def write(rows, path: Path) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        dataset = datasets.Dataset.from_list(rows)
        dataset.to_csv(str(path), index=False) if path.suffix == ".csv" else dataset.to_parquet(str(path))
    return path


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_each_eval_source_converts_to_verl_format(name, tmp_path):
    suffix, rows, truths = FIXTURES[name]
    out = prepare(name, tmp_path / "out", write(rows, tmp_path / f"{name}{suffix}"))
    table = datasets.load_dataset("parquet", data_files=str(out), split="train")
    assert set(table.column_names) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
    assert [r["reward_model"]["ground_truth"] for r in table] == truths
    row = table[0]
    assert row["data_source"] == SOURCES[name].data_source
    assert row["prompt"][0]["role"] == "user"
    question = rows[0].get("problem", rows[0].get("question"))
    assert row["prompt"][0]["content"] == INSTRUCTION.format(problem=question)


def test_dapo_rows_keep_their_prompt(tmp_path):
    folder = tmp_path / "dapo"
    folder.mkdir()
    write([DAPO_ROW, {**DAPO_ROW, "reward_model": {"ground_truth": "3", "style": "rule"}}], folder / "part-0.parquet")
    table = datasets.load_dataset("parquet", data_files=str(prepare("dapo_math_17k", tmp_path, folder)), split="train")
    assert table[0]["prompt"] == DAPO_ROW["prompt"]
    assert [r["reward_model"]["ground_truth"] for r in table] == ["2", "3"]


def test_errors_name_the_source_and_field(tmp_path):
    with pytest.raises(DataError, match="aime24: a row has no answer field"):
        prepare("aime24", tmp_path, write([{"problem": "x"}], tmp_path / "bad.jsonl"))
    with pytest.raises(DataError, match="does not exist"):
        prepare("aime24", tmp_path, tmp_path / "missing.jsonl")


def test_command_line(tmp_path):
    local = write(FIXTURES["aime24"][1], tmp_path / "aime.jsonl")
    command = [sys.executable, str(REPO / "scripts" / "prepare_data.py"), "--out", str(tmp_path / "o")]
    ok = subprocess.run([*command, "--sources", "aime24", "--local", f"aime24={local}"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "o" / "aime24.parquet").exists()
    bad = subprocess.run([*command, "--sources", "aime2024"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown sources aime2024" in bad.stderr


def prepare_data(*argv, env=None):
    import os

    command = [sys.executable, str(REPO / "scripts" / "prepare_data.py"), *map(str, argv)]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_bad_inputs_are_one_error_line_and_exit_2(tmp_path):
    (tmp_path / "broken.jsonl").write_text('{"problem": "x", "answer": "1"}\n{"problem": \n')
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.jsonl").write_text(json.dumps({"problem": "x", "answer": []}) + "\n")
    good = write(FIXTURES["aime24"][1], tmp_path / "aime.jsonl")
    (tmp_path / "a_file").write_text("")
    cases = [
        (
            ["--out", tmp_path / "o", "--sources", "aime24", "--local", f"aime24={tmp_path / 'broken.jsonl'}"],
            "cannot read",
        ),
        (["--out", tmp_path / "o", "--sources", "aime24", "--local", f"aime24={tmp_path / 'empty.jsonl'}"], "is empty"),
        (
            ["--out", tmp_path / "o", "--sources", "aime24", "--local", f"aime24={tmp_path / 'blank.jsonl'}"],
            "row 0 has an empty answer",
        ),
        (["--out", tmp_path / "o", "--sources", "aime24", "--local", str(good)], "expected NAME=PATH"),
        (["--out", tmp_path / "a_file" / "o", "--sources", "aime24", "--local", f"aime24={good}"], "cannot write"),
    ]
    for argv, message in cases:
        result = prepare_data(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (message, result.stderr)
    offline = prepare_data(
        "--out", tmp_path / "o", "--sources", "aime24", env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    )
    assert offline.returncode == 2 and "--local aime24=PATH" in offline.stderr and "Traceback" not in offline.stderr
