"""Figures of the entropy mechanism: entropy over steps, R against H with the fitted law and its band,
and the entropy change the covariance predicts against the one observed. matplotlib; the format comes
from the file's suffix and is checked before any fitting (``check_plot_path``).

The fitted curve is solid over the entropy range the fit saw and dashed where it extrapolates down to
H = 0, the ceiling; each ceiling is labelled with its run.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from verl_cov.analysis.law import LawFit
from verl_cov.analysis.run_log import LogError, RunLog

COVARIANCE_KEY = "actor/cov/mean"
NATS = "nats per token"


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def check_plot_path(out: str | Path) -> Path:
    """The plot's path, refused up front when its folder is missing, it is a folder, or its suffix is no
    format matplotlib writes."""
    out = Path(out)
    if out.is_dir():
        raise LogError(f"--plot {out} is a folder; give a file name such as {out / 'fit.png'}")
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = out.suffix.lstrip(".").lower()
    if suffix not in formats:
        raise LogError(
            f"--plot {out}: unknown format {suffix or '(no suffix)'!r}; use one of {', '.join(sorted(formats))}"
        )
    if not out.parent.exists():
        raise LogError(f"--plot {out}: the folder {out.parent} does not exist")
    return out


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
    axis.set(
        xlabel=f"predicted ΔH = −η·Cov(log π, A) ({NATS})",
        ylabel=f"observed ΔH ({NATS})",
        title=f"entropy change (r = {corr:.2f})",
    )
    axis.legend(fontsize=8)


def plot_law(axis, fit: LawFit, label: str, color=None) -> None:
    """Points, the fitted curve with its ±1 s.e. band, solid where observed and dashed to H = 0, the ceiling."""
    from verl_cov.analysis.law import ordinary_least_squares

    H = np.array([p["H"] for p in fit.points])
    R = np.array([p["R"] for p in fit.points])
    ols = ordinary_least_squares(H, R)
    seen = np.linspace(H.min(), H.max(), 100)
    below = np.linspace(0.0, H.min(), 50)
    line = axis.plot(seen, ols.predict(seen), color=color, label=f"{label}: {fit.formula()}")[0]
    color = line.get_color()
    axis.plot(below, ols.predict(below), color=color, ls="--", lw=1)
    grid = np.concatenate([below, seen])
    band = ols.standard_error(grid)
    axis.fill_between(grid, ols.predict(grid) - band, ols.predict(grid) + band, color=color, alpha=0.15)
    axis.scatter(H, R, s=14, color=color)
    if fit.predicted:
        axis.scatter(
            [p["H"] for p in fit.predicted],
            [p["R"] for p in fit.predicted],
            s=24,
            facecolors="none",
            edgecolors=color,
            label=f"{label}: held out",
        )
    axis.errorbar(
        [0.0],
        [fit.ceiling],
        yerr=[fit.ceiling_se],
        fmt="*",
        ms=10,
        color=color,
        capsize=3,
        label=f"{label}: ceiling {fit.ceiling:.3g} ± {fit.ceiling_se:.2g}",
    )
    axis.set(xlabel=f"entropy H, {fit.entropy_key} ({NATS})", ylabel=f"R, {fit.perf_key}")


def plot_fit(run: RunLog, fit: LawFit, out: Path) -> Path:
    """Entropy over steps; R against H with the fitted curve, band and ceiling; predicted vs observed ΔH."""
    plt = pyplot()
    change = entropy_change(run, fit.entropy_key)
    figure, axes = plt.subplots(1, 3 if change else 2, figsize=(15 if change else 10, 4.2))
    steps, H = run.get(fit.entropy_key)
    axes[0].plot(steps, H)
    if fit.fit_until is not None:
        axes[0].axvline(fit.fit_until, color="grey", ls="--", lw=1, label="--fit-until")
        axes[0].legend(fontsize=8)
    axes[0].set(xlabel="step", ylabel=f"{fit.entropy_key} ({NATS})", title=f"entropy of {run.name}")
    plot_law(axes[1], fit, run.name)
    axes[1].set_title(f"R = −a·exp(H) + b  (R² = {fit.r2:.3f}, dashed: extrapolated)")
    axes[1].legend(fontsize=7)
    if change:
        _plot_entropy_change(axes[2], *change)
    return save(figure, out)


def plot_compare(
    runs: list[RunLog],
    fits: list[LawFit | None],
    entropy_keys: list[str],
    out: Path,
    targets: dict[str, float] | None = None,
) -> Path:
    """Entropy over steps (with each target run's H* as a dotted line) and R against H with each run's law."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for run, fit, entropy_key in zip(runs, fits, entropy_keys, strict=True):
        steps, H = run.get(entropy_key)
        color = axes[0].plot(steps, H, label=run.name)[0].get_color()
        if targets and run.name in targets:
            axes[0].axhline(
                targets[run.name], color=color, ls=":", lw=1.2, label=f"{run.name}: H* = {targets[run.name]:g}"
            )
        if fit is not None:
            plot_law(axes[1], fit, run.name, color=color)
    axes[0].set(xlabel="step", ylabel=f"entropy ({NATS})", title="entropy over training")
    axes[0].legend(fontsize=7)
    axes[1].set_title("R against H: fitted law (dashed: extrapolated) and ceiling")
    axes[1].legend(fontsize=6)
    return save(figure, out)


def save(figure, out: str | Path) -> Path:
    """Write the figure to ``out``; a new or regular file (not a link) is written whole or not at all (drawn
    into a hidden file beside it, then renamed over it), so an interrupted plot never leaves a cut-off one."""
    plt = pyplot()
    out = Path(out)
    figure.tight_layout()
    atomic = not out.is_symlink() and (not out.exists() or out.is_file())
    drawn = out.with_name(f".{out.name}.{os.getpid()}{out.suffix}") if atomic else out
    try:
        figure.savefig(drawn, dpi=110)
        if atomic:
            os.replace(drawn, out)
    except OSError as error:
        raise LogError(f"--plot {out}: cannot write it ({error.strerror or error})") from None
    finally:
        plt.close(figure)
        if atomic:
            with contextlib.suppress(OSError):  # gone (renamed), or never made (its folder is not one)
                drawn.unlink()
    return out
