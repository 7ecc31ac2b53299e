"""The fit's pieces beyond the floor: products without temporaries, the factor's upper copy."""

from __future__ import annotations

import numpy as np
import pytest
from _glm_sim import relu_features

from glminterp import engine as E


@pytest.fixture(scope="module")
def data():
    return relu_features(1500, 40, 4, seed=5)


def _hvp_before(x, probs, v):
    """The product as the engine computed it before buffers (one temporary per block)."""
    rows = E._cache_rows(x.shape[1])
    out = np.zeros((x.shape[1] + 1, v.shape[1]))
    for i in range(0, x.shape[0], rows):
        xb, pb = x[i : i + rows], probs[i : i + rows]
        u = pb * E._lin(xb, v)
        u -= pb * u.sum(axis=1, keepdims=True)
        out += E._tlin(xb, u)
    return out


@pytest.mark.parametrize("n", [7, 64, 1000])  # one short block, exactly one, many + a tail
def test_hvp_bit_for_bit_as_before_and_equal_to_the_matrix(data, n, monkeypatch):
    x, _ = data
    monkeypatch.setattr(E, "_CACHE_BYTES", 8 * 40 * 64)  # 64-row blocks: the tail is short
    rng = np.random.default_rng(1)
    beta = rng.normal(0, 0.3, (41, 3))
    probs = E.multinomial_probs(x[:n], beta)[0]
    v = rng.standard_normal((41, 3))
    got = E.multinomial_hvp_chunk(x[:n], probs, v)
    np.testing.assert_array_equal(got, _hvp_before(x[:n], probs, v))
    f = E.symmetrize_upper(E.multinomial_fisher_chunk(x[:n], probs))
    want = (f @ v.ravel(order="F")).reshape(v.shape, order="F")
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11 * np.abs(want).max())


def test_factor_copies_the_upper_triangle_only():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((700, 600))
    f = np.asfortranarray(a.T @ a + np.eye(600))
    g = np.asfortranarray(f + np.diag(np.full(600, 5.0)))
    u = E.cholesky_into(f)  # new matrix: upper copy, lower never written
    np.testing.assert_array_equal(np.tril(u, -1), 0.0)
    np.testing.assert_allclose(u, np.linalg.cholesky(f).T, rtol=0, atol=1e-12)
    u2 = E.cholesky_into(g, u, out_lower_zero=True)  # reused, as the Newton iterations do
    assert u2 is u
    np.testing.assert_array_equal(np.tril(u2, -1), 0.0)
    np.testing.assert_allclose(u2, np.linalg.cholesky(g).T, rtol=0, atol=1e-12)
    junk = np.asfortranarray(rng.standard_normal((600, 600)))
    u3 = E.cholesky_into(f, junk)  # an arbitrary buffer: copied whole, lower cleaned
    np.testing.assert_array_equal(np.tril(u3, -1), 0.0)
    np.testing.assert_allclose(u3, np.linalg.cholesky(f).T, rtol=0, atol=1e-12)
    cov = E.CholeskyCovariance(u2)
    np.testing.assert_allclose(cov.variances, np.diag(np.linalg.inv(g)), rtol=1e-12)


@pytest.mark.parametrize("method", ["newton", "newton-cg"])
def test_reused_factor_gives_the_dense_inverse_and_counts(data, method, monkeypatch):
    x, y = data
    calls = {"value_grad": 0, "fisher": 0}
    vg, fi = E.MultinomialObjective.value_grad, E.MultinomialObjective.fisher

    def counted_vg(self, flat):
        calls["value_grad"] += 1
        return vg(self, flat)

    def counted_fisher(self, flat, out=None):
        calls["fisher"] += 1
        return fi(self, flat, out)

    monkeypatch.setattr(E.MultinomialObjective, "value_grad", counted_vg)
    monkeypatch.setattr(E.MultinomialObjective, "fisher", counted_fisher)
    res = E.fit_multinomial(x, y, method=method, tol=1e-10)
    assert res.converged
    # full Newton reuses the factor's buffer every iteration (upper copies only)
    assert res.n_fisher == calls["fisher"] == (res.n_iter if method == "newton" else 1)
    assert res.plan["n_eval"] == calls["value_grad"]
    dense = np.linalg.inv(res.fisher)
    np.testing.assert_allclose(res.bse.ravel(order="F"), np.sqrt(np.diag(dense)), rtol=1e-11)
    np.testing.assert_allclose(res.cov, dense, rtol=1e-10, atol=1e-13 * np.abs(dense).max())
