"""verl_cov.analysis.law and pairing: the pairing rule by hand, the fit against a plain least-squares
reference, its standard errors, the forecast, and the warnings where the law does not hold."""

import json
import math

import numpy as np
import pytest
from synthetic_logs import FIT_FIELDS, PERF_KEY, STEPS, VAL_EVERY, WRITERS, A, B, expected_points, synthetic_run

from verl_cov.analysis.discover import read_runs
from verl_cov.analysis.law import LawFit, fit_points, fit_run, law, ordinary_least_squares
from verl_cov.analysis.pairing import Point, pair
from verl_cov.analysis.run_log import LogError, RunLog


def reference(H, R):
    """Plain OLS of R on [1, exp(H)] by the normal equations: a, b, their covariance, R²."""
    X = np.stack([np.ones_like(H), np.exp(H)], axis=1)
    beta = np.linalg.solve(X.T @ X, X.T @ R)
    residual = R - X @ beta
    sigma2 = residual @ residual / (len(R) - 2)
    covariance = sigma2 * np.linalg.inv(X.T @ X)
    r2 = 1 - residual @ residual / ((R - R.mean()) @ (R - R.mean()))
    return -beta[1], beta[0], covariance, r2


def test_pairing_by_hand():
    entropy = {1: 2.0, 2: 1.9, 3: 1.8, 5: 1.6, 6: 1.5}
    score = {0: 0.10, 2: 0.30, 4: 0.40, 6: 0.60}
    points, left_out = pair(entropy, score)
    # step 2 -> entropy of step 3; step 4 -> step 5 (step 4 has none); step 6: nothing after it; step 0: base
    assert points == [Point(2, 3, 1.8, 0.30), Point(4, 5, 1.6, 0.40)]
    assert [(item.step, item.reason.split(" (")[0]) for item in left_out] == [
        (0, "before the first update"),
        (6, "no entropy logged after it"),
    ]
    kept, _ = pair(entropy, score, keep_base=True)
    assert kept[0] == Point(0, 1, 2.0, 0.10)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize("a, b", [(A, B), (0.05, 0.4), (1.5, 5.0)])
def test_fit_recovers_a_and_b_and_matches_the_reference(fmt, a, b, tmp_path):
    records = synthetic_run(seed=1, a=a, b=b, noise=0.002 * a)
    (run,) = read_runs(WRITERS[fmt](records, tmp_path))
    fit = fit_run(run, PERF_KEY)
    _, H, R = (np.array(column) for column in zip(*expected_points(records), strict=True))
    ref_a, ref_b, covariance, ref_r2 = reference(H, R)
    assert fit.n_points == len(H) == STEPS // VAL_EVERY - 1  # the final validation has no entropy after it
    assert fit.a == pytest.approx(ref_a, rel=1e-3) and fit.b == pytest.approx(ref_b, rel=1e-3)
    assert fit.a_se == pytest.approx(math.sqrt(covariance[1, 1]), rel=1e-3)
    assert fit.b_se == pytest.approx(math.sqrt(covariance[0, 0]), rel=1e-3)
    ceiling_var = covariance[0, 0] + covariance[1, 1] + 2 * covariance[0, 1]
    assert fit.ceiling == pytest.approx(ref_b - ref_a, rel=1e-3)
    assert fit.ceiling_se == pytest.approx(math.sqrt(ceiling_var), rel=1e-3)
    assert fit.r2 == pytest.approx(ref_r2, abs=1e-6)
    assert fit.a == pytest.approx(a, rel=0.05) and fit.b == pytest.approx(b, rel=0.05)
    assert [item["reason"].split(" (")[0] for item in fit.left_out] == ["no entropy logged after it"]


def test_fit_on_exact_points_is_exact():
    H = np.linspace(0.1, 2.0, 12)
    ols = ordinary_least_squares(H, law(H, 0.7, 1.3))
    assert -ols.c1 * math.exp(-ols.shift) == pytest.approx(0.7) and ols.c0 == pytest.approx(1.3)
    assert ols.r2 == pytest.approx(1.0) and ols.rmse == pytest.approx(0.0, abs=1e-12)


def test_large_entropies_fit_as_well_as_small_ones():
    """Entropy in 30–54 nats used to give R² = −9.7 from an unscaled solve: exp(54) ~ 3e23."""
    H = np.linspace(30, 54, 20)
    R = law(H - 50, 0.2, 0.9) + np.random.default_rng(0).normal(0, 0.01, H.size)
    ols = ordinary_least_squares(H, R)
    centred = ordinary_least_squares(H - 50, R)
    assert 0 <= ols.r2 <= 1 and ols.r2 == pytest.approx(centred.r2, abs=1e-9)
    np.testing.assert_allclose(ols.predict(H), centred.predict(H - 50), rtol=1e-9, atol=1e-12)


