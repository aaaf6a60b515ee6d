"""Which logged keys hold the entropy and the validation score, across verl versions.

Entropy: ``actor/entropy``; verl before 0.3 logged it as ``actor/entropy_loss``; verl-cov's modes log
``actor/cov/entropy_estimate`` even when verl computes no entropy. Score: one key per validation data
source, ``val-core/<source>/<metric>/mean@<n>`` (verl 0.3 on; ``acc`` preferred over other metrics,
the smallest n), or ``val/test_score/<source>`` (older verl).
"""

from __future__ import annotations

import re

from verl_cov.analysis.run_log import LogError, RunLog, TooFewPoints

ENTROPY_KEYS = ("actor/entropy", "actor/entropy_loss", "actor/cov/entropy_estimate")
CORE = re.compile(r"^val-core/(?P<source>.+)/(?P<metric>[^/]+)/mean@(?P<n>\d+)$")
OLD_SCORE = re.compile(r"^val/test_score/(?P<source>.+)$")


def entropy_key(run: RunLog) -> str:
    for key in ENTROPY_KEYS:
        if key in run.series:
            return key
    raise LogError(f"{run.name} has none of {', '.join(ENTROPY_KEYS)}; pass --entropy-key")


def performance_keys(run: RunLog) -> list[str]:
    """One score key per validation data source, in the order the sources sort."""
    chosen: dict[str, tuple[tuple, str]] = {}
    for key in run.series:
        match = CORE.match(key)
        if match:
            rank = (match["metric"] != "acc", int(match["n"]), match["metric"])
            source = match["source"]
        elif OLD_SCORE.match(key):
            rank, source = (True, 1, ""), OLD_SCORE.match(key)["source"]
        else:
            continue
        if source not in chosen or rank < chosen[source][0]:
            chosen[source] = (rank, key)
    if not chosen:  # none yet, for --follow: a live run validates only every test_freq steps
        raise TooFewPoints(
            f"{run.name} has no validation score (val-core/<source>/<metric>/mean@N or val/test_score/<source>); "
            "pass --perf-key"
        )
    return [key for _, (_, key) in sorted(chosen.items())]
