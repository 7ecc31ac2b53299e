"""The refit equals statsmodels' own slow path and hand-computed covariances.

Real activations: the MNIST-5k refit-split activations in tests/fixtures/r (not separated).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from test_glm_synth import make_acts

import glminterp as gi

FIX = Path(__file__).parent / "fixtures" / "r"


@pytest.fixture(scope="module")
def data():
    d = pd.read_csv(FIX / "activations.csv", dtype={"sample_id": str}).set_index("sample_id")
    head = json.loads((FIX / "head.json").read_text())
    x = d.drop(columns="label").to_numpy(np.float64)
    y = d["label"].to_numpy()
    acts = make_acts(x, y, np.array(head["weight"]), np.array(head["bias"]), layer="act1")
    return acts, sm.add_constant(x), y


@pytest.fixture(scope="module")
def res(data):
    return gi.refit_output_layer(data[0], progress=False)


def _fisher_full(x, prob):
    """Full (unidentified) Fisher information of the K-class softmax, vec in class-major order."""
    k = prob.shape[1]
    q = x.shape[1]
    info = np.zeros((k * q, k * q))
    for a in range(k):
        for b in range(k):
            w = prob[:, a] * ((a == b) - prob[:, b])
            info[a * q : (a + 1) * q, b * q : (b + 1) * q] = (x * w[:, None]).T @ x
    return info


def test_multinomial_equals_statsmodels_slow_path(data, res):
    _, x, y = data
    slow = sm.MNLogit(y, x).fit(method="bfgs", maxiter=20000, gtol=1e-12, disp=0)
    np.testing.assert_allclose(res.params().to_numpy(), np.asarray(slow.params), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(
        res.coefficients["se"].to_numpy(), np.asarray(slow.bse).ravel("F"), rtol=1e-6
    )
    fs = res.fit_stats
    np.testing.assert_allclose(fs["llf"], slow.llf, rtol=1e-10)
    np.testing.assert_allclose(fs["deviance"], -2 * slow.llf, rtol=1e-10)
    np.testing.assert_allclose(fs["lr_statistic"], slow.llr, rtol=1e-6)
    np.testing.assert_allclose(fs["lr_pvalue"], slow.llr_pvalue, atol=1e-12)
    np.testing.assert_allclose(fs["mcfadden_r2"], slow.prsquared, rtol=1e-8)
    np.testing.assert_allclose(fs["bic"], slow.bic, rtol=1e-8)
    assert fs["lr_df"] == slow.df_model == 5 * 9
    json.dumps(fs)  # JSON-serialisable


def test_sum_to_zero_cov_is_pinv_of_full_fisher(data, res):
    _, x, _ = data
    gamma = res.params("sum_to_zero").to_numpy()
    np.testing.assert_allclose(gamma.sum(axis=1), 0, atol=1e-10)
    eta = x @ gamma
    prob = np.exp(eta - eta.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    expected = np.linalg.pinv(_fisher_full(x, prob), hermitian=True)
    got = res.cov_params("sum_to_zero").to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8 * np.abs(expected).max())
    # Contrasts have the same variance in both parametrizations: Var(g_2 - g_1) = Var(b_2 - b_1).
    q = x.shape[1]
    ref = res.cov_params("reference").to_numpy()
    c_ref = ref[:q, :q] + ref[q : 2 * q, q : 2 * q] - ref[:q, q : 2 * q] - ref[q : 2 * q, :q]
    s = got[q : 3 * q, q : 3 * q]
    c_stz = s[:q, :q] + s[q:, q:] - s[:q, q:] - s[q:, :q]
    np.testing.assert_allclose(np.diag(c_stz), np.diag(c_ref), rtol=1e-8)
    # The MultiIndex labels follow statsmodels' class-major order.
    assert res.cov_params("sum_to_zero").index[q] == ("1", "const")
    np.testing.assert_allclose(res.class_cov("3", "sum_to_zero").to_numpy(), got[3 * q : 4 * q, 3 * q : 4 * q])


def test_hc0_is_the_hand_sandwich(data):
    acts, x, y = data
    r = gi.refit_output_layer(acts, cov_type="HC0", progress=False)
    beta = r.params("reference").to_numpy()
    eta = np.column_stack([np.zeros(len(x)), x @ beta])
    prob = np.exp(eta - eta.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    k = prob.shape[1]
    resid = np.eye(k)[y][:, 1:] - prob[:, 1:]
    scores = np.hstack([x * resid[:, [j]] for j in range(k - 1)])
    bread = np.linalg.inv(_fisher_full(x, prob)[x.shape[1] :, x.shape[1] :])
    expected = bread @ scores.T @ scores @ bread
    np.testing.assert_allclose(r.cov_params().to_numpy(), expected, rtol=1e-6, atol=1e-12)


def test_ovr_equals_statsmodels_glm_and_hc0_cross_blocks(data):
    acts, x, y = data
    r = gi.refit_output_layer(acts, family="ovr", cov_type="HC0", progress=False)
    q = x.shape[1]
    cov = r.cov_params().to_numpy()
    scores, breads = [], []
    for j in range(10):
        g = sm.GLM((y == j).astype(float), x, family=sm.families.Binomial()).fit(
            tol=1e-12, cov_type="HC0"
        )
        np.testing.assert_allclose(r.params()[str(j)].to_numpy(), g.params, rtol=1e-6)
        np.testing.assert_allclose(cov[j * q : (j + 1) * q, j * q : (j + 1) * q], g.cov_params(), rtol=1e-6)
        mu = g.fittedvalues
        scores.append(x * ((y == j) - mu)[:, None])
        breads.append(np.linalg.inv((x * (mu * (1 - mu))[:, None]).T @ x))
    # Off-diagonal block (classes 2, 7) of the stacked sandwich, by hand.
    expected = breads[2] @ scores[2].T @ scores[7] @ breads[7]
    np.testing.assert_allclose(cov[2 * q : 3 * q, 7 * q : 8 * q], expected, rtol=1e-6, atol=1e-12)
    assert isinstance(r.results, dict) and set(r.results) == {str(j) for j in range(10)}


def test_cluster_matches_statsmodels(data):
    acts, x, y = data
    groups = np.arange(len(y)) // 5
    r = gi.refit_output_layer(acts, cov_type="cluster", cov_kwds={"groups": groups}, progress=False)
    slow = sm.MNLogit(y, x).fit(disp=0, cov_type="cluster", cov_kwds={"groups": groups})
    np.testing.assert_allclose(r.coefficients["se"], np.asarray(slow.bse).ravel("F"), rtol=1e-6)
    model_based = gi.refit_output_layer(acts, progress=False).coefficients["se"]
    assert np.abs(r.coefficients["se"] / model_based - 1).max() > 0.01


def test_gaussian_family_equals_ols(rng):
    x = rng.standard_normal((200, 3))
    yv = 1.0 + x @ [0.5, -1.0, 0.0] + rng.standard_normal(200)
    acts = make_acts(x, np.zeros(200, int), np.array([[0.5, -1.0, 0.0]]), np.array([1.0]),
                     link="identity", n_outputs=1)
    r = gi.refit_output_layer(acts, response=yv, progress=False)
    ols = sm.OLS(yv, sm.add_constant(x)).fit()
    np.testing.assert_allclose(r.params().iloc[:, 0], ols.params, rtol=1e-10)
    np.testing.assert_allclose(r.coefficients["se"], ols.bse, rtol=1e-8)
    np.testing.assert_allclose(r.fit_stats["deviance"], ols.ssr, rtol=1e-10)
    assert r.family == "gaussian"


def test_tables_and_display(res):
    c = res.coefficients
    assert list(c.columns[:13]) == [
        "class", "term", "coef", "se", "z", "p", "ci_lower", "ci_upper", "p_holm", "p_bh",
        "network_weight", "z_network", "p_network",
    ]
    assert c.loc[c["term"] == "const", "p_holm"].isna().all()
    units = c["term"] != "const"
    assert (c.loc[units, "p_holm"] >= c.loc[units, "p"] - 1e-15).all()
    z975 = 1.959963984540054
    np.testing.assert_allclose(c["ci_upper"] - c["coef"], z975 * c["se"], rtol=1e-10)
    ut = res.unit_tests
    assert list(ut["df"]) == [9] * 5
    # Unit test == statsmodels' own joint Wald test of the unit's 9 coefficients.
    names = [f"{cl}:{t}" for cl in res.classes for t in res.terms]
    r_mat = np.zeros((9, len(names)))
    for i, cl in enumerate(res.classes):
        r_mat[i, names.index(f"{cl}:act1:002")] = 1
    w = res.results.wald_test(r_mat, scalar=True)
    np.testing.assert_allclose(ut.loc[2, "statistic"], w.statistic, rtol=1e-8)
    assert res.classes == tuple(str(i) for i in range(1, 10))
    assert res.terms[0] == "const" and res.n_obs == 1500
    assert "RefitResult" in repr(res) and "<table" in res._repr_html_()
    assert res.summary.index.names == ["class", "term"]


def test_p_adjust_matches_multipletests(rng):
    from statsmodels.stats.multitest import multipletests

    from glminterp.refit import p_adjust

    p = np.concatenate([rng.random(40) ** 3, [0.01, 0.01, 1.0]])
    for method in ("holm", "fdr_bh"):
        np.testing.assert_allclose(p_adjust(p, method), multipletests(p, method=method)[1], rtol=1e-12)
