"""Per-unit likelihood-ratio tests against independent statsmodels fits."""

import warnings

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats
from test_glm_synth import make_acts, simulate_multinomial

import glminterp as gi


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    # full (p + 1, K) coefficients, intercept first; unit 1 (row 2) has no effect on any class
    coef = np.array([[0.2, -0.1, 0.0], [0.8, -0.6, 0.0], [0.0, 0.0, 0.0], [-0.5, 0.4, 0.9]])
    x, y = simulate_multinomial(rng, 700, coef)
    return x, y


def test_multinomial_lr_equals_statsmodels_reduced_fits(data):
    x, y = data
    res = gi.refit_output_layer(make_acts(x, y), progress=False)
    lr = res.unit_lr_tests()
    x1 = sm.add_constant(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = sm.MNLogit(y, x1).fit(method="newton", maxiter=100, disp=0).llf
        for j in range(x.shape[1]):
            red = sm.MNLogit(y, np.delete(x1, j + 1, axis=1)).fit(method="newton", maxiter=100, disp=0)
            stat = 2 * (full - red.llf)
            row = lr.iloc[j]
            assert row["df"] == 2 and row["converged"]
            np.testing.assert_allclose(row["statistic"], stat, rtol=1e-7)
            np.testing.assert_allclose(row["p"], stats.chi2.sf(stat, 2), rtol=1e-6)
    # the null unit is not significant, the others are; under the null LR and Wald agree
    # (for strong effects the Wald statistic is the smaller one: its SE grows with the effect)
    assert lr["p"].iloc[1] > 0.05 and (lr["p"].iloc[[0, 2]] < 1e-3).all()
    wald = res.unit_tests["statistic"].to_numpy()
    assert abs(lr["statistic"].iloc[1] - wald[1]) < 0.1
    assert (lr["statistic"].iloc[[0, 2]].to_numpy() > wald[[0, 2]]).all()
    assert lr["p_holm"].ge(lr["p"]).all()


def test_per_output_lr_sums_binomial_fits(data):
    x, y = data
    res = gi.refit_output_layer(make_acts(x, y), family="ovr", progress=False)
    lr = res.unit_lr_tests()
    x1 = sm.add_constant(x)
    stat = 0.0
    for k in range(3):
        yk = (y == k).astype(float)
        full = sm.Logit(yk, x1).fit(disp=0).llf
        red = sm.Logit(yk, np.delete(x1, 3, axis=1)).fit(disp=0).llf
        stat += 2 * (full - red)
    np.testing.assert_allclose(lr["statistic"].iloc[2], stat, rtol=1e-6)
    assert lr["df"].iloc[2] == 3


def test_lr_refuses_remedies_and_gaussian(data):
    x, y = data
    res = gi.refit_output_layer(make_acts(x, y), remedy="ridge", progress=False)
    with pytest.raises(ValueError, match="unit_lr_tests needs"):
        res.unit_lr_tests()


def test_fit_record_carries_lr_tests_where_they_apply(data):
    from glminterp.report.builder import refit_fit_record

    x, y = data
    res = gi.refit_output_layer(make_acts(x, y), progress=False)
    rec = refit_fit_record(res)
    got = [row["statistic"] for row in rec["unit_lr_tests"]]
    # fit.json keeps 8 significant digits (byte-identical reruns)
    np.testing.assert_allclose(got, res.unit_lr_tests()["statistic"], rtol=1e-7)
    ridge = gi.refit_output_layer(make_acts(x, y), remedy="ridge", progress=False)
    assert "unit_lr_tests" not in refit_fit_record(ridge)


def test_reduced_fits_fall_back_to_a_cold_start_when_the_warm_one_fails():
    from glminterp.refit.estimators.ml_statsmodels import all_good as _all_good
    from glminterp.refit.estimators.ml_statsmodels import reduced_fits as _reduced_fits

    rng = np.random.default_rng(3)
    coef = np.array([[0, 0, 0], [1, -1, 0], [0.5, 0.5, -1], [-1, 0, 1]]) * 5.0  # strong units
    x, y = simulate_multinomial(rng, 400, coef)
    res = gi.refit_output_layer(make_acts(x, y), progress=False)
    # dropping a strong unit from the full estimate overflows statsmodels' Newton ...
    warm = _reduced_fits(True, y, np.delete(sm.add_constant(x), 1, axis=1),
                         np.delete(res.params().to_numpy(), 1, axis=0))
    assert not _all_good(warm)
    # ... yet every reduced fit converges (cold start) and matches an independent fit
    lr = res.unit_lr_tests()
    assert lr["converged"].all()
    x1 = sm.add_constant(x)
    full = sm.MNLogit(y, x1).fit(method="newton", maxiter=100, disp=0).llf
    red = sm.MNLogit(y, np.delete(x1, 1, axis=1)).fit(method="newton", maxiter=100, disp=0).llf
    np.testing.assert_allclose(lr["statistic"].iloc[0], 2 * (full - red), rtol=1e-7)


def test_reduced_fit_that_fails_outright_is_not_good(data):
    from glminterp.refit.estimators.ml_statsmodels import all_good as _all_good
    from glminterp.refit.estimators.ml_statsmodels import reduced_fits as _reduced_fits

    x, y = data
    dup = np.column_stack([np.ones(len(y)), x[:, 0], x[:, 0]])  # singular Hessian
    fits = _reduced_fits(True, y, dup, None)
    assert not _all_good(fits)
