"""The block Fisher-vector product behind the matrix-free contrast SEs."""

import numpy as np
import pytest

from glminterp import engine as E
from glminterp.refit.contrasts import _block_hvp, solve_information


def _objective(n=300, p=3, k=5, chunk=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p))
    y = rng.integers(0, k, n)
    codes, _ = E.encode_classes(y)
    q = p + 1
    obj = E.MultinomialObjective(E.array_chunks(x, codes, None, chunk), q, k)
    flat = rng.normal(0, 0.3, q * (k - 1))
    obj.value_grad(flat)
    return obj, flat


@pytest.mark.parametrize("chunk", [64, 1000])
def test_block_product_equals_dense_information(chunk):
    obj, flat = _objective(chunk=chunk)
    fisher = E.symmetrize_upper(obj.fisher(flat))
    v = np.random.default_rng(1).standard_normal((obj.n_params, 4))
    got = _block_hvp(obj, flat, v)
    np.testing.assert_allclose(got, fisher @ v, rtol=1e-12, atol=1e-12 * np.abs(fisher @ v).max())
    # and column by column against the engine's one-vector product
    for c in range(v.shape[1]):
        np.testing.assert_allclose(got[:, c], obj.hvp(flat, v[:, c]), rtol=1e-12, atol=1e-10)


def test_solve_information_equals_dense_solve():
    obj, flat = _objective(n=500)
    fisher = E.symmetrize_upper(obj.fisher(flat))
    c = np.eye(obj.n_params)[:, [0, 3, 7]]
    x, n_prod, rel = solve_information(lambda v: _block_hvp(obj, flat, v), c, lambda r: r,
                                       rtol=1e-12)
    np.testing.assert_allclose(x, np.linalg.solve(fisher, c), rtol=1e-9, atol=1e-12)
    assert n_prod >= 3 and np.all(rel <= 1e-12)
