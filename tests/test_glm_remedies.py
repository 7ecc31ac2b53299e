"""Separation remedies through refit_output_layer equal the remedy modules (and thus brglm2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_glm_synth import make_acts, simulate_multinomial

import glminterp as gi
from glminterp.refit.firth import fit_firth
from glminterp.refit.penalized import fit_pca, fit_ridge
from glminterp.refit.separation import SeparationError

FIX = Path(__file__).parent / "fixtures" / "r"


def _separated_fixture():
    d = pd.read_csv(FIX / "firth_separated_input.csv")
    ref = pd.read_csv(FIX / "firth_separated_brglm2.csv", skipinitialspace=True)
    return d[["x1", "x2"]].to_numpy(), d["y"].to_numpy(), ref


def test_firth_sigmoid_head_equals_brglm2_under_separation():
    x, y, ref = _separated_fixture()
    acts = make_acts(x, y, link="sigmoid", n_outputs=1)
    with pytest.raises(SeparationError):
        gi.refit_output_layer(acts, progress=False)
    with pytest.warns(gi.glm.RefitWarning, match="PENALIZED"):
        res = gi.refit_output_layer(acts, remedy="firth", progress=False)
    assert res.separated and res.remedy == "firth" and res.engine == "remedy:firth"
    c = res.coefficients
    np.testing.assert_allclose(c["coef"], ref["coef"], rtol=1e-5)
    np.testing.assert_allclose(c["se"], ref["se"], rtol=1e-5)
    direct = fit_firth(x, y).summary_frame()
    np.testing.assert_allclose(c["coef"], direct["coef"], rtol=1e-10)
    np.testing.assert_allclose(c["p"], direct["p_plr"], rtol=1e-8)  # p is the PLR p-value
    np.testing.assert_allclose(c["p_wald"], direct["p_wald"], rtol=1e-8)
    np.testing.assert_allclose(c["ci_lower"], direct["ci_lower"], rtol=1e-7)
    np.testing.assert_allclose(c["ci_upper"], direct["ci_upper"], rtol=1e-7)
    units = c["term"] != "const"
    p1, p2 = sorted(direct["p_plr"].iloc[1:])  # Holm on the 2 unit PLR p-values, by hand
    holm = {p1: min(1, 2 * p1), p2: min(1, max(2 * p1, p2))}
    np.testing.assert_allclose(c.loc[units, "p_holm"],
                               [holm[v] for v in direct["p_plr"].iloc[1:]], rtol=1e-12)
    assert (c["inference"].str.contains("Firth")).all()
    assert np.isfinite(c[["coef", "se", "ci_lower", "ci_upper"]].to_numpy()).all()
    sep = res.separation
    assert list(sep.columns) == ["check", "separated", "classes", "n_units", "units", "n_rows",
                                 "objective"]
    assert bool(sep["separated"].iloc[0]) and "h:000" in sep["units"].iloc[0]
    fs = res.fit_stats
    assert fs["remedy"] == "firth" and fs["lr_pvalue"] is None and np.isfinite(fs["llf"])
    assert fs["penalized_llf"] == pytest.approx(fit_firth(x, y).pll, rel=1e-12)


def test_firth_two_class_softmax_is_the_binomial_of_class_1():
    x, y, _ = _separated_fixture()
    w = np.array([[-0.5, -0.25], [0.5, 0.25]])  # (K, p) network weights
    acts = make_acts(x, y, weight=w, bias=np.array([0.1, -0.1]))
    res = gi.refit_output_layer(acts, remedy="firth", remedy_kwds={"pl": False}, progress=False)
    assert res.family == "multinomial" and res.classes == ("1",)
    direct = fit_firth(x, y)
    np.testing.assert_allclose(res.params().iloc[:, 0], direct.params, rtol=1e-10)
    # network weight in the reference parametrization: w_1 - w_0
    np.testing.assert_allclose(res.coefficients["network_weight"], [-0.2, 1.0, 0.5], rtol=1e-12)
    # sum-to-zero: gamma_1 = beta / 2 = -gamma_0, SEs halve
    stz = gi.refit_output_layer(acts, remedy="firth", parametrization="sum_to_zero",
                                progress=False)
    c = stz.coefficients.set_index(["class", "term"])
    pl = fit_firth(x, y).summary_frame()
    np.testing.assert_allclose(c.loc["1", "coef"], pl["coef"] / 2, rtol=1e-10)
    np.testing.assert_allclose(c.loc["0", "coef"], -pl["coef"] / 2, rtol=1e-10)
    np.testing.assert_allclose(c.loc["1", "ci_upper"], pl["ci_upper"] / 2, rtol=1e-7)
    np.testing.assert_allclose(c.loc["0", "ci_lower"], -pl["ci_upper"] / 2, rtol=1e-7)
    np.testing.assert_allclose(c.loc["0", "p"], pl["p_plr"], rtol=1e-8)
    # agreement: penalized LR test of the network's head against the Firth fit
    ag = res.agreement_test
    from glminterp.refit.likelihood import firth_pll as _firth_pll

    b0 = res.network_params("reference").iloc[:, 0].to_numpy()
    x1 = np.column_stack([np.ones(len(y)), x])
    assert ag["statistic"] == pytest.approx(2 * (direct.pll - _firth_pll(x1, y, b0)), rel=1e-10)
    assert ag["df"] == 3 and "penalized" in ag["interpretation"]


def test_firth_ovr_and_multinomial_refusal(rng):
    coef = np.array([[0.0, 0.3, -0.3], [0.0, 1.0, -1.0], [0.0, -0.5, 0.8]])
    x, y = simulate_multinomial(rng, 200, coef)
    acts = make_acts(x, y)
    with pytest.raises(ValueError, match="family='ovr'"):
        gi.refit_output_layer(acts, remedy="firth", progress=False)
    res = gi.refit_output_layer(acts, family="ovr", remedy="firth",
                                remedy_kwds={"pl": False}, progress=False)
    for j, cls in enumerate(res.classes):
        direct = fit_firth(x, (y == j).astype(float))
        np.testing.assert_allclose(res.params()[cls], direct.params, rtol=1e-9)
        np.testing.assert_allclose(res.class_cov(cls), direct.cov, rtol=1e-9)
    assert not res.separated


def test_ridge_equals_fit_ridge_and_is_labelled(rng):
    coef = np.array([[0.0, 0.3, -0.3], [0.0, 1.0, -1.0], [0.0, -0.5, 0.8]])
    x, y = simulate_multinomial(rng, 300, coef)
    y = np.where(x[:, 1] > 1.2, 2, np.minimum(y, 1))  # separated: class 2 <=> h:001 > 1.2
    acts = make_acts(x, y)
    res = gi.refit_output_layer(acts, remedy="ridge", remedy_kwds={"lam": 2.0}, progress=False)
    direct = fit_ridge(x, y, lam=2.0, family="multinomial")
    np.testing.assert_allclose(res.params().to_numpy(), direct.params.to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(res.cov_params().to_numpy(), direct.cov, rtol=1e-10)
    assert res.separated and "penalized inference" in res.inference
    assert (res.coefficients["inference"] == direct.inference).all()
    assert res.coefficients["p_network"].isna().all()
    ag = res.agreement_test
    assert ag["statistic"] is None and "ridge" in ag["interpretation"]
    assert any("PENALIZED" in w for w in res.warnings)
    assert "penalized inference" in res._repr_html_()
    # binomial per output
    xb = rng.standard_normal((150, 2))
    yb = (xb[:, 0] > 0).astype(int)
    rb = gi.refit_output_layer(make_acts(xb, yb, link="sigmoid", n_outputs=1), remedy="ridge",
                               progress=False)
    np.testing.assert_allclose(rb.params().to_numpy()[:, 0],
                               fit_ridge(xb, yb, lam=1.0, family="binomial").params["coef"],
                               rtol=1e-10)


def test_pca_equals_fit_pca_with_loadings(rng):
    coef = np.array([[0.0, 0.3, -0.3], [0.0, 1.0, -1.0], [0.0, -0.5, 0.8], [0, 0.2, 0.1]])
    x, y = simulate_multinomial(rng, 400, coef)
    acts = make_acts(x, y)
    res = gi.refit_output_layer(acts, remedy="pca", remedy_kwds={"n_components": 2},
                                progress=False)
    direct = fit_pca(x, y, n_components=2)
    np.testing.assert_allclose(res.params().to_numpy(), direct.unit_params.to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(res.cov_params().to_numpy(), direct.unit_cov, rtol=1e-6,
                               atol=1e-10)
    lo = res.pca_loadings
    assert list(lo.index) == ["h:000", "h:001", "h:002"] and list(lo.columns) == ["PC1", "PC2"]
    np.testing.assert_allclose(lo.to_numpy(), direct.loadings.to_numpy(), rtol=1e-10)
    assert res.agreement_test["p_value"] is None
    fs = res.fit_stats  # the component model is an MLE: its LR test is valid
    assert fs["n_params"] == 6 and fs["lr_df"] == 4
    assert fs["llf"] == pytest.approx(direct.fit.llf, rel=1e-9)
    # default: fewest components reaching 90 % of the variance
    auto = gi.refit_output_layer(acts, remedy="pca", progress=False)
    xc = x - x.mean(axis=0)
    var = np.linalg.svd(xc, compute_uv=False) ** 2
    assert auto.pca_loadings.shape[1] == int(np.argmax(np.cumsum(var) / var.sum() >= 0.9) + 1)


def test_separation_table_is_always_there(rng):
    coef = np.array([[0.0, 0.3, -0.3], [0.0, 1.0, -1.0]])
    x, y = simulate_multinomial(rng, 300, coef)
    res = gi.refit_output_layer(make_acts(x, y), progress=False)
    assert len(res.separation) == 1 and not res.separation["separated"].any()
    assert res.remedy is None and "maximum likelihood" in res.inference
    ovr = gi.refit_output_layer(make_acts(x, y), family="ovr", progress=False)
    assert list(ovr.separation["check"]) == ["binomial: 0", "binomial: 1", "binomial: 2"]


def test_remedy_options_are_validated(rng):
    x = rng.standard_normal((60, 2))
    acts = make_acts(x, (x[:, 0] > 0).astype(int), link="sigmoid", n_outputs=1)
    with pytest.raises(ValueError, match="remedy"):
        gi.refit_output_layer(acts, remedy="lasso", progress=False)
    with pytest.raises(ValueError, match="lam"):
        gi.refit_output_layer(acts, remedy="firth", remedy_kwds={"lam": 1}, progress=False)
    with pytest.raises(ValueError, match="cov_type"):
        gi.refit_output_layer(acts, remedy="firth", cov_type="HC0", progress=False)
    gauss = make_acts(x, (x[:, 0] > 0).astype(int), link="identity", n_outputs=1)
    with pytest.raises(ValueError, match="gaussian"):
        gi.refit_output_layer(gauss, remedy="ridge", progress=False)
