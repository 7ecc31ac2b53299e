"""Simulation truth: nominal 95% Wald intervals cover the true coefficients (fast version).

The full study (more replicates, several designs) is benchmarks/coverage_simulation.py.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from test_glm_synth import make_acts, simulate_multinomial

import glminterp as gi

TRUE = np.array([[0.0, 0.4, -0.3], [0.0, 0.8, -0.6], [0.0, -0.5, 0.7]])  # (p + 1, K) full


def test_wald_coverage_multinomial_200_replicates():
    rng = np.random.default_rng(2024)
    n_rep, hits, total = 200, 0, 0
    hits_stz = 0
    truth_ref = TRUE[:, 1:] - TRUE[:, :1]
    truth_stz = TRUE - TRUE.mean(axis=1, keepdims=True)
    for _ in range(n_rep):
        x, y = simulate_multinomial(rng, 400, TRUE)
        res = gi.refit_output_layer(make_acts(x, y), progress=False)
        c = res.coefficients
        cover = (c["ci_lower"] <= truth_ref.ravel("F")) & (truth_ref.ravel("F") <= c["ci_upper"])
        hits += int(cover.sum())
        total += len(c)
        cs = res.params("sum_to_zero").to_numpy()
        se = np.sqrt(np.diag(res.cov_params("sum_to_zero").to_numpy())).reshape(cs.shape, order="F")
        hits_stz += int((np.abs(cs - truth_stz) <= 1.959964 * se).sum())
    # 200 x 6 intervals; a 99.9% binomial band around 0.95 (intervals within a replicate are
    # correlated, which the band's width of ~+-2 points comfortably covers).
    lo, hi = stats.binom.ppf([0.0005, 0.9995], total, 0.95) / total
    assert lo <= hits / total <= hi, (hits / total, lo, hi)
    cov_stz = hits_stz / (n_rep * TRUE.size)
    assert 0.92 <= cov_stz <= 0.98, cov_stz


def test_bootstrap_intervals_are_seeded_and_sensible():
    rng = np.random.default_rng(3)
    x, y = simulate_multinomial(rng, 500, TRUE)
    acts = make_acts(x, y)
    r1 = gi.refit_output_layer(acts, bootstrap=40, seed=11, progress=False)
    r2 = gi.refit_output_layer(acts, bootstrap=40, seed=11, progress=False)
    c1, c2 = r1.coefficients, r2.coefficients
    np.testing.assert_array_equal(c1["boot_ci_lower"], c2["boot_ci_lower"])
    # Bootstrap SEs agree with the model-based ones to within Monte Carlo error (~11% at B=40).
    ratio = c1["boot_se"] / c1["se"]
    assert 0.7 < ratio.median() < 1.3
    assert (c1["boot_ci_lower"] < c1["coef"]).all() and (c1["coef"] < c1["boot_ci_upper"]).all()
    r3 = gi.refit_output_layer(acts, bootstrap=40, seed=12, progress=False)
    assert not np.array_equal(r3.coefficients["boot_ci_lower"], c1["boot_ci_lower"])
