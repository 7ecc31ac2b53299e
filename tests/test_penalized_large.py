"""Ridge above 500 parameters (Newton-CG path) equals the estimator defined on statsmodels' pieces."""

from __future__ import annotations

import numpy as np
import statsmodels.api as sm
from _glm_sim import relu_features

from glminterp.refit.penalized import fit_ridge


def test_ridge_newton_cg_path_matches_statsmodels_scores_and_sandwich():
    x, y = relu_features(900, 60, 10, seed=3)  # 61 * 9 = 549 parameters
    lam = 3.0
    res = fit_ridge(x, y, lam=lam, chunk_size=128)
    assert res.converged
    b = res.params.to_numpy().ravel(order="F")
    assert b.size > 500
    model = sm.MNLogit(y, sm.add_constant(x))
    d = np.tile(np.r_[0.0, np.ones(60)], 9)
    np.testing.assert_allclose(model.score(b) - lam * d * b, 0, atol=1e-6)
    psi = model.score_obs(b) - lam * d * b / len(y)
    h_inv = np.linalg.inv(-model.hessian(b) + lam * np.diag(d))
    ref = h_inv @ psi.T @ psi @ h_inv
    np.testing.assert_allclose(res.cov, ref, rtol=1e-6, atol=1e-10 * np.abs(ref).max())
