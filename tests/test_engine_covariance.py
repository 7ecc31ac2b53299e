"""SEs from the triangular inverse, the full covariance formed once on first access."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import statsmodels.api as sm
from _glm_sim import relu_features

from glminterp import engine as E


@pytest.fixture(scope="module")
def data():
    return relu_features(2500, 30, 5, seed=21)


@pytest.fixture(scope="module")
def own(data):
    x, y = data
    return sm.MNLogit(y, sm.add_constant(x)).fit(method="newton", disp=0, tol=1e-12)


@pytest.mark.parametrize("method", ["newton", "newton-cg"])
def test_ses_equal_statsmodels_and_the_dense_inverse(data, own, method):
    x, y = data
    before = E._N_INVERSES
    res = E.fit_multinomial(x, y, method=method)
    assert not res.covariance.formed and E._N_INVERSES == before  # SEs need no full inverse
    dense = np.linalg.inv(res.fisher)  # LAPACK getri: another route to the inverse
    np.testing.assert_allclose(res.bse.ravel(order="F"), np.sqrt(np.diag(dense)), rtol=1e-10)
    np.testing.assert_allclose(res.bse, own.bse, rtol=1e-8)
    np.testing.assert_allclose(res.params, own.params, rtol=1e-8, atol=1e-10)
    se = res.bse
    cov = res.cov  # formed now, once
    assert res.covariance.formed and E._N_INVERSES == before + 1
    np.testing.assert_allclose(cov, dense, rtol=1e-9, atol=1e-12 * np.abs(dense).max())
    np.testing.assert_array_equal(cov, cov.T)
    np.testing.assert_allclose(cov, own.cov_params(), rtol=1e-7, atol=1e-10)
    assert not cov.flags.writeable and not res.fisher.flags.writeable
    assert res.cov is cov and E._N_INVERSES == before + 1
    np.testing.assert_array_equal(res.bse, se)  # the SEs do not change when it is formed
    np.testing.assert_allclose(se.ravel(order="F"), np.sqrt(np.diag(cov)), rtol=1e-12)


def test_to_statsmodels_gets_the_one_covariance(data, own):
    x, y = data
    res = E.fit_multinomial(x, y, method="newton-cg")
    before = E._N_INVERSES
    out = res.to_statsmodels(x, y)  # forms it (first access) and hands it over
    again = res.to_statsmodels(x, y)
    assert E._N_INVERSES == before + 1
    assert np.shares_memory(np.asarray(out.cov_params()), res.cov) or np.array_equal(
        np.asarray(out.cov_params()), res.cov)
    np.testing.assert_array_equal(np.asarray(again.cov_params()), res.cov)
    np.testing.assert_allclose(out.bse, own.bse, rtol=1e-8)


def test_copies_share_the_covariance_and_pickle(data):
    x, y = data
    res = E.fit_multinomial(x[:, :8], y)
    twin = dataclasses.replace(res, weighted=False)  # e.g. the binomial fit's weighted flag
    before = E._N_INVERSES
    assert twin.cov is res.cov and E._N_INVERSES == before + 1
    fresh = E.fit_multinomial(x[:, :8], y)
    back = pickle.loads(pickle.dumps(fresh))  # not formed yet: the triangle travels
    assert not back.covariance.formed
    np.testing.assert_array_equal(back.bse, fresh.bse)
    np.testing.assert_allclose(back.cov, res.cov, rtol=1e-12, atol=1e-15)
    formed = pickle.loads(pickle.dumps(res))
    np.testing.assert_array_equal(formed.cov, res.cov)


def test_binomial_and_a_given_matrix(data):
    x, y = data
    yb = (y == 1).astype(float)
    res = E.fit_binomial(x, yb)
    logit = sm.Logit(yb, sm.add_constant(x)).fit(disp=0, method="newton", tol=1e-12)
    np.testing.assert_allclose(res.bse, logit.bse, rtol=1e-8)
    np.testing.assert_allclose(res.cov, logit.cov_params(), rtol=1e-7, atol=1e-12)
    wrapped = dataclasses.replace(res, covariance=np.array(res.cov))  # plain ndarray: wrapped
    assert wrapped.covariance.formed
    np.testing.assert_allclose(wrapped.bse, res.bse, rtol=1e-13)  # diag of the matrix


def test_cholesky_into_and_triangular_inverse():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((60, 40))
    f = np.asfortranarray(a.T @ a + np.eye(40))
    keep = f.copy()
    u = E.cholesky_into(f)
    np.testing.assert_array_equal(f, keep)  # the information is left as it was
    np.testing.assert_array_equal(np.tril(u, -1), 0.0)
    np.testing.assert_allclose(u.T @ u, f, rtol=1e-13, atol=1e-12)
    cov = E.CholeskyCovariance(u)
    np.testing.assert_allclose(cov.variances, np.diag(np.linalg.inv(f)), rtol=1e-12)
    np.testing.assert_allclose(cov.matrix(), np.linalg.inv(f), rtol=1e-11, atol=1e-14)
    with pytest.raises(E.FisherSingularError, match="not positive definite"):
        E.cholesky_into(np.asfortranarray(np.diag([1.0, -1.0, 2.0])))


def test_to_statsmodels_skips_the_rank_qr_the_fit_already_proved(data, monkeypatch):
    import scipy.linalg

    x, y = data
    res = E.fit_multinomial(x, y)
    calls = {"qr": 0}
    real_qr = scipy.linalg.qr

    def counting_qr(*args, **kw):
        calls["qr"] += 1
        return real_qr(*args, **kw)

    monkeypatch.setattr(scipy.linalg, "qr", counting_qr)
    default = res.to_statsmodels(x, y)
    assert calls["qr"] == 0
    checked = res.to_statsmodels(x, y, check_rank=True)
    assert calls["qr"] >= 1  # statsmodels' own QR when asked
    assert default.df_model == checked.df_model and default.df_resid == checked.df_resid
    np.testing.assert_array_equal(np.asarray(default.bse), np.asarray(checked.bse))
