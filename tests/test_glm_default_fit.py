"""The default fit is an optimum: regression data where statsmodels' optimizers fail (issue 10)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import statsmodels.api as sm
from _default_fit_data import (
    bfgs_binomial,
    bfgs_multinomial,
    binomial_irls_diverges,
    multinomial_newton_overflows,
)
from test_glm_synth import make_acts, simulate_multinomial

import glminterp as gi
from glminterp.refit.acceptance import check_optimum
from glminterp.refit.likelihood import null_loglik_binomial, null_loglik_multinomial
from glminterp.refit.separation import check_binomial, check_multinomial

pytestmark = pytest.mark.filterwarnings("ignore:events per parameter")


def _terms(p):
    return ["const", *[f"h:{j:03d}" for j in range(p)]]


def test_binomial_design_where_statsmodels_irls_diverges():
    x, y = binomial_irls_diverges()
    x1 = sm.add_constant(x)
    assert y.sum() == 16 and x.shape == (200, 10)
    assert not check_binomial(x1, y, terms=_terms(10)).separated  # the MLE exists
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = sm.GLM(y, x1, family=sm.families.Binomial()).fit(maxiter=100, tol=1e-12)
    null = null_loglik_binomial(y)
    assert raw.llf < null - 100 and np.abs(raw.params).max() > 1e10  # the trap
    acts = make_acts(x, y.astype(int), link="sigmoid", n_outputs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no statsmodels warning for an accepted fit
        warnings.simplefilter("ignore", gi.glm.RefitWarning)
        res = gi.refit_output_layer(acts, progress=False)
    ref = bfgs_binomial(x, y)
    np.testing.assert_allclose(res.params().to_numpy()[:, 0], ref, rtol=1e-5, atol=1e-5)
    fs = res.fit_stats
    assert fs["converged"] is True and fs["llf"] > null
    assert "optimum" in fs["convergence_criterion"] and res.engine == "fast"
    assert any("rejected statsmodels" in n for n in res.diagnostics["notes"])
    assert fs["deviance"] == pytest.approx(-2 * fs["llf"]) and fs["deviance"] < 20
    assert np.isfinite(res.coefficients["se"]).all()


def test_multinomial_design_where_newton_from_zero_overflows():
    x, y = multinomial_newton_overflows()
    x1 = sm.add_constant(x)
    assert not check_multinomial(x1, y, terms=_terms(6), classes=("0", "1", "2")).separated
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = sm.MNLogit(y, x1).fit(method="newton", maxiter=100, tol=1e-12, disp=0)
    assert not np.isfinite(raw.params).all()  # the trap: NaN with converged=True
    res = gi.refit_output_layer(make_acts(x, y), progress=False)
    ref = bfgs_multinomial(x, y)
    np.testing.assert_allclose(res.params().to_numpy(), ref, rtol=1e-4, atol=1e-5)
    assert res.fit_stats["converged"] is True and res.converged
    assert res.fit_stats["llf"] > null_loglik_multinomial(y, 3)


@pytest.mark.parametrize("seed", range(8))
def test_default_fit_is_an_optimum_on_random_overlapping_designs(seed):
    """Property: llf >= intercept-only llf and the score vanishes (binomial and multinomial)."""
    rng = np.random.default_rng(100 + seed)
    n, p = int(rng.integers(150, 400)), int(rng.integers(2, 7))
    coef = rng.normal(0, 1.0, (p + 1, 3))
    coef[:, 0] = 0
    x, y = simulate_multinomial(rng, n, coef)
    x = np.maximum(x, 0) * float(rng.choice([1.0, 5.0]))  # ReLU-like, assorted scales
    x1 = sm.add_constant(x)
    if check_multinomial(x1, y, terms=_terms(p), classes=("0", "1", "2")).separated:
        pytest.fail("the generator should give overlapping data")
    res = gi.refit_output_layer(make_acts(x, y), progress=False)
    v = check_optimum("multinomial", x1, y, res.params().to_numpy(), res.fit_stats["llf"],
                      null_loglik_multinomial(y, 3))
    assert v.acceptable and v.record["score_max"] < 1e-6
    assert res.fit_stats["llf"] >= res.fit_stats["llnull"] - 1e-9
    yb = (y == 1).astype(int)
    rb = gi.refit_output_layer(make_acts(x, yb, link="sigmoid", n_outputs=1), progress=False)
    vb = check_optimum("binomial", x1, yb.astype(float), rb.params().to_numpy()[:, 0],
                       rb.fit_stats["llf"], null_loglik_binomial(yb))
    assert vb.acceptable and rb.fit_stats["converged"] is True


def test_high_dimension_is_flagged_with_the_measured_size_of_the_problem():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((200, 24))
    y = (rng.random(200) < 0.5).astype(int)
    acts = make_acts(x, y, link="sigmoid", n_outputs=1)
    with pytest.warns(gi.glm.RefitWarning, match="p/N = 0.12") as rec:
        res = gi.refit_output_layer(acts, progress=False)
    assert any("0.926" in str(w.message) and "remedy='pca'" in str(w.message) for w in rec)
    assert res.fit_stats["p_over_n"] == pytest.approx(0.12)
    low = gi.refit_output_layer(make_acts(x[:, :2], y, link="sigmoid", n_outputs=1),
                                progress=False)
    assert not any("p/N" in w for w in low.warnings)


@pytest.mark.slow
def test_default_path_simulation_small():
    """The benchmark's simulation, small: no failures, coverage and type-I errors near nominal."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from default_path_simulation import DESIGNS, one_design

    for name, (truth, n) in DESIGNS.items():
        r = one_design(name, truth, n, reps=80, seed=1)
        assert r["failures"] == 0
        assert 0.92 <= r["coverage"] <= 0.98
        for key in ("unit_test_type1", "agreement_lr_type1", "agreement_wald_type1"):
            assert r[key] <= 0.125  # 5% + 3 Monte-Carlo s.e. at 80 replicates
