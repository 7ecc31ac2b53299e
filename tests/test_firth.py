"""Firth logistic regression equals R brglm2 (AS_mean) and its PLR inference is calibrated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from glminterp.refit.firth import fit_firth

FIX = Path(__file__).parent / "fixtures" / "r"



def _load(name):
    d = pd.read_csv(FIX / f"firth_{name}_input.csv")
    ref = pd.read_csv(FIX / f"firth_{name}_brglm2.csv", skipinitialspace=True).set_index("term")
    return d.drop(columns="y"), d["y"], ref


@pytest.mark.parametrize("name", ["real", "separated"])
def test_matches_brglm2(name):
    x, y, ref = _load(name)
    res = fit_firth(x, y)
    assert res.converged
    assert list(res.params.index) == list(ref.index)
    np.testing.assert_allclose(res.params.to_numpy(), ref["coef"].to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(res.bse.to_numpy(), ref["se"].to_numpy(), rtol=1e-5)


def test_finite_under_separation_where_ml_diverges():
    x, y, _ = _load("separated")
    res = fit_firth(x, y)
    assert np.all(np.isfinite(res.params)) and np.all(np.isfinite(res.bse))
    assert res.params["x1"] < 20
    ci = res.profile_ci(["x1"])
    assert np.isfinite(ci.loc["x1"]).all() and ci.loc["x1", "ci_lower"] > 0


def _brute_profile(res, term, c):
    """Independent restricted maximum of l + 1/2 log det I (Nelder-Mead then BFGS, no score)."""
    x1, y = res._x1, res._y
    j = list(res.params.index).index(term)

    def negpll(bf):
        b = np.insert(bf, j, c)
        eta = x1 @ b
        mu = 1 / (1 + np.exp(-eta))
        ll = np.sum(y * eta - np.logaddexp(0, eta))
        info = (x1 * (mu * (1 - mu))[:, None]).T @ x1
        return -(ll + 0.5 * np.linalg.slogdet(info)[1])

    b0 = np.delete(res.params.to_numpy(), j)
    o = optimize.minimize(negpll, b0, method="BFGS", options={"gtol": 1e-9})
    return -o.fun


def test_plr_and_profile_ci_match_brute_force():
    x, y, _ = _load("real")
    res = fit_firth(x, y)
    term = "texture_error"
    plr = res.plr_test([term]).loc[term]
    brute_stat = 2 * (res.pll - _brute_profile(res, term, 0.0))
    assert plr["chi2"] == pytest.approx(brute_stat, rel=1e-6)
    assert plr["p"] == pytest.approx(stats.chi2.sf(brute_stat, 1), rel=1e-5)
    ci = res.profile_ci([term]).loc[term]
    crit = stats.chi2.ppf(0.95, 1)
    for bound in (ci["ci_lower"], ci["ci_upper"]):
        assert 2 * (res.pll - _brute_profile(res, term, bound)) == pytest.approx(crit, abs=1e-5)
    # profile CI is not the Wald CI (asymmetric) but close to it for this well-behaved term
    est = res.params[term]
    assert ci["ci_lower"] < est < ci["ci_upper"]
    assert abs((ci["ci_upper"] - est) - (est - ci["ci_lower"])) > 1e-3


def test_plr_test_is_chi2_calibrated_under_null():
    rng = np.random.default_rng(11)
    stats_ = []
    for _ in range(300):
        x = rng.standard_normal((60, 2))
        y = (rng.random(60) < 1 / (1 + np.exp(-(0.3 + 0.8 * x[:, 0])))).astype(int)
        stats_.append(fit_firth(x, y).plr_test(["x2"]).loc["x2", "chi2"])
    stats_ = np.asarray(stats_)
    # 5% test: 300 draws -> rejection rate within about 3 SE of 0.05
    rate = np.mean(stats_ > stats.chi2.ppf(0.95, 1))
    assert abs(rate - 0.05) < 3 * np.sqrt(0.05 * 0.95 / 300)
    assert stats.kstest(stats_, stats.chi2(1).cdf).pvalue > 0.01


def test_summary_and_errors():
    x, y, _ = _load("real")
    res = fit_firth(x, y)
    table = res.summary_frame(pl=False)
    assert list(table.columns) == ["coef", "se", "z", "p_wald"]
    assert "Firth" in res._repr_html_()
    with pytest.raises(KeyError, match="not in the model"):
        res.plr_test(["nope"])
    with pytest.raises(ValueError, match="only 0 and 1"):
        fit_firth(x, y + 1)


def test_frequency_weights_equal_expanded_rows():
    x, y, _ = _load("separated")
    w = np.random.default_rng(3).integers(1, 4, size=len(y))
    wres = fit_firth(x, y, weights=w)
    rep = fit_firth(np.repeat(x.to_numpy(), w, axis=0), np.repeat(y.to_numpy(), w))
    np.testing.assert_allclose(wres.params.to_numpy(), rep.params.to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(wres.bse.to_numpy(), rep.bse.to_numpy(), rtol=1e-8)
