"""The block-by-block information build equals the naive sum over rows, on every path."""

from __future__ import annotations

import numpy as np
import pytest
from _glm_sim import relu_features

from glminterp import engine as E


def _naive(x, probs):
    """``sum_n (diag(p_n) - p_n p_n') (x) x1_n x1_n'`` in long double, class-major layout."""
    x1 = np.column_stack([np.ones(len(x)), x]).astype(np.longdouble)
    p = probs.astype(np.longdouble)
    w = -np.einsum("na,nc->nac", p, p)
    j = p.shape[1]
    w[:, np.arange(j), np.arange(j)] = p * (1 - p)
    q = x1.shape[1]
    out = np.einsum("nac,nt,nu->atcu", w, x1, x1).reshape(j * q, j * q)
    return out.astype(np.float64)


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def design():
    x, _ = relu_features(1300, 9, 5, seed=4)
    beta = np.random.default_rng(1).normal(0, 0.3, (10, 4))
    return x, E.multinomial_probs(x, beta)[0]


def test_block_build_equals_naive_sum(design):
    x, probs = design
    ref = _naive(x, probs)
    whole = E.multinomial_fisher([(x, probs)])
    assert _rel(whole, ref) < 1e-12
    np.testing.assert_array_equal(whole, whole.T)  # both triangles written, exactly mirrored
    parts = [(x[i : i + 97], probs[i : i + 97]) for i in range(0, len(x), 97)]
    assert _rel(E.multinomial_fisher(parts), ref) < 1e-12
    # written over a used buffer (every entry is written, nothing needs zeroing)
    buf = np.full_like(whole, np.nan, order="F")
    assert _rel(E.multinomial_fisher(parts, out=buf), ref) < 1e-12


@pytest.mark.parametrize("rows", [200, 700])  # below / above _BLOCKS_MIN_ROWS
def test_per_chunk_kernel_keeps_its_upper_triangle_contract(design, rows):
    x, probs = design
    ref = _naive(x, probs)
    out = None
    for i in range(0, len(x), rows):
        out = E.multinomial_fisher_chunk(x[i : i + rows], probs[i : i + rows], out)
    assert _rel(E.symmetrize_upper(out), ref) < 1e-12


def test_objective_in_memory_and_out_of_core_paths_agree(design):
    x, _ = design
    y = np.random.default_rng(2).integers(0, 5, len(x))
    codes, _ = E.encode_classes(y)
    mem = E.array_chunks(x, codes, None, 256)

    def stream():  # no in_memory mark: the one-pass, chunk-by-chunk path
        yield from mem()

    flat = np.random.default_rng(3).normal(0, 0.2, 40)
    a = E.MultinomialObjective(mem, 10, 5).fisher(flat)
    b = E.MultinomialObjective(stream, 10, 5)
    fb = b.fisher(flat)
    assert _rel(fb, a) < 1e-12
    assert _rel(b.fisher(flat, out=fb), a) < 1e-12  # reusing the last matrix (Newton path)
    assert _rel(a, _naive(x, E.multinomial_probs(x, flat.reshape(10, 4, order="F"))[0])) < 1e-12


def test_saturated_probabilities_no_cancellation():
    """p_a near 1: the block build weights rows by p_a (1 - p_a) directly; the stacked form
    (X1' diag(p_a) X1 - X1' diag(p_a^2) X1) loses ~9 digits to cancellation."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((800, 4))
    probs = np.full((800, 2), 1e-12)
    probs[:400, 0] = 1 - 1e-9 - 1e-12
    probs[400:, 1] = 1 - 1e-9 - 1e-12
    ref = _naive(x, probs)
    assert _rel(E.multinomial_fisher([(x, probs)]), ref) < 1e-12
    stacked = E.symmetrize_upper(E._fisher_stacked(x, probs, np.zeros((10, 10), order="F")))
    assert _rel(stacked, ref) > 1e-10  # why the old build was replaced


def test_hvp_and_score_in_cache_blocks_equal_one_block(design, monkeypatch):
    x, probs = design
    y = np.random.default_rng(6).integers(0, 5, len(x))
    codes, _ = E.encode_classes(y)
    beta = np.random.default_rng(7).normal(0, 0.3, (10, 4))
    v = np.random.default_rng(8).standard_normal((10, 4))
    one = E.multinomial_hvp_chunk(x, probs, v), E.multinomial_loglike_grad_chunk(x, codes, beta)
    monkeypatch.setattr(E, "_CACHE_BYTES", 8 * 10 * 37)  # blocks of 37 rows
    assert E._cache_rows(10) == 37
    np.testing.assert_allclose(E.multinomial_hvp_chunk(x, probs, v), one[0], rtol=1e-12)
    ll, g, pr = E.multinomial_loglike_grad_chunk(x, codes, beta)
    assert ll == pytest.approx(one[1][0], rel=1e-13)
    np.testing.assert_allclose(g, one[1][1], rtol=1e-11, atol=1e-12)
    np.testing.assert_array_equal(pr, one[1][2])
    f = _naive(x, probs)
    np.testing.assert_allclose(one[0].ravel(order="F"), f @ v.ravel(order="F"), rtol=1e-10)


def test_dense_matrix_is_zero_fortran_and_mmap_backed_when_large():
    small, big = E.dense_matrix(100), E.dense_matrix(1200)  # 80 KB, 11.5 MB
    for a in (small, big):
        assert a.flags.f_contiguous and a.flags.writeable and not a.any()
    assert big.base is not None and small.base is None
    big[3, 5] = 1.0
    assert big.sum() == 1.0
