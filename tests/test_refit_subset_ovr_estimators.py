"""method='class_subset' and method='ovr' against statsmodels on the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from test_glm_synth import make_acts, simulate_multinomial

from glminterp import engine as E
from glminterp.refit import refit_output_layer
from glminterp.refit.results_partial import (
    ClassSubsetRefitResult,
    NotComputedError,
    OneVsRestRefitResult,
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(21)
    coef = np.column_stack([np.zeros(6), rng.normal(0, 0.5, (6, 4))])
    x, y = simulate_multinomial(rng, 2500, coef)
    return x, y, coef


@pytest.fixture(scope="module")
def acts(data):
    x, y, coef = data
    return make_acts(x, y, weight=coef[1:].T, bias=coef[0])


@pytest.fixture(scope="module")
def subset(acts):
    return refit_output_layer(acts, method="class_subset", classes=["4", "1", "3"],
                              progress=False)


def test_class_subset_equals_statsmodels_on_the_subset_rows(data, subset):
    x, y, _ = data
    keep = np.isin(y, [1, 3, 4])
    own = sm.MNLogit(y[keep], sm.add_constant(x[keep])).fit(method="newton", tol=1e-12,
                                                            disp=0)
    assert isinstance(subset, ClassSubsetRefitResult)
    assert subset.class_subset == ("1", "3", "4") and subset.classes == ("3", "4")
    assert subset.n_obs == keep.sum() and subset.diagnostics["n_obs_offered"] == len(y)
    np.testing.assert_allclose(subset.params().to_numpy(), own.params, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(subset.cov_params().to_numpy(), own.cov_params(), rtol=1e-8,
                               atol=1e-14)
    tab = subset.coefficients
    np.testing.assert_allclose(tab["se"], np.asarray(own.bse).ravel(order="F"), rtol=1e-8)
    np.testing.assert_allclose(tab["z"], np.asarray(own.tvalues).ravel(order="F"), rtol=1e-7)
    assert subset.fit_stats["llf"] == pytest.approx(own.llf, rel=1e-12)
    assert subset.fit_stats["llnull"] == pytest.approx(own.llnull, rel=1e-9)  # sm: a fit
    assert subset.fit_stats["estimator"] == "class_subset"
    # the usual tables exist for the conditional model
    assert len(subset.unit_tests) == 5 and subset.agreement_test["df"] == 12
    assert len(subset.coefficient_table("sum_to_zero")) == 18


def test_class_subset_says_it_is_the_conditional_model(subset):
    assert "conditional multinomial logit" in subset.inference
    assert "rows whose class is in S=['1', '3', '4']" in subset.inference
    assert (subset.summary["inference"] == subset.inference).all()
    assert any("class subset" in n for n in subset.diagnostics["notes"])


def test_class_subset_contrasts_and_pairwise(data, subset):
    x, y, _ = data
    keep = np.isin(y, [1, 3, 4])
    own = sm.MNLogit(y[keep], sm.add_constant(x[keep])).fit(method="newton", tol=1e-12,
                                                            disp=0)
    b, v = np.asarray(own.params), np.asarray(own.cov_params())
    q = 6
    d = b[:, 1] - b[:, 0]  # w_4 - w_3
    sel = np.zeros((q, 2 * q))
    sel[:, q:] += np.eye(q)
    sel[:, :q] -= np.eye(q)
    tab = subset.contrast("4", "3")
    np.testing.assert_allclose(tab["coef"], d, rtol=1e-8)
    np.testing.assert_allclose(tab["se"], np.sqrt(np.diag(sel @ v @ sel.T)), rtol=1e-8)
    pw = subset.pairwise_tests
    row = pw[(pw.class_a == "3") & (pw.class_b == "4")].iloc[0]
    s = sel[1:]
    want = float(s @ b.ravel(order="F") @ np.linalg.solve(s @ v @ s.T, s @ b.ravel(order="F")))
    assert row["statistic"] == pytest.approx(want, rel=1e-7) and row["df"] == 5
    assert len(pw) == 3 and {"p_holm", "p_bh"} <= set(pw.columns)


def test_class_subset_baseline_and_errors(acts):
    res = refit_output_layer(acts, method="class_subset", classes=["1", "3"],
                             remedy_kwds={"baseline": "3"}, progress=False)
    assert res.class_subset == ("3", "1")
    for classes, msg in ((["1"], "at least two"), (["1", "9"], "not classes of the head")):
        with pytest.raises(ValueError, match=msg):
            refit_output_layer(acts, method="class_subset", classes=classes, progress=False)


@pytest.fixture(scope="module")
def ovr(acts):
    return refit_output_layer(acts, method="ovr", progress=False)


def test_ovr_equals_statsmodels_logit_per_class(data, ovr):
    x, y, _ = data
    assert isinstance(ovr, OneVsRestRefitResult) and ovr.family == "ovr"
    xc = sm.add_constant(x)
    for k in range(5):
        own = sm.Logit((y == k).astype(float), xc).fit(method="newton", tol=1e-12, disp=0)
        np.testing.assert_allclose(ovr.params()[str(k)], own.params, rtol=1e-8, atol=1e-10)
        v = np.asarray(own.cov_params())  # entries to 1e-8 of the block's scale
        np.testing.assert_allclose(ovr.class_cov(str(k)).to_numpy(), v, rtol=1e-8,
                                   atol=1e-8 * np.abs(v).max())
        tab = ovr.coefficients[ovr.coefficients["class"] == str(k)]
        np.testing.assert_allclose(tab["se"], own.bse, rtol=1e-8)
        row = ovr.class_fit_stats.loc[str(k)]
        assert row["llf"] == pytest.approx(own.llf, rel=1e-12)
    assert ovr.fit_stats["estimator"] == "ovr"


def test_ovr_says_it_is_a_different_model(ovr):
    assert "a different model from the multinomial head" in ovr.inference
    assert (ovr.coefficients["inference"] == ovr.inference).all()
    assert ovr.agreement_test["statistic"] is None  # the softmax head is not this model
    assert ovr.coefficients["network_weight"].isna().all()


def test_ovr_matches_family_ovr_maximum_likelihood(acts, ovr):
    ml = refit_output_layer(acts, family="ovr", method="ml", progress=False)
    np.testing.assert_allclose(ovr.params().to_numpy(), ml.params().to_numpy(), rtol=1e-8,
                               atol=1e-10)
    v = ml.cov_params().to_numpy()
    np.testing.assert_allclose(ovr.cov_params().to_numpy(), v, rtol=1e-8,
                               atol=1e-8 * np.abs(v).max())
    pd.testing.assert_frame_equal(ovr.unit_tests, ml.unit_tests, rtol=1e-6)
    same = refit_output_layer(acts, family="ovr", method="ovr", progress=False)
    np.testing.assert_allclose(same.params().to_numpy(), ovr.params().to_numpy(), rtol=1e-12)


def test_ovr_large_dense_cov_is_refused(ovr, monkeypatch):
    import glminterp.refit.results_partial as rp

    monkeypatch.setattr(rp, "DENSE_COV_MAX_PARAMS", 10)
    with pytest.raises(NotComputedError, match="class_cov"):
        ovr.cov_params()


def test_auto_switches_per_output_fits_to_ovr_blocks(acts, ovr, monkeypatch):
    monkeypatch.setattr(E, "available_memory_bytes", lambda: 10_000)
    res = refit_output_layer(acts, family="ovr", method="auto", progress=False)
    assert isinstance(res, OneVsRestRefitResult)
    assert "chose method='ovr'" in res.fit_stats["estimator_choice"]
    np.testing.assert_allclose(res.params().to_numpy(), ovr.params().to_numpy(), rtol=1e-10)


def test_ovr_on_a_sigmoid_head_is_the_per_output_ml_fit(data):
    x, y, _ = data
    rng = np.random.default_rng(0)
    acts = make_acts(x, y, weight=rng.normal(0, 0.1, (5, 5)), link="sigmoid", n_outputs=5)
    ml = refit_output_layer(acts, method="ml", progress=False)
    ovr = refit_output_layer(acts, method="ovr", progress=False)
    assert ovr.family == ml.family == "binomial"
    np.testing.assert_allclose(ovr.params().to_numpy(), ml.params().to_numpy(), rtol=1e-8,
                               atol=1e-10)
    tab, want = ovr.coefficients, ml.coefficients
    np.testing.assert_allclose(tab["se"], want["se"], rtol=1e-8)
    np.testing.assert_allclose(tab["z_network"], want["z_network"], rtol=1e-7)  # comparable
    assert ovr.agreement_test["df"] == ml.agreement_test["df"] == 30
    assert ovr.agreement_test["statistic"] == pytest.approx(
        ml.agreement_test["wald_statistic"], rel=1e-7)
    with pytest.raises(ValueError, match="per-class blocks only"):
        refit_output_layer(acts, method="ovr", cov_type="HC0", progress=False)
