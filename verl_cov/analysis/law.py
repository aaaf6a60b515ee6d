"""The entropy–performance law R = −a·exp(H) + b (Cui et al. 2025, Sec. 2), fitted by least squares.

R(H = 0) = b − a is the ceiling a run reaches once its entropy is spent. The law is linear in (a, b)
given x = exp(H), so the fit is ordinary least squares; it is solved on x rescaled to exp(H − max H)
and centred, which keeps it exact for any entropy range, and reported as statsmodels reports an OLS
fit: parameters with their standard errors, R², the points used and those left out. Fitting the
validations up to ``fit_until`` and scoring those up to ``predict_until`` checks the paper's claim
(fit 36 steps, predict the next 200) on a run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from verl_cov.analysis.keys import entropy_key
from verl_cov.analysis.pairing import LeftOut, Point, pair
from verl_cov.analysis.run_log import LogError, RunLog, TooFewPoints

MIN_POINTS = 3  # two parameters and one degree of freedom for their errors
FEW_POINTS = 5
LOW_R2 = 0.5  # below it the entropy explains less than half of the score's variance
HELDOUT_FACTOR = 3.0
# float32 (TensorBoard's and most loggers' precision) tells values apart to ~1.2e-7 relative; an entropy
# spread of a few such steps is rounding, and fitting it gave ceilings like -2.7e6
RESOLUTION = 4 * float(np.finfo(np.float32).eps)


def law(H: np.ndarray, a: float, b: float) -> np.ndarray:
    """R = −a·exp(H) + b."""
    return -a * np.exp(H) + b


@dataclass
class OLS:
    """R = c0 + c1·exp(H − shift) with the covariance of (c0, c1); ``shift`` = max H keeps exp() finite."""

    c0: float
    c1: float
    covariance: np.ndarray
    shift: float
    r2: float
    rmse: float

    def predict(self, H: np.ndarray) -> np.ndarray:
        return self.c0 + self.c1 * np.exp(np.asarray(H, dtype=float) - self.shift)

    def standard_error(self, H: np.ndarray) -> np.ndarray:
        """Standard error of the fitted mean at ``H`` (the band of a plot)."""
        x = np.exp(np.asarray(H, dtype=float) - self.shift)
        c = self.covariance
        return np.sqrt(np.maximum(c[0, 0] + x * x * c[1, 1] + 2 * x * c[0, 1], 0.0))


def ordinary_least_squares(H: np.ndarray, R: np.ndarray) -> OLS:
    H, R = np.asarray(H, dtype=float), np.asarray(R, dtype=float)
    if len(H) < MIN_POINTS:
        raise TooFewPoints(f"only {len(H)} (entropy, score) points to fit; need at least {MIN_POINTS}")
    if np.ptp(H) == 0:
        raise LogError(f"the entropy does not vary (H = {H[0]:.6g} at every point); the law cannot be fitted")
    if np.ptp(H) < RESOLUTION * max(1.0, float(np.abs(H).max())):
        raise LogError(
            f"the entropy varies by only {np.ptp(H):.2g} (H from {H.min():.9g} to {H.max():.9g}): below the resolution "
            "of a logged float32 value, so the law cannot be fitted (its ceiling would be noise)"
        )
    if np.ptp(R) == 0:
        raise LogError(f"the score does not vary (R = {R[0]:.6g} at every point); the law cannot be fitted")
    shift = float(H.max())
    x = np.exp(H - shift)
    mean, scale = x.mean(), x.std()
    z = (x - mean) / scale  # centred and scaled: the two columns of [1, z] are orthogonal
    (alpha, gamma), *_ = np.linalg.lstsq(np.stack([np.ones_like(z), z], axis=1), R, rcond=None)
    residual = R - (alpha + gamma * z)
    n = len(R)
    sigma2 = float(residual @ residual) / (n - 2) if n > 2 else math.nan
    var_alpha, var_gamma = sigma2 / n, sigma2 / float(z @ z)
    c1 = gamma / scale
    c0 = alpha - c1 * mean
    covariance = np.array(
        [
            [var_alpha + (mean / scale) ** 2 * var_gamma, -mean / scale**2 * var_gamma],
            [-mean / scale**2 * var_gamma, var_gamma / scale**2],
        ]
    )
    total = float(((R - R.mean()) ** 2).sum())
    return OLS(float(c0), float(c1), covariance, shift, 1.0 - float(residual @ residual) / total, _rms(residual))


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values)))) if len(values) else math.nan


@dataclass
class LawFit:
    """One fitted run (and validation source), in the JSON contract of ``verl-cov fit --json``."""

    run: str
    entropy_key: str
    perf_key: str
    a: float
    b: float
    a_se: float
    b_se: float
    r2: float
    rmse: float
    ceiling: float
    ceiling_se: float
    n_points: int
    points: list[dict] = field(default_factory=list)
    left_out: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fit_until: int | None = None
    predict_until: int | None = None
    heldout_rmse: float | None = None
    n_heldout: int | None = None
    predicted: list[dict] | None = None

    def as_dict(self) -> dict:
        """JSON-safe: non-finite numbers become null; forecast fields only with --fit-until."""
        data = asdict(self)
        if self.fit_until is None:
            for key in ("fit_until", "predict_until", "heldout_rmse", "n_heldout", "predicted"):
                del data[key]
        return json_safe(data)

    def formula(self) -> str:
        sign = "-" if self.a >= 0 else "+"
        return f"R = {sign}{abs(self.a):.6g}·exp(H) + {self.b:.6g}"


def json_safe(value):
    """``value`` with every non-finite float replaced by None, so ``json.dumps(..., allow_nan=False)`` holds."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


