"""Write the recipes' training and evaluation data in verl's parquet format.

    python scripts/prepare_data.py --out ~/data/verl-cov                       # from the Hub
    python scripts/prepare_data.py --out DIR --local aime24=aime24.jsonl ...   # offline, from local files

Sources: dapo_math_17k (training), aime24, aime25, amc23, math500, olympiadbench, minerva, omni_math.
"""

from __future__ import annotations

import argparse
import sys

from verl_cov.dapo_math.math_data import SOURCES, DataError, prepare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder for <source>.parquet")
    parser.add_argument("--sources", default=",".join(SOURCES), help="comma-separated subset of the sources")
    parser.add_argument("--local", action="append", default=[], metavar="NAME=PATH", help="read NAME from a file")
    args = parser.parse_args(argv)
    try:
        malformed = [item for item in args.local if "=" not in item or not item.split("=", 1)[1]]
        if malformed:
            raise DataError(f"--local {malformed[0]!r}: expected NAME=PATH, e.g. --local aime24=aime_2024.jsonl")
        local = dict(item.split("=", 1) for item in args.local)
        names = args.sources.split(",")
        unknown = [n for n in [*names, *local] if n not in SOURCES]
        if unknown:
            raise DataError(f"unknown sources {', '.join(unknown)}; choose from {', '.join(SOURCES)}")
        for name in names:
            print(f"{name}: {prepare(name, args.out, local.get(name))}")
    except (DataError, ValueError) as error:
        print(f"prepare_data: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
