"""Math data for the paper-reproduction recipes, written in verl's RL parquet format.

Each row: ``data_source``, ``prompt`` (chat messages), ``ability``, ``reward_model`` (``style``,
``ground_truth``) and ``extra_info`` — what verl's ``RLHFDataset`` and reward loop read. Sources are read
with ``datasets``: from the Hub by default, or from a local file (parquet, JSON lines, JSON, CSV) or
folder when offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets

INSTRUCTION = (
    "Solve the following math problem step by step. The last line of your response should be of the "
    'form "Answer: <answer>", where <answer> is the final answer.\n\n{problem}'
)
QUESTION_FIELDS = ("problem", "question", "Problem", "Question")
ANSWER_FIELDS = ("answer", "final_answer", "Answer", "expected_answer")


@dataclass(frozen=True)
class Source:
    hub_id: str
    split: str
    data_source: str


# Training on DAPO-Math-17k, evaluating on the paper's seven benchmarks. Hub ids are defaults; any
# of them can be replaced by a local file or folder (``--local NAME=PATH``).
SOURCES = {
    "dapo_math_17k": Source("BytedTsinghua-SIA/DAPO-Math-17k", "train", "math_dapo"),
    "aime24": Source("HuggingFaceH4/aime_2024", "train", "aime24"),
    "aime25": Source("yentinglin/aime_2025", "train", "aime25"),
    "amc23": Source("math-ai/amc23", "test", "amc23"),
    "math500": Source("HuggingFaceH4/MATH-500", "test", "math500"),
    "olympiadbench": Source("math-ai/olympiadbench", "test", "olympiadbench"),
    "minerva": Source("math-ai/minervamath", "test", "minerva"),
    "omni_math": Source("KbsdJames/Omni-MATH", "test", "omni_math"),
}
EVAL_SOURCES = [name for name in SOURCES if name != "dapo_math_17k"]


class DataError(ValueError):
    """A source that cannot be read or converted; the message names the source and the problem."""


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def load_source(name: str, local: str | Path | None = None) -> datasets.Dataset:
    """One source as a ``datasets.Dataset``: from ``local`` (file or folder) when given, else the Hub."""
    source = SOURCES[name]
    if local is None:
        try:
            return datasets.load_dataset(source.hub_id, split=source.split)
        except Exception as error:  # offline, a moved dataset, a gated one: all end here
            raise DataError(
                f"{name}: cannot load {source.hub_id} from the Hub ({_first_line(error)}); "
                f"offline, pass --local {name}=PATH to a parquet, JSON lines, JSON or CSV copy"
            ) from None
    path = Path(local)
    if not path.exists():
        raise DataError(f"{name}: local path {path} does not exist")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    suffixes = {p.suffix for p in files} & {".parquet", ".jsonl", ".json", ".csv"}
    if len(suffixes) != 1:
        raise DataError(f"{name}: expected parquet, JSON lines, JSON or CSV files at {path}, found {sorted(suffixes)}")
    suffix = suffixes.pop()
    builder = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}[suffix]
    data_files = [str(p) for p in files if p.suffix == suffix]
    if all(Path(f).stat().st_size == 0 for f in data_files):
        raise DataError(f"{name}: {path} is empty")
    try:
        return datasets.load_dataset(builder, data_files=data_files, split="train")
    except Exception as error:  # malformed JSON / CSV / parquet, whatever the reader reports
        raise DataError(f"{name}: cannot read {path} as {builder} ({_first_line(error)})") from None


def _first(row: dict, fields: tuple[str, ...], name: str, what: str):
    for field in fields:
        if row.get(field) not in (None, ""):
            return row[field]
    raise DataError(f"{name}: a row has no {what} field (looked for {', '.join(fields)}; it has {', '.join(row)})")


def _answer_text(answer, name: str, index: int) -> str:
    if isinstance(answer, list):  # OlympiadBench lists final answers
        answer = answer[0] if answer else ""
    text = str(answer).strip().strip("$").strip()
    if not text:
        raise DataError(f"{name}: row {index} has an empty answer ({answer!r}); it could never be scored")
    return text


def to_verl_row(name: str, row: dict, index: int) -> dict:
    """Convert one source row to verl's RL format. Rows already in verl's format are kept as they are."""
    source = SOURCES[name]
    if isinstance(row.get("prompt"), list) and isinstance(row.get("reward_model"), dict):
        prompt, truth = row["prompt"], row["reward_model"]["ground_truth"]
    else:
        problem = _first(row, QUESTION_FIELDS, name, "question")
        truth = _answer_text(_first(row, ANSWER_FIELDS, name, "answer"), name, index)
        prompt = [{"role": "user", "content": INSTRUCTION.format(problem=problem)}]
    return {
        "data_source": source.data_source,
        "prompt": prompt,
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": str(truth)},
        "extra_info": {"index": index, "source": name},
    }


def prepare(name: str, out_dir: str | Path, local: str | Path | None = None) -> Path:
    """Write ``<out_dir>/<name>.parquet`` in verl's format and return its path."""
    rows = [to_verl_row(name, row, i) for i, row in enumerate(load_source(name, local))]
    if not rows:
        raise DataError(f"{name}: no rows")
    out = Path(out_dir) / f"{name}.parquet"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_list(rows).to_parquet(str(out))
    except OSError as error:
        raise DataError(f"{name}: cannot write {out} ({error.strerror or error})") from None
    return out
