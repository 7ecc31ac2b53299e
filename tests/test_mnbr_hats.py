"""Multinomial bias reduction: the fast kernels of one evaluation equal their definitions.

- leverage blocks ``V_n[a, c] = x1_n' (I^-1)_{ac} x1_n`` by triangular products over the
  symmetric class pairs (glminterp.refit.mnbr_hats) equal the row loop over the definition to
  1e-12 (float64), and to float32 rounding from a float32 inverse;
- the float32 block build of the centred information (glminterp.refit.mnbr_single) equals the
  engine's float64 block build, mapped to centred coordinates, to float32 rounding;
- the hat values of a float32 point, and of the MLE-start point (float64 factor, float32 hats
  from the given covariance), equal the float64 ones.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_mnbr import _sim

from glminterp.engine import add_const, multinomial_fisher, multinomial_probs
from glminterp.refit import mnbr
from glminterp.refit.mnbr_hats import leverage_blocks, pair_triangles
from glminterp.refit.mnbr_single import F32, SingleDesign, inverse32


def _setup(n=300, p=6, k=5, seed=11):
    x, y = _sim(n=n, p=p, k=k, seed=seed)
    x = x + 2.0  # offset units: centring matters for float32
    beta = np.random.default_rng(seed).normal(0, 0.3, (p + 1, k - 1))
    probs = multinomial_probs(x, beta)[0]
    fisher = multinomial_fisher([(x, probs)])
    return x, y, beta, probs, fisher


def _definition(x1, inv, j):
    """``V_n`` row by row from the definition (no symmetry used)."""
    n, q = x1.shape
    out = np.empty((n, j, j))
    for i in range(n):
        xn = np.kron(np.eye(j), x1[i])  # (J, J q): row a is x1_n in block a
        out[i] = xn @ inv @ xn.T
    return out


def test_pair_triangles_give_the_quadratic_forms():
    rng = np.random.default_rng(0)
    s = rng.standard_normal((12, 12))
    inv = s @ s.T
    tri = pair_triangles(inv, 4, 3)
    assert len(tri) == 6 and all(np.allclose(t, np.triu(t)) for t in tri)
    v = rng.standard_normal(4)
    blocks = [(a, c) for a in range(3) for c in range(a, 3)]
    for t, (a, c) in zip(tri, blocks):
        assert v @ t @ v == pytest.approx(v @ inv[a * 4:(a + 1) * 4, c * 4:(c + 1) * 4] @ v,
                                          rel=1e-12)
    # only the upper triangle is read (LAPACK potri output)
    junk = np.triu(inv) + np.tril(rng.standard_normal((12, 12)), -1)
    for t, u in zip(pair_triangles(junk, 4, 3), tri):
        np.testing.assert_array_equal(t, u)


def test_leverage_blocks_equal_the_definition(monkeypatch):
    x, _, _, _, fisher = _setup()
    x1, inv = add_const(x), np.linalg.inv(fisher)
    ref = _definition(x1, inv, 4)
    monkeypatch.setattr("glminterp.refit.mnbr_hats._ROWS", 37)  # several row blocks
    v = leverage_blocks(x1, inv, 4)
    np.testing.assert_allclose(v, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    assert np.array_equal(v, v.transpose(0, 2, 1))
    # the old path (the general products over the pairs) agrees too
    old = mnbr.hats_from_blocks(ref, multinomial_probs(x, np.zeros((7, 4)))[0])
    new = mnbr.hat_quantities_chunk(x, multinomial_probs(x, np.zeros((7, 4)))[0], inv)
    np.testing.assert_allclose(new, old, rtol=1e-12, atol=1e-15)


def test_float32_leverage_blocks_and_information():
    x, _, _, probs, fisher = _setup()
    design = SingleDesign(x, 5)
    fc = design.center_fisher(fisher)
    f32 = design.fisher(probs)
    assert f32.dtype == F32 and np.array_equal(f32, f32.T)
    np.testing.assert_allclose(f32, fc, rtol=1e-5, atol=1e-6 * np.abs(fc).max())
    c = np.linalg.cholesky(fc).T.astype(F32)
    inv = inverse32(c)
    np.testing.assert_allclose(np.triu(inv), np.triu(np.linalg.inv(fc)), rtol=1e-3,
                               atol=1e-5 * np.abs(np.linalg.inv(fc)).max())
    ref = _definition(add_const(x), np.linalg.inv(fisher), 4)  # leverages: coordinate-free
    v = leverage_blocks(design.x1c, inv, 4)
    assert v.dtype == F32
    np.testing.assert_allclose(v, ref, rtol=1e-3, atol=1e-5 * np.abs(ref).max())
    np.testing.assert_allclose(inverse32(c, symmetric=True), np.linalg.inv(fc), rtol=1e-3,
                               atol=1e-5 * np.abs(np.linalg.inv(fc)).max())


def test_mle_start_point_uses_float64_factor_and_float32_hats():
    x, y, beta, _, fisher = _setup()
    onehot = np.eye(5)[y][:, 1:]
    full = mnbr._evaluate(x, onehot, beta, chunk=64)
    trace = {"single": SingleDesign(x, 5), "n_single": 0, "n_fisher": 0}
    pt = mnbr._first_point(x, onehot, beta, 64, trace, fisher, np.linalg.inv(fisher))
    assert pt.single is not None and trace["n_single"] == 1 and pt.noise == 0.0
    assert pt.logdet == pytest.approx(full.logdet, rel=1e-12)
    r = np.random.default_rng(5).standard_normal(beta.shape)
    np.testing.assert_allclose(pt.solve(r), full.solve(r), rtol=1e-10, atol=1e-12)
    h64 = full.hats(x, 64)
    np.testing.assert_allclose(pt.hats(x, 64), h64, rtol=1e-4, atol=1e-6 * h64.max())
    single = mnbr._evaluate_single(trace["single"], x, onehot, beta, chunk=64)
    np.testing.assert_allclose(single.hats(x, 64), h64, rtol=1e-4, atol=1e-6 * h64.max())


def test_float32_information_ignores_negligible_weights():
    """Rows whose class probabilities are below float32's range add nothing measurable; their
    weights are zeroed (no subnormal arithmetic) and the block build still equals float64's."""
    x, _, _, probs, _ = _setup()
    probs = probs.copy()
    probs[:40, 0] = 1e-36  # a far-separated corner: p below 1e-30
    probs[40:80, 1] = 1e-20
    design = SingleDesign(x, 5)
    fc = design.center_fisher(multinomial_fisher([(x, probs)]))
    f32 = design.fisher(probs)
    assert np.all(np.isfinite(f32))
    np.testing.assert_allclose(f32, fc, rtol=1e-5, atol=1e-6 * np.abs(fc).max())
