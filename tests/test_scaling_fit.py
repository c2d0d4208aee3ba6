"""Scaling-law fits on synthetic sweeps drawn from known coefficients (issue 6 acceptance)."""
import numpy as np
import pytest

from megatron_slm.scaling.fit import (REFERENCE_LAWS, LossLaw, approach2, bootstrap_loss_law, fit_loss_law,
                                      fit_power_law, isoflop_minimum, simulate_sweep)
from megatron_slm.scaling.results import group_isoflop

BUDGETS = np.geomspace(1e18, 1e22, 7)


def _sweep(law: LossLaw, noise: float, seed: int = 3):
    # 7 budgets x 11 sizes over a 100x size range, loss * exp(noise * N(0, 1))
    return simulate_sweep(law, BUDGETS, sizes_per_budget=11, span=10.0, noise=noise, seed=seed)


# The textless law (alpha ~ beta, large E) is the harder one to identify: lower noise.
CASES = [("chinchilla", 0.005), ("textless", 0.002)]


@pytest.mark.parametrize("name,noise", CASES)
def test_approach3_recovers_coefficients(name, noise):
    truth = REFERENCE_LAWS[name]
    s = _sweep(truth, noise)
    law, _ = fit_loss_law(s["params"], s["tokens"], s["loss"])
    assert abs(law.alpha - truth.alpha) < 0.02
    assert abs(law.beta - truth.beta) < 0.02
    assert abs(law.E - truth.E) < 0.05
    # and approach 2 (parabola minima per isoFLOP set) agrees on the allocation exponents
    a2 = approach2(s["params"], s["loss"], s["compute"], group_isoflop(s["compute"], s["budget"]))
    assert "error" not in a2 and len(a2["minima"]) == len(BUDGETS)
    assert abs(a2["a"] - law.a) < 0.05
    assert abs(a2["b"] - law.b) < 0.05
    assert abs(a2["a"] - truth.a) < 0.05


def test_bootstrap_ci_contains_truth():
    truth = REFERENCE_LAWS["textless"]
    s = _sweep(truth, 0.002)
    ci, used = bootstrap_loss_law(s["params"], s["tokens"], s["loss"], samples=100, seed=0)
    assert used == 100
    for key, value in truth.as_dict().items():
        lo, hi = ci[key]
        assert lo <= value <= hi, (key, lo, value, hi)
        assert lo < hi


def test_noise_free_fit_is_exact_and_noise_matters():
    truth = REFERENCE_LAWS["chinchilla"]
    exact, _ = fit_loss_law(*(_sweep(truth, 0.0)[k] for k in ("params", "tokens", "loss")))
    assert abs(exact.alpha - truth.alpha) < 1e-3 and abs(exact.E - truth.E) < 1e-3
    # a real check, not a constant: much noisier data moves the estimate
    noisy, _ = fit_loss_law(*(_sweep(truth, 0.05, seed=1)[k] for k in ("params", "tokens", "loss")))
    assert abs(noisy.alpha - truth.alpha) > abs(exact.alpha - truth.alpha)


def test_allocation_minimises_loss_at_fixed_compute():
    law = REFERENCE_LAWS["textless"]
    for c in (1e19, 1e22):
        n_opt, d_opt, l_opt = law.optimal(c)
        assert n_opt * d_opt * 6 == pytest.approx(c, rel=1e-9)
        n = n_opt * np.geomspace(0.5, 2, 41)
        losses = law.loss(n, c / (6 * n))
        assert np.argmin(losses) == 20 and losses.min() == pytest.approx(l_opt)
    assert law.a + law.b == pytest.approx(1.0)


def test_isoflop_minimum_rejects_unusable_sets():
    n = np.geomspace(1e7, 1e9, 5)
    c = np.full(5, 1e19)
    assert isoflop_minimum(n[:2], [2.0, 1.9], c[:2])[0] is None
    m, why = isoflop_minimum(n, [2.0, 2.1, 2.15, 2.1, 2.0], c)  # concave
    assert m is None and "convex" in why
    m, why = isoflop_minimum(n, [2.5, 2.3, 2.15, 2.05, 2.0], c)  # minimum beyond the largest size
    assert m is None and "outside" in why
    m, _ = isoflop_minimum(n, [2.2, 2.05, 2.0, 2.05, 2.2], c)
    assert m.n_opt == pytest.approx(1e8, rel=1e-6) and m.d_opt == pytest.approx(1e19 / 6e8)


