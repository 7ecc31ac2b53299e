"""``refit_output_layer(..., remedy="firth")`` on softmax heads with K > 2: the multinomial bias
reduction, through the public API, against R brglm2::brmultinom (AS_mean) fixtures and hand
computations of its Wald tables and tests."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_glm_synth import make_acts, simulate_multinomial

import glminterp as gi
from glminterp.refit import MultinomialBRRefitResult
from glminterp.refit.mnbr import fit_multinomial_br

FIX = Path(__file__).parent / "fixtures" / "r"
NAMES = ["real", "realsep", "complete", "quasi"]


def _fixture(name):
    d = pd.read_csv(FIX / f"brmultinom_{name}_input.csv")
    ref = pd.read_csv(FIX / f"brmultinom_{name}_brglm2.csv", skipinitialspace=True)
    y = d.pop("y").to_numpy()
    return d.to_numpy(), y, ref, list(d.columns)


def _r_matrix(ref, col, terms):
    """R's long (class, term) table -> (terms, classes 1..K-1)."""
    return ref.pivot(index="term", columns="class", values=col).loc[terms].to_numpy()


def _refit(x, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # EPP / p-over-N / penalized-inference warnings
        return gi.refit_output_layer(make_acts(x, y), remedy="firth", progress=False, **kw)


@pytest.mark.parametrize("name", NAMES)
def test_public_refit_equals_brmultinom(name):
    x, y, ref, cols = _fixture(name)
    res = _refit(x, y)
    assert isinstance(res, MultinomialBRRefitResult)
    assert res.remedy == "firth" and res.engine == "remedy:mnbr" and res.converged
    terms = ["const", *cols]
    np.testing.assert_allclose(res.params().to_numpy(), _r_matrix(ref, "coef", terms),
                               rtol=1e-6, atol=1e-8)
    tab = res.coefficients  # reference parametrization: class-major rows, as R's long table
    se = tab.pivot(index="term", columns="class", values="se").loc[list(res.terms)].to_numpy()
    np.testing.assert_allclose(se, _r_matrix(ref, "se", terms), rtol=1e-6)


@pytest.mark.parametrize("name", ["realsep", "complete", "quasi"])
def test_separated_data_are_finite_and_recorded(name):
    x, y, _, _ = _fixture(name)
    res = _refit(x, y)
    assert res.separated and res.diagnostics["separated"]
    assert res.diagnostics["separation"][0]["method"] == "lp"  # no clean MLE: the LP decided
    assert res.separation["separated"].all()
    tab = res.coefficients
    assert np.isfinite(tab[["coef", "se", "z", "p", "ci_lower", "ci_upper"]].to_numpy()).all()
    assert np.abs(tab["coef"]).max() < 50
    assert "bias reduction" in res.inference and (res.summary["inference"] == res.inference).all()
    assert any("does not exist" in n for n in res.diagnostics["notes"])


def test_overlapping_real_activations_are_not_flagged():
    x, y, _, _ = _fixture("real")
    res = _refit(x, y)
    assert not res.separated


def test_both_parametrizations_and_wald_table_by_hand():
    x, y, ref, cols = _fixture("realsep")
    res = _refit(x, y)
    br = fit_multinomial_br(x, y, 3)
    z975 = stats.norm.ppf(0.975)
    for par, coef, cov in (("reference", br.params, br.cov),
                           ("sum_to_zero", br.params_sum_to_zero(), br.cov_sum_to_zero())):
        tab = res.coefficient_table(par)
        b = coef.ravel(order="F")
        se = np.sqrt(np.diag(cov))
        np.testing.assert_allclose(tab["coef"], b, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(tab["se"], se, rtol=1e-6)
        np.testing.assert_allclose(tab["z"], b / se, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(tab["p"], 2 * stats.norm.sf(np.abs(b / se)), rtol=1e-5,
                                   atol=1e-12)
        np.testing.assert_allclose(tab["ci_lower"], b - z975 * se, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(tab["ci_upper"], b + z975 * se, rtol=1e-6, atol=1e-8)
    stz = res.params("sum_to_zero")
    assert list(stz.columns) == ["0", "1", "2"]
    np.testing.assert_allclose(stz.sum(axis=1), 0.0, atol=1e-12)
    own = _refit(x, y, parametrization="sum_to_zero")
    pd.testing.assert_frame_equal(own.coefficients, res.coefficient_table("sum_to_zero"))


def _hand_pll(x, y, beta):
    """l + 1/2 log det I from scratch (row loop over Kronecker blocks)."""
    x1 = np.column_stack([np.ones(len(x)), x])
    eta = np.column_stack([np.zeros(len(x)), x1 @ beta])
    prob = np.exp(eta - eta.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    llf = float(np.sum(np.log(prob[np.arange(len(y)), y])))
    info = sum(np.kron(np.diag(p[1:]) - np.outer(p[1:], p[1:]), np.outer(r, r))
               for p, r in zip(prob, x1))
    return llf + 0.5 * np.linalg.slogdet(info)[1]


def test_unit_tests_and_agreement_test_by_hand(rng):
    x, y, _, _ = _fixture("complete")
    k, p = 3, x.shape[1]
    w, bias = rng.normal(0, 0.5, (k, p)), rng.normal(0, 0.5, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = gi.refit_output_layer(make_acts(x, y, weight=w, bias=bias), remedy="firth",
                                    progress=False)
    br = fit_multinomial_br(x, y, k)
    b, v = br.params, br.cov
    q = p + 1
    ut = res.unit_tests
    for j in range(1, q):  # joint Wald test of the unit's K - 1 reference contrasts
        sel = np.arange(k - 1) * q + j
        stat = b[j] @ np.linalg.solve(v[np.ix_(sel, sel)], b[j])
        assert ut.loc[j - 1, "statistic"] == pytest.approx(stat, rel=1e-6)
        assert ut.loc[j - 1, "df"] == k - 1
        assert ut.loc[j - 1, "p"] == pytest.approx(stats.chi2.sf(stat, k - 1), rel=1e-5)
    full = np.vstack([bias, w.T])  # network head, (q, K); reference: minus class 0
    net = full[:, 1:] - full[:, [0]]
    d = (b - net).ravel(order="F")
    ag = res.agreement_test
    assert ag["wald_statistic"] == pytest.approx(d @ np.linalg.solve(v, d), rel=1e-6)
    plr = 2 * (_hand_pll(x, y, b) - _hand_pll(x, y, net))
    assert ag["statistic"] == pytest.approx(plr, rel=1e-6)
    assert ag["df"] == q * (k - 1)
    assert ag["p_value"] == pytest.approx(stats.chi2.sf(plr, q * (k - 1)), rel=1e-5)
    assert "penalized likelihood ratio" in ag["test"]
    with pytest.raises(ValueError, match="unit_lr_tests"):
        res.unit_lr_tests()


def test_two_class_softmax_keeps_binomial_firth_and_mnbr_agrees(rng):
    coef = np.array([[0.0, 0.4], [0.0, 1.2], [0.0, -0.8]])
    x, y = simulate_multinomial(rng, 150, coef)
    firth = _refit(x, y)
    assert type(firth).__name__ == "FirthRefitResult"  # PLR tests and profile intervals
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mn = gi.refit_output_layer(make_acts(x, y), remedy="mnbr", progress=False)
    assert mn.remedy == "mnbr"
    np.testing.assert_allclose(mn.params(), firth.params(), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(mn.coefficients["se"], firth.coefficients["se"], rtol=1e-6)


def test_options_are_checked(rng):
    coef = np.array([[0.0, 0.3, -0.3], [0.0, 1.0, -1.0], [0.0, -0.5, 0.8]])
    x, y = simulate_multinomial(rng, 200, coef)
    with pytest.raises(ValueError, match="profile penalized-likelihood"):
        _refit(x, y, remedy_kwds={"pl": True})
    with pytest.raises(ValueError, match="not options"):
        _refit(x, y, remedy_kwds={"lam": 1.0})
    tight = _refit(x, y, remedy_kwds={"pl": False, "tol": 1e-11})
    np.testing.assert_allclose(tight.params(), fit_multinomial_br(x, y, 3, tol=1e-11).params,
                               rtol=1e-9, atol=1e-11)
    # overlapping data: the clean MLE proved overlap (no LP) and started the bias reduction
    assert tight.diagnostics["separation"][0]["method"] == "fit" and not tight.separated
    assert tight.diagnostics["start"] == "maximum likelihood"
    with pytest.raises(ValueError, match="remedy='firth'"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gi.refit_output_layer(make_acts(x, y), family="ovr", remedy="mnbr", progress=False)


def test_separation_error_advises_the_multinomial_bias_reduction():
    x, y, _, _ = _fixture("complete")
    with pytest.raises(gi.SeparationError) as e, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gi.refit_output_layer(make_acts(x, y), progress=False)
    msg = str(e.value)
    assert "remedy='firth' keeps this softmax model" in msg and "brmultinom" in msg
    assert "one-vs-rest: a different model" in msg


def test_non_convergence_is_a_fit_error_naming_the_cause():
    x, y, _, _ = _fixture("realsep")
    with pytest.raises(gi.refit.FitError, match="parameters / rows"):
        _refit(x, y, remedy_kwds={"max_iter": 1})