def fit_points(
    run: str,
    entropy_key: str,
    perf_key: str,
    points: list[Point],
    left_out: list[LeftOut],
    fit_until: int | None = None,
    predict_until: int | None = None,
) -> LawFit:
    """Fit the law on ``points`` (those at steps <= ``fit_until``), forecast those in (fit_until, predict_until]."""
    left = [asdict(item) for item in left_out]
    fitted = [p for p in points if fit_until is None or p.step <= fit_until]
    held = [p for p in points if fit_until is not None and p.step > fit_until]
    if predict_until is not None:
        left += [{"step": p.step, "reason": "after --predict-until"} for p in held if p.step > predict_until]
        held = [p for p in held if p.step <= predict_until]
    if fit_until is not None and not held:
        raise TooFewPoints(f"{run}: no (entropy, score) point after --fit-until {fit_until} to score the forecast")
    ols = ordinary_least_squares(np.array([p.H for p in fitted]), np.array([p.R for p in fitted]))
    scale = math.exp(-ols.shift)
    c = ols.covariance
    result = LawFit(
        run=run,
        entropy_key=entropy_key,
        perf_key=perf_key,
        a=-ols.c1 * scale,
        b=ols.c0,
        a_se=math.sqrt(c[1, 1]) * scale,
        b_se=math.sqrt(c[0, 0]),
        r2=ols.r2,
        rmse=ols.rmse,
        ceiling=float(ols.predict(0.0)),
        ceiling_se=float(ols.standard_error(0.0)),
        n_points=len(fitted),
        points=[asdict(p) for p in fitted],
        left_out=left,
    )
    if fit_until is not None:
        predicted = ols.predict(np.array([p.H for p in held]))
        result.fit_until, result.predict_until = fit_until, predict_until
        result.predicted = [{**asdict(p), "predicted": float(r)} for p, r in zip(held, predicted, strict=True)]
        result.heldout_rmse = _rms(np.array([p.R for p in held]) - predicted)
        result.n_heldout = len(held)
    result.warnings = warnings_of(result, ols, points)
    return result


def fit_run(
    run: RunLog,
    perf_key: str,
    entropy: str | None = None,
    keep_base: bool = False,
    fit_until: int | None = None,
    predict_until: int | None = None,
) -> LawFit:
    """Pair a run's entropy (``entropy``, else the first of ``keys.ENTROPY_KEYS`` it has) with its score
    ``perf_key`` and fit the law (``pairing.pair`` says which points count)."""
    key = entropy or entropy_key(run)
    run.get(key)  # a clear error naming close keys when absent
    run.get(perf_key)
    # NaN and infinite values take part in the pairing so that the points they spoil are named
    entropy_values = {**run.series[key], **run.nonfinite.get(key, {})}
    scores = {**run.series[perf_key], **run.nonfinite.get(perf_key, {})}
    points, left_out = pair(entropy_values, scores, keep_base=keep_base)
    return fit_points(run.name, key, perf_key, points, left_out, fit_until, predict_until)


def warnings_of(fit: LawFit, ols: OLS, points: list[Point]) -> list[str]:
    """Where the law does not hold, or the fit says little."""
    notes = []
    if fit.n_points < FEW_POINTS:
        notes.append(f"only {fit.n_points} points fitted: the law needs at least {FEW_POINTS} to say much")
    if fit.r2 < LOW_R2:
        notes.append(f"R² = {fit.r2:.2f} < {LOW_R2}: the entropy explains less than half of the score's variance")
    if fit.a <= 0:
        notes.append(f"a = {fit.a:.3g} <= 0: the score does not rise as the entropy falls")
    if fit.a_se > 0 and abs(fit.a) < 2 * fit.a_se:
        notes.append(
            f"a = {fit.a:.3g} ± {fit.a_se:.2g}: the entropy range ({min(p['H'] for p in fit.points):.4g} to "
            f"{max(p['H'] for p in fit.points):.4g}) is too narrow for the score's noise to determine the law"
        )
    scores = [p.R for p in points]
    if all(0 <= r <= 1 for r in scores) and not 0 <= fit.ceiling <= 1:
        notes.append(f"the ceiling {fit.ceiling:.3g} lies outside [0, 1], the range of the score")
    best = max(points, key=lambda p: p.R)
    if fit.ceiling < best.R:
        notes.append(
            f"the ceiling {fit.ceiling:.3g} is below the best score already observed ({best.R:.3g} at step {best.step})"
        )
    if fit.heldout_rmse is not None and fit.heldout_rmse > HELDOUT_FACTOR * fit.rmse:
        notes.append(
            f"the forecast's error ({fit.heldout_rmse:.3g}) is {fit.heldout_rmse / max(fit.rmse, 1e-12):.1f}× "
            "the fit's own residual: the early fit does not forecast this run"
        )
    return notes
