"""Ridge with sandwich covariance, and principal-component reduction."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from _glm_sim import relu_features
from scipy import optimize

from glminterp import engine as E
from glminterp.refit.penalized import fit_pca, fit_ridge


@pytest.fixture(scope="module")
def data():
    return relu_features(800, 6, 3, seed=7)


def test_ridge_binomial_matches_direct_optimisation_and_sandwich(data):
    x, y = data
    yb = (y == 1).astype(float)
    lam = 5.0
    res = fit_ridge(x, yb, lam=lam, family="binomial")
    assert res.converged and "penalized inference" in res.inference
    model = sm.Logit(yb, sm.add_constant(x))
    d = np.r_[0.0, np.ones(6)]

    def neg(b):
        return -(model.loglike(b) - 0.5 * lam * np.sum(d * b**2))

    def jac(b):
        return -(model.score(b) - lam * d * b)

    opt = optimize.minimize(neg, np.zeros(7), jac=jac, method="BFGS", options={"gtol": 1e-10})
    b = res.params["coef"].to_numpy()
    np.testing.assert_allclose(b, opt.x, rtol=1e-6, atol=1e-8)
    # sandwich from statsmodels' per-observation scores and Hessian
    psi = model.score_obs(b) - lam * d * b / len(yb)
    h_inv = np.linalg.inv(-model.hessian(b) + lam * np.diag(d))
    np.testing.assert_allclose(res.cov, h_inv @ psi.T @ psi @ h_inv, rtol=1e-8)


def test_ridge_multinomial_sandwich_against_statsmodels_scores(data):
    x, y = data
    lam = 2.0
    res = fit_ridge(x, y, lam=lam)
    b = res.params.to_numpy().ravel(order="F")
    model = sm.MNLogit(y, sm.add_constant(x))
    d = np.tile(np.r_[0.0, np.ones(6)], 2)
    np.testing.assert_allclose(model.score(b) - lam * d * b, 0, atol=1e-7)
    psi = model.score_obs(b) - lam * d * b / len(y)
    h_inv = np.linalg.inv(-model.hessian(b) + lam * np.diag(d))
    np.testing.assert_allclose(res.cov, h_inv @ psi.T @ psi @ h_inv, rtol=1e-7, atol=1e-12)
    # shrinkage: slopes smaller in norm than the MLE's
    mle = E.fit_multinomial(x, y)
    assert np.linalg.norm(res.params.to_numpy()[1:]) < np.linalg.norm(mle.params[1:])
    table = res.summary_frame()
    assert set(table["inference"]) == {res.inference}
    assert len(table) == 14


def test_ridge_tiny_penalty_is_mle_with_hc0(data):
    x, y = data
    yb = (y == 2).astype(float)
    res = fit_ridge(x, yb, lam=1e-9, family="binomial")
    hc0 = sm.Logit(yb, sm.add_constant(x)).fit(disp=0, tol=1e-12, cov_type="HC0")
    np.testing.assert_allclose(res.params["coef"], hc0.params, rtol=1e-6)
    np.testing.assert_allclose(res.bse["coef"], hc0.bse, rtol=1e-6)
    with pytest.raises(ValueError, match="lam must be positive"):
        fit_ridge(x, yb, lam=0.0, family="binomial")


def test_pca_full_rank_equals_mle_and_loadings(data):
    x, y = data
    mle = E.fit_multinomial(x, y)
    pca = fit_pca(x, y, n_components=6)
    np.testing.assert_allclose(pca.unit_params.to_numpy(), mle.params, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(pca.unit_cov, mle.cov, rtol=1e-6, atol=1e-10)
    v = pca.loadings.to_numpy()
    np.testing.assert_allclose(v.T @ v, np.eye(6), atol=1e-10)
    assert pca.explained_variance_ratio.is_monotonic_decreasing


def test_pca_reduced_rank_and_top_units():
    rng = np.random.default_rng(8)
    f = rng.standard_normal((500, 2))
    x = np.column_stack([f[:, 0] * 3, f[:, 0] * 3 + 0.01 * rng.standard_normal(500),
                         f[:, 1], 0.1 * rng.standard_normal(500)])
    y = (rng.random(500) < 1 / (1 + np.exp(-f[:, 0]))).astype(int)
    pca = fit_pca(x, y, n_components=2, family="binomial")
    top = pca.top_units(2)
    assert set(top.loc[top.component == "PC1", "unit"]) == {"x1", "x2"}
    assert np.linalg.matrix_rank(pca.unit_cov, tol=1e-10) == 3  # intercept + 2 components
    # the mapped coefficients reproduce the component model's linear predictor
    eta_units = pca.unit_params.to_numpy()[0, 0] + x @ pca.unit_params.to_numpy()[1:, 0]
    scores = (x - x.mean(0)) @ pca.loadings.to_numpy()
    eta_pc = pca.fit.params[0] + scores @ pca.fit.params[1:]
    np.testing.assert_allclose(eta_units, eta_pc, atol=1e-10)
    with pytest.raises(ValueError, match="n_components"):
        fit_pca(x, y, n_components=5, family="binomial")