def test_power_law_and_grouping():
    x = np.geomspace(1e18, 1e21, 4)
    law = fit_power_law(x, 3.0 * x ** 0.05)
    assert law.gamma == pytest.approx(0.05) and law.k == pytest.approx(3.0) and law.r2 == pytest.approx(1.0)
    compute = np.array([1.02e19, 0.99e19, 3.1e19, 1.0e19, 2.95e19])
    groups = group_isoflop(compute)
    assert [sorted(g.tolist()) for g in groups] == [[0, 1, 3], [2, 4]]


def test_approach2_bootstrap_interval_covers_the_truth_and_flat_laws_have_no_allocation():
    from megatron_slm.scaling.fit import bootstrap_approach2

    law = REFERENCE_LAWS["chinchilla"]
    s = simulate_sweep(law, BUDGETS[:4], sizes_per_budget=7, span=6.0, noise=0.01, seed=1)
    groups = group_isoflop(s["compute"], s["budget"])
    ci = bootstrap_approach2(s["params"], s["loss"], s["compute"], groups, samples=200, seed=0)
    lo, hi = ci["a"]
    assert lo < law.a < hi and hi - lo < 0.2 and ci["used"] > 150
    assert ci["b"] == pytest.approx([1 - hi, 1 - lo])  # D_opt = C / (6 N_opt)
    noisier = bootstrap_approach2(s["params"], s["loss"] * np.exp(0.03 * np.random.default_rng(2).standard_normal(
        s["loss"].size)), s["compute"], groups, samples=200, seed=0)
    assert noisier["a"][1] - noisier["a"][0] > hi - lo  # more noise, a wider interval
    # alpha = 0 (the loss does not depend on N): no allocation, and no exception
    flat = LossLaw(E=1.0, A=3.0, B=10.0, alpha=0.0, beta=0.3)
    assert np.isnan(flat.G) and np.isnan(flat.optimal(1e20)[0]) and flat.as_dict()["a"] == 1.0


def test_bootstrap_around_a_fit_whose_floor_underflowed():
    # Runs with no loss floor (a pure power law): E runs off to exp(-745) and underflows to 0.0;
    # the bootstrap warm-starts from that fit and must not take log(0).
    truth = LossLaw(E=0.0, A=400.0, B=2000.0, alpha=0.34, beta=0.28)
    s = _sweep(truth, 0.002)
    center = LossLaw(E=0.0, A=truth.A, B=truth.B, alpha=truth.alpha, beta=truth.beta)
    ci, _ = bootstrap_loss_law(s["params"], s["tokens"], s["loss"], samples=20, seed=0, center=center)
    assert ci["E"][1] < 1e-2 and ci["alpha"][0] < truth.alpha < ci["alpha"][1]


def test_a_fit_with_a_flat_term_is_written_with_null_allocation_and_refuses_to_predict():
    """A sweep that barely trained can fit alpha < 0: the law is still a result (written), the
    allocation it lacks is null in the JSON (never NaN), and --predict says why it cannot."""
    import json
    import math

    from megatron_slm.scaling.analysis import has_allocation, law_from_report, predict, report_json
    from megatron_slm.scaling.results import ResultsError

    flat = LossLaw(E=1e-9, A=7.8e-11, B=16.6, alpha=-1.73, beta=0.10)
    report = {**flat.as_dict(), "runs": 6, "ci": {"G": [math.nan, math.nan], "beta": [0.05, 0.12]}}
    assert math.isnan(report["G"]) and not has_allocation(report)
    back = json.loads(report_json(report, "results.csv"))
    assert back["G"] is None and back["ci"]["G"] == [None, None] and back["ci"]["beta"] == [0.05, 0.12]
    assert back["alpha"] == -1.73 and not has_allocation(back)
    with pytest.raises(ResultsError, match="flat term"):
        predict(law_from_report(back), 1e20)
    with pytest.raises(ResultsError, match="non-finite E"):
        report_json({**report, "E": math.inf}, "results.csv")