def points_of(H, R):
    return [Point(i, i + 1, float(h), float(r)) for i, (h, r) in enumerate(zip(H, R, strict=True))]


def fit_of(H, R, **kwargs) -> LawFit:
    return fit_points("run", "actor/entropy", PERF_KEY, points_of(H, R), [], **kwargs)


def test_a_flat_entropy_is_flagged_not_trusted():
    """Entropy flat to 1e-6 used to give a = 6474 and a ceiling of -1.03 for a score near 0.5, silently."""
    rng = np.random.default_rng(3)
    H = 0.7 + 1e-6 * rng.random(12)
    fit = fit_of(H, 0.5 + 0.01 * rng.normal(size=12))
    assert any("too narrow for the score's noise" in w for w in fit.warnings)
    assert any("outside [0, 1]" in w for w in fit.warnings) or abs(fit.ceiling - 0.5) < 0.1


def test_warnings_where_the_law_does_not_hold():
    H = np.linspace(2.0, 0.2, 4)
    fit = fit_of(H, 0.3 + 0.2 * np.exp(H))  # a < 0: the score falls with the entropy; 4 points only
    text = " ".join(fit.warnings)
    assert "only 4 points fitted" in text and "a = -0.2 <= 0" in text
    noisy = fit_of(np.linspace(2.0, 0.2, 10), 0.5 + np.random.default_rng(1).normal(0, 0.1, 10))
    assert any("R² =" in w and "< 0.5" in w for w in noisy.warnings)


def test_a_ceiling_below_the_best_score_seen_is_flagged():
    H = np.linspace(1.5, 0.3, 10)
    R = law(H, 0.3, 1.0)
    R[-1] += 0.2  # a late jump the law cannot follow
    fit = fit_of(H, R)
    assert any("below the best score already observed" in w for w in fit.warnings)


def test_forecast_scores_the_held_out_points_and_caps_them():
    records = synthetic_run(seed=2, noise=0.0)
    run = RunLog("r")
    for step, data in records.items():
        for key, value in data.items():
            run.add(key, step, value)
    for step in range(44, STEPS + 1, VAL_EVERY):
        run.series[PERF_KEY][step] += 0.02  # the later validations move by a known amount
    fit = fit_run(run, PERF_KEY, fit_until=40, predict_until=60)
    assert fit.n_points == 10 and fit.n_heldout == 5  # steps 44..60
    assert fit.a == pytest.approx(A, rel=1e-4) and fit.b == pytest.approx(B, rel=1e-4)
    assert fit.heldout_rmse == pytest.approx(0.02, rel=1e-3)
    assert [p["step"] for p in fit.predicted] == [44, 48, 52, 56, 60]
    assert all(p["R"] - p["predicted"] == pytest.approx(0.02, abs=1e-6) for p in fit.predicted)
    assert {item["step"] for item in fit.left_out if item["reason"] == "after --predict-until"} == {64, 68, 72, 76}
    assert any("forecast's error" in w for w in fit.warnings)


def test_clear_errors():
    with pytest.raises(LogError, match="at least 3"):
        ordinary_least_squares(np.array([0.1, 0.2]), np.array([0.5, 0.4]))
    with pytest.raises(LogError, match="entropy does not vary"):
        ordinary_least_squares(np.full(5, 0.3), np.linspace(0, 1, 5))
    with pytest.raises(LogError, match="score does not vary"):
        ordinary_least_squares(np.linspace(0, 1, 5), np.full(5, 0.3))  # constant score used to report R² = 1
    run = RunLog("r", {"actor/entropy": {1: 1.0}, PERF_KEY: {0: 0.1}})
    with pytest.raises(LogError, match="Close keys: actor/entropy") as error:
        run.get("actor/entropi")
    assert "--list-keys" in str(error.value)
    with pytest.raises(LogError, match="after --fit-until"):
        fit_of(np.linspace(1, 0.1, 6), np.linspace(0.1, 0.6, 6), fit_until=100)


def test_json_is_always_valid():
    fit = fit_of(np.linspace(1, 0.1, 6), law(np.linspace(1, 0.1, 6), 0.2, 0.8))
    fit.heldout_rmse = math.nan
    fit.a_se = math.inf
    data = json.loads(json.dumps(fit.as_dict(), allow_nan=False))
    assert data["a_se"] is None and "heldout_rmse" not in data  # no --fit-until: no forecast fields
    assert FIT_FIELDS <= set(data)


def test_formula_sign():
    fit = fit_of(np.linspace(2.0, 0.2, 8), 0.3 + 0.29 * np.exp(np.linspace(2.0, 0.2, 8)))
    assert fit.formula().startswith("R = +0.29·exp(H) + 0.3")  # used to print R = --0.29
