"""verl_cov.logs and verl_cov.law: read each log format, recover a known law, score held-out steps."""

import numpy as np
import pytest
from synthetic_logs import PERF_KEY, STEPS, VAL_EVERY, WRITERS, A, B, synthetic_run, write_jsonl

from verl_cov.analysis.law import fit_law, fit_run, law
from verl_cov.analysis.logs import LogError, read_log


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_each_format_reads_the_same_series(fmt, tmp_path):
    records = synthetic_run()
    run = read_log(WRITERS[fmt](records, tmp_path))
    steps, H = run.get("actor/entropy")
    assert steps.tolist() == list(range(1, STEPS + 1))
    np.testing.assert_allclose(H, [records[s]["actor/entropy"] for s in steps], rtol=1e-6)
    perf_steps, _ = run.get(PERF_KEY)
    assert perf_steps.tolist() == list(range(VAL_EVERY, STEPS + 1, VAL_EVERY))
    assert run.default_entropy_key() == "actor/entropy" and run.default_perf_key() == PERF_KEY


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize("a, b", [(A, B), (0.05, 0.4), (1.5, 5.0)])
def test_fit_recovers_a_and_b(fmt, a, b, tmp_path):
    run = read_log(WRITERS[fmt](synthetic_run(seed=1, a=a, b=b, noise=0.002 * a), tmp_path))
    fit = fit_run(run)
    assert fit.a == pytest.approx(a, rel=0.05) and fit.b == pytest.approx(b, rel=0.05)
    assert fit.ceiling == pytest.approx(b - a, abs=0.05 * a + 0.01 * b)
    assert fit.r2 > 0.99 and fit.n_points == STEPS // VAL_EVERY


def test_fit_until_scores_the_held_out_prediction(tmp_path):
    run = read_log(write_jsonl(synthetic_run(seed=2, noise=0.0), tmp_path / "r.jsonl"))
    # Perturb the late points by a known amount: the held-out RMSE must equal it.
    for step in range(44, STEPS + 1, VAL_EVERY):
        run.series[PERF_KEY][step] += 0.02
    fit = fit_run(run, fit_until=40)
    assert fit.n_points == 10 and fit.heldout_n == 10
    assert fit.a == pytest.approx(A, rel=1e-4) and fit.b == pytest.approx(B, rel=1e-4)
    assert fit.heldout_rmse == pytest.approx(0.02, rel=1e-3)


def test_fit_law_on_exact_points_is_exact():
    H = np.linspace(0.1, 2.0, 12)
    a, b = fit_law(H, law(H, 0.7, 1.3))
    assert a == pytest.approx(0.7) and b == pytest.approx(1.3)


def test_clear_errors(tmp_path):
    with pytest.raises(LogError, match="at least 3"):
        fit_law(np.array([0.1, 0.2]), np.array([0.5, 0.4]))
    with pytest.raises(LogError, match="does not vary"):
        fit_law(np.full(5, 0.3), np.linspace(0, 1, 5))
    run = read_log(write_jsonl(synthetic_run(), tmp_path / "r.jsonl"))
    with pytest.raises(LogError, match="actor/entropy") as error:
        run.get("actor/entropi")
    assert "--list-keys" in str(error.value)
    with pytest.raises(LogError, match="after --fit-until"):
        fit_run(run, fit_until=10_000)
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(LogError, match="not a known log format"):
        read_log(tmp_path / "notes.txt")
    (tmp_path / "bad.jsonl").write_text('{"step": 1, "data": {}}\nnot json\n')
    with pytest.raises(LogError, match="bad.jsonl:2"):
        read_log(tmp_path / "bad.jsonl")
    with pytest.raises(LogError, match="does not exist"):
        read_log(tmp_path / "missing.jsonl")


def test_entropy_falls_back_to_our_estimate(tmp_path):
    records = synthetic_run()
    for data in records.values():
        data["actor/cov/entropy_estimate"] = data.pop("actor/entropy")
    run = read_log(write_jsonl(records, tmp_path / "r.jsonl"))
    assert fit_run(run).entropy_key == "actor/cov/entropy_estimate"
