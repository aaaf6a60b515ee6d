"""The entropy–performance law R = −a·exp(H) + b (Cui et al. 2025, Sec. 2), fitted by least squares.

R(H = 0) = b − a is the ceiling a run reaches once its entropy is spent. Fitting the early steps only
and scoring the prediction of the rest checks the paper's claim that the ceiling is predictable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from verl_cov.analysis.logs import LogError, RunLog

MIN_POINTS = 3


def law(H: np.ndarray, a: float, b: float) -> np.ndarray:
    """R = −a·exp(H) + b."""
    return -a * np.exp(H) + b


@dataclass
class LawFit:
    a: float
    b: float
    r2: float
    rmse: float
    n_points: int
    ceiling: float
    entropy_key: str
    perf_key: str
    fit_until: int | None = None
    heldout_rmse: float | None = None
    heldout_n: int | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def fit_law(H: np.ndarray, R: np.ndarray) -> tuple[float, float]:
    """Least-squares a, b of R = −a·exp(H) + b; ``LogError`` if there are too few points or H is constant."""
    if len(H) < MIN_POINTS:
        raise LogError(f"only {len(H)} (entropy, performance) points to fit; need at least {MIN_POINTS}")
    if np.ptp(H) <= 1e-12 * max(1.0, float(np.abs(H).max())):
        raise LogError(f"entropy does not vary (H = {H[0]:.6g} at every point); the law cannot be fitted")
    # The model is linear in (a, b): ordinary least squares on the design [−exp(H), 1].
    design = np.stack([-np.exp(H), np.ones_like(H)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, R, rcond=None)
    return float(a), float(b)


def paired(run: RunLog, entropy_key: str, perf_key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, H, R) at the steps where both the entropy and the performance metric were logged."""
    entropy_steps, entropy = run.get(entropy_key)
    perf_steps, perf = run.get(perf_key)
    entropy_at = dict(zip(entropy_steps.tolist(), entropy, strict=True))
    keep = [i for i, step in enumerate(perf_steps.tolist()) if step in entropy_at]
    steps = perf_steps[keep]
    return steps, np.array([entropy_at[s] for s in steps.tolist()]), perf[keep]


def fit_run(
    run: RunLog, entropy_key: str | None = None, perf_key: str | None = None, fit_until: int | None = None
) -> LawFit:
    """Fit the law on a run's (H, R) pairs, on the steps up to ``fit_until`` if given, and score the rest."""
    entropy_key = entropy_key or run.default_entropy_key()
    perf_key = perf_key or run.default_perf_key()
    steps, H, R = paired(run, entropy_key, perf_key)
    train = steps <= fit_until if fit_until is not None else np.ones(len(steps), dtype=bool)
    a, b = fit_law(H[train], R[train])
    residual = R[train] - law(H[train], a, b)
    total = float(((R[train] - R[train].mean()) ** 2).sum())
    fit = LawFit(
        a=a,
        b=b,
        r2=1.0 - float((residual**2).sum()) / total if total > 0 else 1.0,
        rmse=float(np.sqrt((residual**2).mean())),
        n_points=int(train.sum()),
        ceiling=b - a,
        entropy_key=entropy_key,
        perf_key=perf_key,
    )
    if fit_until is not None:
        if train.all():
            raise LogError(f"no (entropy, performance) points after --fit-until {fit_until} to score the prediction")
        heldout = R[~train] - law(H[~train], a, b)
        fit.fit_until = fit_until
        fit.heldout_rmse = float(np.sqrt((heldout**2).mean()))
        fit.heldout_n = int((~train).sum())
    return fit
