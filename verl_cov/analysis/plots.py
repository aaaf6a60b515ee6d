"""Figures of the entropy mechanism: entropy over steps, R against H with the fitted law, and the entropy
change the covariance predicts against the one observed. matplotlib, written to PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from verl_cov.analysis.law import LawFit, law, paired  # noqa: E402
from verl_cov.analysis.logs import RunLog  # noqa: E402

COVARIANCE_KEY = "actor/cov/mean"


def entropy_change(run: RunLog, entropy_key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(−Cov_t, H_{t+1} − H_t) over consecutive logged steps, or None without covariance metrics.

    The mechanism says dH ≈ −η·Cov(log π, A); the scale η is fitted in ``_plot_entropy_change``.
    """
    if COVARIANCE_KEY not in run.series:
        return None
    steps, H = run.get(entropy_key)
    cov = run.series[COVARIANCE_KEY]
    pairs = [(-cov[s], H[i + 1] - H[i]) for i, s in enumerate(steps[:-1].tolist()) if s in cov]
    if len(pairs) < 2:
        return None
    predictor, observed = (np.array(v) for v in zip(*pairs, strict=True))
    return predictor, observed


def _plot_entropy_change(axis, predictor: np.ndarray, observed: np.ndarray) -> None:
    scale = float(predictor @ observed / (predictor @ predictor)) if predictor.any() else 0.0
    predicted = scale * predictor
    corr = float(np.corrcoef(predicted, observed)[0, 1]) if predicted.std() > 0 and observed.std() > 0 else 0.0
    axis.scatter(predicted, observed, s=12, alpha=0.7)
    low, high = min(predicted.min(), observed.min()), max(predicted.max(), observed.max())
    axis.plot([low, high], [low, high], "k--", lw=1, label="predicted = observed")
    axis.set(xlabel="predicted ΔH = −η·Cov(log π, A)", ylabel="observed ΔH", title=f"entropy change (r = {corr:.2f})")
    axis.legend(fontsize=8)


def _plot_law(axis, H: np.ndarray, R: np.ndarray, fit: LawFit, label: str = "", color=None) -> None:
    grid = np.linspace(0.0, max(float(H.max()) * 1.05, 1e-3), 200)
    line = axis.plot(grid, law(grid, fit.a, fit.b), color=color, label=f"{label} R = −{fit.a:.3g}·e^H + {fit.b:.3g}")
    axis.scatter(H, R, s=14, color=line[0].get_color())
    axis.axhline(fit.ceiling, color=line[0].get_color(), ls=":", lw=1)
    axis.annotate(f"ceiling {fit.ceiling:.3g}", (0, fit.ceiling), fontsize=8, va="bottom")
    axis.set(xlabel=f"entropy H ({fit.entropy_key})", ylabel=f"R ({fit.perf_key})")


def plot_fit(run: RunLog, fit: LawFit, out: str | Path) -> Path:
    """Entropy over steps; R against H with the fitted curve and ceiling; predicted vs observed ΔH."""
    change = entropy_change(run, fit.entropy_key)
    figure, axes = plt.subplots(1, 3 if change else 2, figsize=(15 if change else 10, 4.2))
    steps, H = run.get(fit.entropy_key)
    axes[0].plot(steps, H)
    if fit.fit_until is not None:
        axes[0].axvline(fit.fit_until, color="grey", ls="--", lw=1, label="--fit-until")
        axes[0].legend(fontsize=8)
    axes[0].set(xlabel="step", ylabel=fit.entropy_key, title=f"entropy of {run.name}")
    point_steps, point_H, point_R = paired(run, fit.entropy_key, fit.perf_key)
    _plot_law(axes[1], point_H, point_R, fit)
    if fit.fit_until is not None:
        later = point_steps > fit.fit_until
        axes[1].scatter(point_H[later], point_R[later], s=24, facecolors="none", edgecolors="red", label="held out")
    axes[1].set_title(f"R = −a·exp(H) + b  (R² = {fit.r2:.3f})")
    axes[1].legend(fontsize=8)
    if change:
        _plot_entropy_change(axes[2], *change)
    return save(figure, out)


def plot_compare(runs: list[RunLog], fits: list[LawFit | None], entropy_keys: list[str], out: str | Path) -> Path:
    """Entropy over steps and R against H with each run's fitted law, one colour per run."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for run, fit, entropy_key in zip(runs, fits, entropy_keys, strict=True):
        steps, H = run.get(entropy_key)
        color = axes[0].plot(steps, H, label=run.name)[0].get_color()
        if fit is not None:
            _, point_H, point_R = paired(run, fit.entropy_key, fit.perf_key)
            _plot_law(axes[1], point_H, point_R, fit, label=run.name, color=color)
    axes[0].set(xlabel="step", ylabel="entropy", title="entropy over training")
    axes[0].legend(fontsize=8)
    axes[1].set_title("R against H, fitted law and ceiling")
    axes[1].legend(fontsize=7)
    return save(figure, out)


def save(figure, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
