"""Fast, exact Newton refits of multinomial and binomial logit models (numpy).

statsmodels' ``MNLogit(method="newton")`` rebuilds its Hessian block by block, (K-1)^2 separate
products, at every iteration. This engine computes the same maximum-likelihood estimate and the
same inverse Fisher information, faster:

- the Fisher information ``I = sum_n (diag(p_n) - p_n p_n') (x) x_n x_n'`` is built block by
  block: block ``(a, c)`` is the symmetric ``X' diag(w) X`` (``w = p_a (1 - p_a)`` or
  ``-p_a p_c``), one symmetric rank-k update (BLAS ``syrk``) on ``sqrt(|w|) X``, ``K(K-1)/2``
  of them (:func:`multinomial_fisher`); memory is bounded by a row block and the
  ``((K-1)(p+1))^2`` matrix;
- ``method="newton-cg"`` reaches the optimum with Hessian-vector products (``O(N p K)`` each,
  preconditioned conjugate gradients, Armijo line search) and builds one full information matrix
  at the end, for the covariance and a last exact Newton step;
- the information and its Cholesky factor live in two matrices allocated once; the standard
  errors come from one triangular inverse of the factor, and the full covariance is formed from
  it on first access, once (:class:`CholeskyCovariance`);
- ``method="newton"`` is plain Newton with the full matrix every iteration and step halving;
  ``method="auto"`` (default) picks Newton-CG above 500 parameters.

Layout follows statsmodels: the design gets an intercept as its first column ("const"); for the
multinomial the first sorted class is the baseline and ``params`` is the ``(p + 1, K - 1)``
matrix, flattened in Fortran order (class-major) for ``cov``. :meth:`EngineResult.to_statsmodels`
hands the optimum to statsmodels so users get the results object they know.

The per-chunk kernels (``*_chunk``) are pure functions of one block of rows; the out-of-core and
Dask refits in :mod:`glminterp.scale` reuse them, so all paths compute the same sums.
"""

from __future__ import annotations

import dataclasses
import mmap
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.linalg import LinAlgError, cho_factor, cho_solve
from scipy.linalg.blas import dsyrk
from scipy.linalg.lapack import dlauum, dpotrf, dpotri, dtrtri
from scipy.special import expit, log_expit

METHODS: tuple[str, ...] = ("auto", "newton", "newton-cg")
_AUTO_CG_MIN_PARAMS = 500  # below this a full information matrix is cheaper than CG
_CHUNK_BYTES = 32 * 2**20  # working memory per chunk of the stacked design
_FISHER_BUFFER = 2**18  # elements of one weighted row block of the information build (2 MiB)
_BLOCKS_MIN_ROWS = 512  # a chunk this short builds faster as one stacked syrk (fewer adds)
_CACHE_BYTES = 2**19  # row blocks of this many bytes stay in (L2) cache between two products
_MMAP_MIN_BYTES = 4 * 2**20  # matrices this large come from an anonymous mmap (dense_matrix)
_MEMORY_FRACTION = 0.8  # of the memory available at fit time that the full covariance may use
_N_INVERSES = 0  # full inverses computed in this process (the tests count them)
# Cost model (flops per second relative to a Fisher-vector product, one BLAS thread, measured
# on the benchmark design at p = 1024, K = 10: HVP ~13 GF/s in cache-sized row blocks, the
# block syrks ~47, potrf ~52): the product is two narrow (J-column) matrix products; the
# information matrix J(J+1)/2 syrks (BLAS-3), the Cholesky about as fast.
_RATE_FISHER = 3.5  # syrk flops/s over HVP flops/s
_RATE_CHOL = 4.0  # potrf/potri flops/s over HVP flops/s
_CG_SHARE = 0.3  # of one information matrix + Cholesky that Newton-CG may spend in products
_FORCING = "score"  # inner CG tolerance rule ("ew": Eisenstat-Walker choice 2)
_ROUNDING = 1e3 * np.finfo(float).eps  # predicted gains below this times |llf| are noise


class FisherSingularError(ValueError):
    """The Fisher information is not positive definite (collinear design or separation)."""


class CovarianceMemoryError(MemoryError):
    """The full information matrix and its inverse do not fit in the memory available.

    Attributes
    ----------
    n_params : int
    needed, available : int
        Bytes the full covariance needs and bytes allowed.
    """

    def __init__(self, message: str, *, n_params: int, needed: int, available: int):
        super().__init__(message)
        self.n_params, self.needed, self.available = int(n_params), int(needed), int(available)


# ============================================================================ per-chunk kernels
# Kernels take the design WITHOUT its intercept column and treat the intercept implicitly, so
# no chunk is ever copied just to prepend a column of ones.


def add_const(x: np.ndarray) -> np.ndarray:
    """Return ``[1, x]`` as a new float64 C-contiguous array (intercept first)."""
    out = np.empty((x.shape[0], x.shape[1] + 1), dtype=np.float64)
    out[:, 0] = 1.0
    out[:, 1:] = x
    return out


def _lin(x: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``[1, x] @ beta`` without forming ``[1, x]``."""
    return x @ beta[1:] + beta[0]


def _tlin(x: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``[1, x]' @ r`` without forming ``[1, x]``."""
    top = r.sum(axis=0, keepdims=r.ndim > 1)
    return np.concatenate([np.atleast_1d(top) if r.ndim == 1 else top, x.T @ r], axis=0)


def multinomial_probs(x: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of classes 1..K-1 and the log normaliser, computed stably.

    Parameters
    ----------
    x : ndarray, shape (n, p)
        Design without intercept.
    beta : ndarray, shape (p + 1, J)
        Reference-parametrization coefficients (J = K - 1), intercept in row 0.

    Returns
    -------
    probs : ndarray, shape (n, J)
    lse : ndarray, shape (n,)
        ``log(1 + sum_j exp(eta_j))``, so that ``log p_0 = -lse``.
    """
    return _probs_of(_lin(x, beta))


def _probs_of(eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.maximum(eta.max(axis=1), 0.0)
    e = np.exp(eta - m[:, None])
    s = np.exp(-m) + e.sum(axis=1)
    lse = m + np.log(s)
    return e / s[:, None], lse


def _cache_rows(p: int) -> int:
    """Rows of a ``p``-column design that stay in cache between its two narrow products."""
    return max(32, _CACHE_BYTES // (8 * max(1, p)))


def multinomial_loglike_grad_chunk(
    x: np.ndarray, codes: np.ndarray, beta: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Log-likelihood, score ``X1'(Y - P)`` ``(p + 1, J)`` and probabilities of one chunk.

    ``codes`` are integer class codes in ``0..K-1`` (0 = baseline). Long chunks are walked in
    cache-sized row blocks (``x`` is read twice: ``x beta``, then ``x'(Y - P)``).
    """
    n, rows = x.shape[0], _cache_rows(x.shape[1])
    if n <= rows:
        return _loglike_grad_block(x, codes, beta)
    llf, grad, probs = 0.0, np.zeros_like(beta, dtype=np.float64), np.empty((n, beta.shape[1]))
    for i in range(0, n, rows):
        sl = slice(i, i + rows)
        ll, g, probs[sl] = _loglike_grad_block(x[sl], codes[sl], beta)
        llf += ll
        grad += g
    return llf, grad, probs


def _loglike_grad_block(x, codes, beta):
    eta = _lin(x, beta)
    probs, lse = _probs_of(eta)
    rows = np.flatnonzero(codes > 0)
    cols = codes[rows] - 1
    llf = float(np.sum(eta[rows, cols]) - np.sum(lse))
    resid = -probs
    resid[rows, cols] += 1.0
    return llf, _tlin(x, resid), probs


def multinomial_fisher_chunk(
    x: np.ndarray, probs: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """Add one chunk's Fisher information to ``out`` (upper triangle only).

    Block ``(a, c)`` of ``I`` is ``X1' diag(w) X1`` (``X1 = [1, x]``) with ``w = p_a (1 - p_a)``
    on the diagonal and ``-p_a p_c`` off it; :func:`multinomial_fisher` computes each block as
    one symmetric ``syrk``. Chunks shorter than ``_BLOCKS_MIN_ROWS`` rows use the stacked form
    instead (one ``syrk`` on ``A = [p_1 X1, ..., p_J X1]``: more flops, but no per-block adds).
    Call :func:`symmetrize_upper` once after the last chunk. ``out`` (Fortran order, shape
    ``(Jq, Jq)``) is updated in place when given.
    """
    q, j = x.shape[1] + 1, probs.shape[1]
    if out is None:
        out = np.zeros((j * q, j * q), order="F")
    if x.shape[0] < _BLOCKS_MIN_ROWS:
        return _fisher_stacked(x, probs, out)
    return _fisher_blocks([(x, probs)], out, accumulate=True)


def multinomial_fisher(parts, out: np.ndarray | None = None) -> np.ndarray:
    """The whole (symmetric) Fisher information from in-memory ``(x, probs)`` row chunks.

    Each of the ``J(J+1)/2`` blocks ``X1' diag(w) X1`` is symmetric: one ``syrk`` on
    ``sqrt(|w|) X1`` over all rows builds its upper triangle, which is mirrored into both
    ``(a, c)`` and ``(c, a)``. That is ``(J+1)/(2J)`` of the flops of one ``syrk`` on the
    stacked design (which computes the off-diagonal blocks in full: 44% fewer at K=10), with
    no cancellation (the stacked form subtracts ``X1' diag(p_a^2) X1`` from
    ``X1' diag(p_a) X1``), and every entry written once (``out`` need not be zeroed).

    Parameters
    ----------
    parts : list of (ndarray, ndarray)
        ``(x, probs)`` chunks: design without intercept ``(n_i, p)``, probabilities of classes
        1..K-1 ``(n_i, J)``. The rows are read once per block, so they must be in memory.
    out : ndarray, optional
        ``(Jq, Jq)`` Fortran-order matrix to write into (e.g. the last iteration's).
    """
    parts = list(parts)
    q, j = parts[0][0].shape[1] + 1, parts[0][1].shape[1]
    if out is None:
        out = dense_matrix(j * q)
    return _fisher_blocks(parts, out, accumulate=False)


def _fisher_blocks(parts, out: np.ndarray, accumulate: bool) -> np.ndarray:
    """Blocks ``a <= c`` of the information over ``parts``: added to ``out``'s upper triangle
    (``accumulate``) or written into ``(a, c)`` and ``(c, a)``."""
    q, j = parts[0][0].shape[1] + 1, parts[0][1].shape[1]
    rows = max(64, _FISHER_BUFFER // q)  # the weighted rows stay in cache for the syrk
    buf = np.empty((max(1, min(rows, max(x.shape[0] for x, _ in parts))), q))
    roots = [np.sqrt(p) for _, p in parts]
    acc = np.zeros((q, q), order="F")
    for a in range(j):
        for c in range(a, j):
            acc.fill(0.0)
            for (x, p), r in zip(parts, roots):
                for i in range(0, x.shape[0], rows):
                    sl = slice(i, i + rows)
                    w = np.sqrt(p[sl, a] * (1.0 - p[sl, a])) if a == c else r[sl, a] * r[sl, c]
                    b = buf[: w.shape[0]]
                    b[:, 0] = w
                    np.multiply(x[sl], w[:, None], out=b[:, 1:])
                    # b is C-contiguous (n, q): b.T is Fortran (q, n), no copy inside BLAS
                    acc = dsyrk(1.0, b.T, beta=1.0, c=acc, trans=0, lower=0, overwrite_c=1)
            _put_block(out, acc, a, c, q, accumulate)
    return out


def _put_block(out: np.ndarray, acc: np.ndarray, a: int, c: int, q: int, accumulate: bool):
    """Mirror ``acc`` (upper triangle set) in place and store it as block ``(a, c)``."""
    full = symmetrize_upper(acc)
    sa, sc = slice(a * q, (a + 1) * q), slice(c * q, (c + 1) * q)
    if accumulate:
        if a == c:
            out[sa, sc] += full
        else:  # off-diagonal blocks are -X1' diag(p_a p_c) X1
            out[sa, sc] -= full
        return
    if a == c:
        out[sa, sc] = full
    else:
        np.negative(full, out=out[sa, sc])
        out[sc, sa] = out[sa, sc]  # block (c, a) = block (a, c)' = block (a, c)


def _fisher_stacked(x: np.ndarray, probs: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``blockdiag_j(X1' diag(p_j) X1) - A'A`` added to ``out``'s upper triangle."""
    n, p = x.shape
    q = p + 1
    j = probs.shape[1]
    a = np.empty((n, j, q))
    a[:, :, 0] = probs
    np.multiply(probs[:, :, None], x[:, None, :], out=a[:, :, 1:])
    a = a.reshape(n, j * q)
    # a is C-contiguous (n, Jq), so a.T is Fortran-contiguous (Jq, n): no copy inside BLAS.
    out = dsyrk(-1.0, a.T, beta=1.0, c=out, trans=0, lower=0, overwrite_c=1)
    b = np.empty((n, q))
    for k in range(j):
        s = np.sqrt(probs[:, k])
        b[:, 0] = s
        np.multiply(x, s[:, None], out=b[:, 1:])
        sl = slice(k * q, (k + 1) * q)
        out[sl, sl] += dsyrk(1.0, b.T, trans=0, lower=0)
    return out


def multinomial_hvp_chunk(x: np.ndarray, probs: np.ndarray, v: np.ndarray) -> np.ndarray:
    """One chunk's Fisher-vector product ``I v`` for ``v`` of shape (p + 1, J).

    Walked in cache-sized row blocks: both narrow products then read each block from cache,
    not memory (measured: 1.7-1.9x faster at p = 256 and 1024).
    """
    rows = _cache_rows(x.shape[1])
    n, j = x.shape[0], v.shape[1]
    out = np.zeros((x.shape[1] + 1, j))
    v0, v1 = v[0], v[1:]
    # the block's two products write into buffers allocated once per chunk: the same
    # operations as probs * (x v) - ..., x'u (bit for bit), without per-block temporaries
    lin, prod = np.empty((min(rows, n), j)), np.empty((x.shape[1], j))
    for i in range(0, n, rows):
        xb, pb = x[i : i + rows], probs[i : i + rows]
        u = lin[: xb.shape[0]]
        np.matmul(xb, v1, out=u)
        u += v0
        u *= pb
        u -= pb * u.sum(axis=1, keepdims=True)
        out[0] += u.sum(axis=0)
        np.matmul(xb.T, u, out=prod)
        out[1:] += prod
    return out


def binomial_loglike_grad_chunk(
    x: np.ndarray, y: np.ndarray, w: np.ndarray | None, beta: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Bernoulli log-likelihood, score and means of one chunk (``w``: frequency weights)."""
    eta = _lin(x, beta)
    mu = expit(eta)
    ll = y * log_expit(eta) + (1.0 - y) * log_expit(-eta)
    r = y - mu
    if w is not None:
        ll = ll * w
        r = r * w
    return float(ll.sum()), _tlin(x, r), mu


def binomial_fisher_chunk(
    x: np.ndarray, mu: np.ndarray, w: np.ndarray | None, out: np.ndarray | None = None
) -> np.ndarray:
    """Add one chunk's ``X1' diag(w mu (1 - mu)) X1`` to ``out`` (upper triangle, in place)."""
    s = mu * (1.0 - mu)
    if w is not None:
        s = s * w
    s = np.sqrt(s)
    n, p = x.shape
    a = np.empty((n, p + 1))
    a[:, 0] = s
    np.multiply(x, s[:, None], out=a[:, 1:])
    if out is None:
        out = np.zeros((p + 1, p + 1), order="F")
    return dsyrk(1.0, a.T, beta=1.0, c=out, trans=0, lower=0, overwrite_c=1)


def binomial_hvp_chunk(
    x: np.ndarray, mu: np.ndarray, w: np.ndarray | None, v: np.ndarray
) -> np.ndarray:
    """One chunk's ``X1' diag(w mu (1 - mu)) X1 v``."""
    s = mu * (1.0 - mu)
    if w is not None:
        s = s * w
    return _tlin(x, s * _lin(x, v))


def symmetrize_upper(a: np.ndarray, block: int = 64) -> np.ndarray:
    """Copy the upper triangle onto the lower one, in place.

    Tile by tile (``block`` x ``block``): each transposed copy stays in cache (measured 1.5-1.8x
    faster than whole panels at m = 9225).
    """
    n = a.shape[0]
    for i in range(0, n, block):
        e = min(i + block, n)
        d = a[i:e, i:e]
        low = np.tril_indices(e - i, -1)
        d[low] = d.T[low]
        for k in range(e, n, block):
            f = min(k + block, n)
            a[k:f, i:e] = a[i:e, k:f].T
    return a


def dense_matrix(n: int) -> np.ndarray:
    """A zero ``n x n`` float64 matrix in Fortran order (the information, its factor).

    Above ``_MMAP_MIN_BYTES`` it comes from an anonymous ``mmap`` (zero pages, released when
    the array goes): numpy asks the kernel for transparent huge pages on large allocations,
    and where memory is fragmented the kernel then compacts memory as each page is first
    touched; measured on a shared machine: 2.3-5 s of system time per 680 MB matrix (p=1024,
    K=10) against 0.35 s with ordinary pages, and no faster BLAS to pay it back.
    """
    nbytes = 8 * int(n) * int(n)
    if nbytes < _MMAP_MIN_BYTES:
        return np.zeros((n, n), order="F")
    return np.ndarray((n, n), dtype=np.float64, buffer=mmap.mmap(-1, nbytes), order="F")


def cholesky_into(f: np.ndarray, out: np.ndarray | None = None,
                  out_lower_zero: bool = False) -> np.ndarray:
    """Upper Cholesky factor of ``f`` in ``out`` (a copy of ``f``, factored in place).

    ``f`` is left as it was; the strict lower triangle of the result is zero. ``out`` (a
    :func:`dense_matrix` when not given) may be the last iteration's factor. Into a new
    matrix, or one whose strict lower triangle the caller knows is zero (``out_lower_zero``,
    e.g. an earlier factor from here), only the upper triangle is copied and factored: the
    lower one is never written, so its pages are never touched (at 9,225 parameters half of
    a 680 MB copy and its page faults).
    """
    upper = out is None or out_lower_zero
    if out is None:
        out = dense_matrix(f.shape[0])
    if upper:
        _copy_upper(f, out)
    else:
        out[...] = f
    c, info = dpotrf(out, lower=0, overwrite_a=1, clean=int(not upper))
    if info > 0:
        raise FisherSingularError(
            "The Fisher information is not positive definite: the design is rank deficient "
            "(collinear or constant units) or the data are separated. Drop dependent units, or "
            "use a remedy (glminterp.firth, glminterp.penalized)."
        )
    if info < 0:  # pragma: no cover - an argument error is a bug here
        raise ValueError(f"LAPACK dpotrf: illegal argument {-info}.")
    return c


def _copy_upper(f: np.ndarray, out: np.ndarray, block: int = 512) -> None:
    """``out``'s upper triangle (diagonal included) set to ``f``'s, column block by block
    (Fortran order: each block's rows ``0..e`` are contiguous runs); the strict lower
    triangle of ``out`` is left untouched."""
    n = f.shape[0]
    for i in range(0, n, block):
        e = min(i + block, n)
        out[:i, i:e] = f[:i, i:e]
        for c in range(i, e):  # the diagonal tile, column by column: rows 0..c only
            out[i : c + 1, c] = f[i : c + 1, c]


class CholeskyCovariance:
    """The inverse information ``I^-1`` from the upper Cholesky factor ``I = U'U``.

    One triangular inverse ``W = U^-1`` (LAPACK trtri, in the factor's memory, ``m^3/3``
    flops: half of the full inverse) makes the variances ready, ``diag(I^-1)`` being the row
    sums of ``W**2`` (``I^-1 = W W'``). The full matrix ``W W'`` (lauum, the other half) is
    formed on the first call of :meth:`matrix`, once, in the same memory, and returned
    read-only from then on; nothing is inverted twice.

    Parameters
    ----------
    factor : ndarray
        Upper Cholesky factor with a zero strict lower triangle (:func:`cholesky_into`),
        Fortran order; taken over (overwritten).
    """

    def __init__(self, factor: np.ndarray):
        w, info = dtrtri(factor, lower=0, overwrite_c=1)
        if info != 0:
            raise FisherSingularError(f"LAPACK dtrtri failed (info={info}).")
        self._w: np.ndarray | None = w
        self._full: np.ndarray | None = None
        self._lock = threading.Lock()
        var = np.zeros(w.shape[0])
        for i in range(0, w.shape[0], 512):  # column blocks: no m x m temporary
            e = min(i + 512, w.shape[0])
            blk = w[:e, i:e]
            var[:e] += np.einsum("ij,ij->i", blk, blk)
        self.variances = var
        self.variances.flags.writeable = False

    @classmethod
    def from_matrix(cls, cov: np.ndarray) -> CholeskyCovariance:
        """Wrap an already formed covariance matrix."""
        self = cls.__new__(cls)
        self._w, self._lock = None, threading.Lock()
        self._full = np.asarray(cov)
        self._full.flags.writeable = False
        self.variances = np.diag(self._full).copy()
        self.variances.flags.writeable = False
        return self

    @property
    def formed(self) -> bool:
        """Whether the full matrix exists yet."""
        return self._full is not None

    def matrix(self) -> np.ndarray:
        """The full covariance ``W W'`` (formed on the first call, read-only)."""
        if self._full is None:
            with self._lock:
                if self._full is None:
                    global _N_INVERSES
                    _N_INVERSES += 1
                    full, info = dlauum(self._w, lower=0, overwrite_c=1)
                    if info != 0:  # pragma: no cover - lauum of a valid triangle cannot fail
                        raise FisherSingularError(f"LAPACK dlauum failed (info={info}).")
                    full = symmetrize_upper(full)
                    full.flags.writeable = False
                    self._full, self._w = full, None
        return self._full

    def __getstate__(self):  # the lock does not pickle; the triangle or the matrix does
        return {"w": self._w, "full": self._full, "variances": self.variances}

    def __setstate__(self, state):
        self._w, self._full, self.variances = state["w"], state["full"], state["variances"]
        for a in (self._full, self.variances):
            if a is not None:
                a.flags.writeable = False
        self._lock = threading.Lock()


def inverse_from_cholesky(c: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """Inverse of a positive-definite matrix from its upper Cholesky factor (LAPACK potri).

    ``overwrite=True`` writes the inverse over ``c`` (Fortran order): no second matrix.
    """
    global _N_INVERSES
    _N_INVERSES += 1
    inv, info = dpotri(c, lower=0, overwrite_c=int(bool(overwrite and c.flags.f_contiguous)))
    if info != 0:
        raise FisherSingularError(f"LAPACK dpotri failed (info={info}).")
    return symmetrize_upper(inv)


# ============================================================================ objectives
Chunk = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


def array_chunks(
    x: np.ndarray, y: np.ndarray, w: np.ndarray | None, chunk_size: int
) -> Callable[[], Iterator[Chunk]]:
    """A re-iterable source of ``(x, y, w)`` row chunks (views, no intercept column).

    The source is marked ``in_memory``: the objectives may then read its rows once per block
    of the information matrix (:func:`multinomial_fisher`).
    """

    def gen() -> Iterator[Chunk]:
        for i in range(0, x.shape[0], chunk_size):
            sl = slice(i, i + chunk_size)
            yield x[sl], y[sl], None if w is None else w[sl]

    gen.in_memory = True
    return gen


class MultinomialObjective:
    """Log-likelihood, score, Fisher information and Fisher-vector products over row chunks.

    Parameters
    ----------
    chunks : callable
        Returns a fresh iterator of ``(x, codes, None)`` chunks each time it is called.
    n_terms, n_classes : int
    cache_probs : bool
        Keep the probabilities of the last evaluated point (``N x (K-1)`` floats) so that
        Fisher-vector products and the Fisher matrix at that point need one pass, not two.
    """

    def __init__(
        self,
        chunks: Callable[[], Iterator[Chunk]],
        n_terms: int,
        n_classes: int,
        cache_probs: bool = True,
    ):
        self._chunks = chunks
        self.q = int(n_terms)
        self.j = int(n_classes) - 1
        self.n_params = self.q * self.j
        self._cache_probs = cache_probs
        self._point: np.ndarray | None = None
        self._probs: list[np.ndarray] = []
        self.n_obs = 0

    def _beta(self, flat: np.ndarray) -> np.ndarray:
        return flat.reshape(self.q, self.j, order="F")

    def value_grad(self, flat: np.ndarray) -> tuple[float, np.ndarray]:
        beta = self._beta(flat)
        llf, grad, n, probs = 0.0, np.zeros((self.q, self.j)), 0, []
        for x, codes, _ in self._chunks():
            ll, g, p = multinomial_loglike_grad_chunk(x, codes, beta)
            llf += ll
            grad += g
            n += x.shape[0]
            if self._cache_probs:
                probs.append(p)
        self.n_obs = n
        if self._cache_probs:
            self._point, self._probs = flat.copy(), probs
        return llf, grad.ravel(order="F")

    def _prob_chunks(self, flat: np.ndarray) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        if self._point is not None and np.array_equal(self._point, flat):
            return zip((c[0] for c in self._chunks()), self._probs)
        beta = self._beta(flat)
        return ((x, multinomial_probs(x, beta)[0]) for x, _, _ in self._chunks())

    def fisher(self, flat: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The information at ``flat``, written into ``out`` (e.g. the last one) if given."""
        if getattr(self._chunks, "in_memory", False):
            return multinomial_fisher(self._prob_chunks(flat), out)
        if out is None:
            out = dense_matrix(self.n_params)
        else:
            out.fill(0.0)
        for x, p in self._prob_chunks(flat):  # out of core: one pass, chunk by chunk
            out = multinomial_fisher_chunk(x, p, out)
        return symmetrize_upper(out)

    def hvp(self, flat: np.ndarray, v: np.ndarray) -> np.ndarray:
        vm = self._beta(v)
        out = np.zeros((self.q, self.j))
        for x, p in self._prob_chunks(flat):
            out += multinomial_hvp_chunk(x, p, vm)
        return out.ravel(order="F")


class BinomialObjective:
    """Bernoulli log-likelihood and its derivatives over row chunks (see MultinomialObjective)."""

    def __init__(self, chunks: Callable[[], Iterator[Chunk]], n_terms: int, cache_probs=True):
        self._chunks = chunks
        self.q = self.n_params = int(n_terms)
        self._cache_probs = cache_probs
        self._point: np.ndarray | None = None
        self._mu: list[np.ndarray] = []
        self.n_obs = 0

    def value_grad(self, beta: np.ndarray) -> tuple[float, np.ndarray]:
        llf, grad, n, mus = 0.0, np.zeros(self.q), 0, []
        for x, y, w in self._chunks():
            ll, g, mu = binomial_loglike_grad_chunk(x, y, w, beta)
            llf += ll
            grad += g
            n += x.shape[0]
            if self._cache_probs:
                mus.append(mu)
        self.n_obs = n
        if self._cache_probs:
            self._point, self._mu = beta.copy(), mus
        return llf, grad

    def _mu_chunks(self, beta: np.ndarray):
        if self._point is not None and np.array_equal(self._point, beta):
            return ((x, mu, w) for (x, _, w), mu in zip(self._chunks(), self._mu))
        return ((x, expit(_lin(x, beta)), w) for x, _, w in self._chunks())

    def fisher(self, beta: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            out = np.zeros((self.q, self.q), order="F")
        else:
            out.fill(0.0)
        for x, mu, w in self._mu_chunks(beta):
            out = binomial_fisher_chunk(x, mu, w, out)
        return symmetrize_upper(out)

    def hvp(self, beta: np.ndarray, v: np.ndarray) -> np.ndarray:
        out = np.zeros(self.q)
        for x, mu, w in self._mu_chunks(beta):
            out += binomial_hvp_chunk(x, mu, w, v)
        return out


# ============================================================================ solvers
@dataclass
class _Trace:
    n_iter: int = 0
    n_fisher: int = 0
    n_hvp: int = 0
    n_eval: int = 0
    history: list[float] = field(default_factory=list)
    plan: dict = field(default_factory=dict)


def solver_costs(n_obs: int, n_terms: int, n_classes: int) -> dict[str, float]:
    """Predicted cost of the fit's building blocks, in Fisher-vector products (HVPs).

    One HVP is ``~4 N m`` flops (``m = (K-1)(p+1)`` parameters, two narrow matrix products,
    memory-bound); one information matrix ``~N q^2 J(J+1)/2`` (``J(J+1)/2`` symmetric q x q
    syrks, BLAS-3, about ``_RATE_FISHER`` times the flop rate); its Cholesky ``m^3/3`` and
    the inverse from it ``2 m^3/3`` (about ``_RATE_CHOL`` times). The covariance needs one information matrix, its
    Cholesky and the inverse at the optimum whatever the solver (the floor); the question is
    only how to get there.

    Returns
    -------
    dict
        ``fisher``, ``cholesky``, ``inverse`` in HVP units, and ``n_params``.
    """
    n, q, j = float(max(n_obs, 1)), float(n_terms), float(max(n_classes - 1, 1))
    m = q * j
    hvp = 4.0 * n * m + 10.0 * n * j  # the products plus the probability arithmetic
    return {
        "n_params": int(m),
        "fisher": (n * q * q + 2.0 * n * q) * j * (j + 1) / 2.0 / _RATE_FISHER / hvp,
        "cholesky": m**3 / 3.0 / _RATE_CHOL / hvp,
        "inverse": 2.0 * m**3 / 3.0 / _RATE_CHOL / hvp,
    }


def solver_plan(method: str, n_obs: int, n_terms: int, n_classes: int,
                full: bool = True, cg_max_iter: int = 200) -> dict:
    """The solver ``method="auto"`` resolves to and the HVP budget, from :func:`solver_costs`.

    Newton-CG spends Fisher-vector products until its step is below the tolerance, then builds
    the one information matrix the covariance needs anyway (and takes one last exact step with
    its Cholesky). Products beyond ``_CG_SHARE`` of that matrix's cost mean CG is fighting an
    ill-conditioned system: the fit then hands over to exact Newton steps (one information
    matrix + Cholesky each), whose count is predictable. Below ``_AUTO_CG_MIN_PARAMS``
    parameters a full matrix costs a few dozen products: plain Newton.
    """
    c = solver_costs(n_obs, n_terms, n_classes)
    resolved = method
    if method == "auto":
        resolved = "newton-cg" if c["n_params"] > _AUTO_CG_MIN_PARAMS else "newton"
    if not full:  # matrix-free callers: no information matrix will be built at all
        budget = max(200, 20 * cg_max_iter)
    else:
        budget = int(max(50, _CG_SHARE * (c["fisher"] + c["cholesky"])))
    return {"method": resolved, "hvp_budget": budget if resolved == "newton-cg" else 0,
            "fisher_in_hvp": round(c["fisher"], 1), "cholesky_in_hvp": round(c["cholesky"], 1),
            "inverse_in_hvp": round(c["inverse"], 1), "handover": None}


def _cholesky(f: np.ndarray) -> tuple[np.ndarray, bool]:
    try:
        return cho_factor(f, lower=False, check_finite=False)
    except LinAlgError as err:
        raise FisherSingularError(
            "The Fisher information is not positive definite: the design is rank deficient "
            "(collinear or constant units) or the data are separated. Drop dependent units, or "
            "use a remedy (glminterp.firth, glminterp.penalized)."
        ) from err


def _line_search(obj, beta, llf, grad, step, trace: _Trace, max_halvings: int = 40):
    """Step halving until the log-likelihood rises by the Armijo fraction of the prediction."""
    slope = float(grad @ step)
    t = 1.0
    for _ in range(max_halvings):
        cand = beta + t * step
        new_llf, new_grad = obj.value_grad(cand)
        trace.n_eval += 1
        if np.isfinite(new_llf) and new_llf >= llf + 1e-4 * t * slope:
            return cand, new_llf, new_grad, t
        t *= 0.5
    return beta, llf, grad, 0.0


def _pcg(hvp, b: np.ndarray, precond, rtol: float, max_iter: int, trace: _Trace) -> np.ndarray:
    """Preconditioned conjugate gradients for ``H x = b`` (H symmetric positive definite)."""
    x = np.zeros_like(b)
    r = b.copy()
    z = precond(r)
    d = z.copy()
    rz = float(r @ z)
    bnorm = float(np.linalg.norm(b))
    for _ in range(max_iter):
        hd = hvp(d)
        trace.n_hvp += 1
        dhd = float(d @ hd)
        if dhd <= 0:
            break
        alpha = rz / dhd
        x += alpha * d
        r -= alpha * hd
        if np.linalg.norm(r) <= rtol * bnorm:
            break
        z = precond(r)
        rz_new = float(r @ z)
        d = z + (rz_new / rz) * d
        rz = rz_new
    return x


def _finish(obj, beta, tol, max_iter, trace: _Trace, llf=None, grad=None, monitor=None,
            max_memory: int | None = None):
    """Full Newton iterations until the exact step is below ``tol``; returns the optimum.

    The returned covariance (a :class:`CholeskyCovariance`: variances ready, the full matrix
    formed on first use) is the inverse information at the last point where it was built;
    the returned parameters are that point plus the (tiny, <= tol) last Newton step, which
    makes them accurate to ``O(tol^2)`` while the covariance is off by ``O(tol)`` only. The
    information and its factor live in two matrices allocated once for all iterations.
    """
    if llf is None:
        llf, grad = obj.value_grad(beta)
        trace.n_eval += 1
    converged = False
    fisher = factor = cov = None
    check_covariance_memory(obj.n_params, max_memory)
    reuse = isinstance(obj, (MultinomialObjective, BinomialObjective))  # fisher(out=...)
    while trace.n_iter < max_iter:
        if not reuse:
            fisher = None  # release the last one before building the next
        fisher = obj.fisher(beta, out=fisher) if reuse else obj.fisher(beta)
        trace.n_fisher += 1
        factor = cholesky_into(fisher, factor, out_lower_zero=True)
        step = cho_solve((factor, False), grad, check_finite=False)
        trace.n_iter += 1
        small = float(np.max(np.abs(step))) <= tol
        if small:
            cov = CholeskyCovariance(factor)  # in the factor's memory
            new_llf, new_grad = obj.value_grad(beta + step)
            trace.n_eval += 1
            if new_llf >= llf - 1e-9 * max(1.0, abs(llf)):
                beta, llf, grad = beta + step, new_llf, new_grad
            converged = True
            break
        if float(grad @ step) <= _ROUNDING * max(1.0, abs(llf)):
            # the predicted gain is at the rounding level of llf: a line search cannot see
            # it (it would creep with tiny steps), and the quadratic model is exact here
            beta = beta + step
            llf, grad = obj.value_grad(beta)
            trace.n_eval += 1
            continue
        beta, llf, grad, t = _line_search(obj, beta, llf, grad, step, trace)
        trace.history.append(llf)
        if monitor is not None:
            monitor(trace, beta, llf, t * step, t)
        if t == 0.0:
            break
    if cov is None:  # not converged: the covariance where the information was last built
        if fisher is None:
            fisher = obj.fisher(beta)
            factor = cholesky_into(fisher)
        cov = CholeskyCovariance(factor)
    return beta, llf, grad, fisher, cov, converged


class DivergenceMonitor:
    """Recognise separated data from the Newton iterations themselves, early.

    On separated data the log-likelihood rises towards a plateau along a direction of
    recession: the coefficients keep growing at a steady rate while the gains shrink
    geometrically and fitted probabilities saturate. A finite optimum shows the opposite
    (steps shrink quadratically, the coefficients settle). The monitor raises
    :class:`~glminterp.refit.separation.SeparationError` on the first of:

    - a perfect fit: the mean log-likelihood per row above ``-llf_tol``;
    - a plateau: the coefficients doubled within ``window`` steps for under 1% of
      log-likelihood, with saturated probabilities (above ``1 - 1e-10``);
    - steady divergence, judged on two consecutive windows of ``window`` steps (so the long
      and short steps that inexact Newton-CG alternates between average out): the largest
      coefficient grew by half over both windows and by at least half as much in the second
      as in the first (no sign of settling), the log-likelihood gain of the second window is
      under half that of the first and under 5% of the log-likelihood, and some fitted
      probability is above ``1 - 1e-5`` (a log-odds beyond 11.5);
    - complete separation, on the same two windows: the coefficients keep growing as above
      while the log-likelihood itself shrinks towards 0 geometrically (by 40% or more per
      window, twice) and is already above ``-0.05`` per row;
    - (per step) ``window`` consecutive full steps of steady length with geometrically shrinking
      gains, saturated probabilities, and a log-likelihood that still rises ``reach`` moves
      further along the last one (``probe``: a direction of recession; past a finite optimum
      it falls).

    So the fit stops after a handful of Newton steps, not hundreds of products. A finite
    optimum very far from the start can look similar for a step or two; requiring the
    pattern over two windows and saturated probabilities keeps such fits running (tested on
    optima with coefficients of 6 and on the default designs).

    Parameters
    ----------
    n_obs : int
    window : int
        Consecutive full, non-shrinking steps with shrinking gains that count as divergence.
    llf_tol : float
        Mean log-likelihood per row above ``-llf_tol`` counts as a perfect fit.
    label : str
        What was fitted, for the message.
    max_prob : callable, optional
        Returns the largest fitted probability at the last evaluated point (default: the
        saturation requirement is taken as met).
    probe : callable, optional
        ``probe(point, back)``: log-likelihood at ``point``, then re-evaluate at ``back`` (so
        cached probabilities stay those of the iterate). When given, the pattern counts only
        if the log-likelihood ``reach`` moves further along the last move is still higher: a
        finite optimum fails this (two extra data passes, only when the pattern shows).
    reach : float
    """

    def __init__(self, n_obs: int, window: int = 3, llf_tol: float = 1e-6, label: str = "fit",
                 max_prob: Callable[[], float] | None = None,
                 probe: Callable[[np.ndarray, np.ndarray], float] | None = None,
                 reach: float = 3.0):
        self.n_obs, self.window, self.llf_tol, self.label = int(n_obs), int(window), llf_tol, label
        self._max_prob, self._probe, self.reach = max_prob, probe, float(reach)
        self._rows: list[tuple[float, float, float, float]] = []  # (llf, move, bmax, t)

    def __call__(self, trace: _Trace, beta, llf: float, move, t: float) -> None:
        bmax = float(np.max(np.abs(beta)))
        self._rows.append((float(llf), float(np.max(np.abs(move))), bmax, float(t)))
        if llf > -self.llf_tol * self.n_obs:
            self._raise(trace, f"the mean log-likelihood per row is {llf / self.n_obs:.2g}, "
                        "a perfect fit")
        rows = self._rows
        w = self.window
        if len(rows) < w + 1:
            return
        last = rows[-w:]
        gains = [last[i][0] - rows[len(rows) - w - 1 + i][0] for i in range(w)]
        full = all(r[3] == 1.0 for r in last)
        steady = all(last[i][1] >= 0.8 * last[i - 1][1] for i in range(1, w))
        fading = all(0 <= gains[i] <= 0.8 * gains[i - 1] for i in range(1, w))
        grown = last[-1][2] >= 1.5 * rows[-w - 1][2]
        # plateau: coefficients doubled over the window for under 1% of log-likelihood
        plateau = (last[-1][2] >= 2.0 * rows[-w - 1][2]
                   and llf - rows[-w - 1][0] < 1e-2 * abs(llf))
        if plateau and (self._max_prob is None or self._max_prob() > 1.0 - 1e-10):
            self._raise(trace, f"the largest coefficient grew from {rows[-w - 1][2]:.3g} to "
                        f"{bmax:.3g} in {w} steps while the log-likelihood rose "
                        f"{llf - rows[-w - 1][0]:.3g} only, with saturated probabilities")
        self._check_windows(trace)
        if not (full and steady and fading and grown):
            return
        if self._max_prob is not None and self._max_prob() <= 1.0 - 1e-10:
            return
        # certificate: along a direction of recession the log-likelihood keeps rising far
        # out; past a finite optimum it falls (some row is misclassified without bound)
        if self._probe is None or self._probe(beta + self.reach * np.asarray(move), beta) >= llf:
            self._raise(trace, f"{w} full Newton steps of steady length "
                        f"({last[-1][1]:.3g}) with log-likelihood gains shrinking "
                        f"geometrically; the largest coefficient grew from "
                        f"{rows[-w - 1][2]:.3g} to {bmax:.3g}")

    def _check_windows(self, trace: _Trace) -> None:
        rows, w = self._rows, self.window
        if len(rows) < 2 * w + 1:
            return
        (l0, _, b0, _), (l1, _, b1, _), (l2, _, b2, _) = rows[-2 * w - 1], rows[-w - 1], rows[-1]
        grow_prev, grow_now = b1 - b0, b2 - b1
        gain_prev, gain_now = l1 - l0, l2 - l1
        if not (grow_prev > 0 and grow_now >= 0.5 * grow_prev):
            return
        # complete separation: the log-likelihood itself goes to 0 geometrically
        vanishing = (l2 > -0.05 * self.n_obs and 0 < l2 / l1 <= 0.6 and 0 < l1 / l0 <= 0.6)
        plateau = (b2 >= 1.5 * b0 and 0 <= gain_now <= 0.5 * gain_prev
                   and gain_now <= 0.05 * abs(l2))
        if not (vanishing or plateau):
            return
        if self._max_prob is not None and self._max_prob() <= 1.0 - 1e-5:
            return
        what = ("the log-likelihood fell towards 0 geometrically "
                f"({l0:.4g}, {l1:.4g}, {l2:.4g})" if vanishing else
                f"the log-likelihood gains shrank ({gain_prev:.3g}, then {gain_now:.3g})")
        self._raise(trace, f"the largest coefficient kept growing ({b0:.3g}, {b1:.3g}, "
                    f"{b2:.3g} every {w} steps) while {what}, with saturated fitted "
                    "probabilities")

    def _raise(self, trace: _Trace, why: str) -> None:
        from glminterp.refit.separation import SeparationError

        raise SeparationError(
            f"The {self.label} diverges ({why}) after {trace.n_iter} iterations and "
            f"{trace.n_hvp} Hessian-vector products: the data are (quasi-)completely "
            "separated and the maximum-likelihood estimate does not exist. Refit on held-out "
            "rows, use fewer units or classes (a class subset), or a remedy (Firth, ridge)."
        )


def multinomial_monitor(obj: MultinomialObjective, n_obs: int, label: str = "multinomial fit"):
    """:class:`DivergenceMonitor` reading the objective's cached probabilities."""

    def max_prob() -> float:
        out = 0.0
        for pr in obj._probs:
            base = 1.0 - pr.sum(axis=1)
            out = max(out, float(pr.max(initial=0.0)), float(base.max(initial=0.0)))
        return out

    def probe(point: np.ndarray, back: np.ndarray) -> float:
        far = obj.value_grad(point)[0]
        obj.value_grad(back)
        return far

    return DivergenceMonitor(n_obs, label=label, max_prob=max_prob, probe=probe)


def _solve(obj, start, method, tol, max_iter, cg_max_iter, precond_factory, monitor=None,
           max_memory: int | None = None, full: bool = True):
    """Newton or Newton-CG to the optimum; ``full=False`` stops before the information matrix.

    ``monitor(trace, beta, llf, move, t)`` is called after every accepted step (it may raise,
    e.g. :class:`DivergenceMonitor` on separated data). With ``full=False`` the returned
    ``fisher`` and ``cov`` are None and convergence means the CG step fell below ``tol``.
    The resolved method and the product budget (:func:`solver_plan`) are in ``trace.plan``.
    """
    trace = _Trace()
    beta = np.array(start, dtype=np.float64)
    llf, grad = obj.value_grad(beta)
    trace.n_eval += 1
    n_classes = getattr(obj, "j", 1) + 1
    trace.plan = plan = solver_plan(method, obj.n_obs, obj.q, n_classes, full, cg_max_iter)
    if plan["method"] == "newton" and full:
        out = _finish(obj, beta, tol, max_iter, trace, llf, grad, monitor=monitor,
                      max_memory=max_memory)
        return (*out, trace)
    precond = precond_factory(beta)
    beta, llf, grad, small = _cg_phase(obj, beta, llf, grad, precond, tol * (0.1 if full else 1),
                                       max_iter, cg_max_iter, plan["hvp_budget"], trace, monitor,
                                       handover=full)
    if not full:
        return beta, llf, grad, None, None, small, trace
    plan["handover"] = ("converged: one information matrix at the optimum" if small else
                        "HVP budget spent or CG stalled: exact Newton steps")
    out = _finish(obj, beta, tol, max_iter + 5, trace, llf, grad, monitor, max_memory)
    return (*out, trace)


def _cg_phase(obj, beta, llf, grad, precond, step_tol, max_iter, cg_max_iter, budget,
              trace: _Trace, monitor=None, handover: bool = False):
    """Newton-CG iterations until the step's largest component is below ``step_tol``.

    Inexact Newton with Eisenstat-Walker forcing (choice 2, gamma 0.9, alpha 2, safeguarded):
    loose solves far from the optimum, tightening as the score falls. Where the predicted gain
    is at the rounding level of the log-likelihood an Armijo search cannot see it (it would
    halve the step ~30 times and creep): the quadratic model is exact there, take the step.
    Stops when ``trace.n_hvp`` exceeds ``budget``; returns ``(beta, llf, grad, converged)``.

    ``handover=True`` (an exact Newton step with the full information follows, which makes
    the point exact to second order): the last solves aim at the predicted size of their
    step, and a short, accurately solved step ends the phase once taken (below). The
    matrix-free callers (``handover=False``) keep the point where the step fell below
    ``step_tol``, so they solve to ``step_tol`` relative to the last step.
    """
    eta, gprev, sprev, sprev2 = 0.5, None, None, None
    gscale = max(1.0, float(np.max(np.abs(grad))))
    while trace.n_iter < max_iter:
        gnorm = float(np.linalg.norm(grad))
        if _FORCING == "score":
            gmax = float(np.max(np.abs(grad)))
            eta = max(min(0.5, np.sqrt(gmax / gscale), gmax / gscale * 1e2), 1e-12)
        elif gprev is not None:
            ew = 0.9 * (gnorm / gprev) ** 2
            safe = 0.9 * eta**2
            eta = min(0.5, max(ew, safe) if safe > 0.1 else ew)
            eta = max(eta, 1e-10)
        gprev = gnorm
        if sprev is not None:
            # no oversolving: an error of step_tol is all the end needs, relative to the step
            # about to be solved for, predicted from the last two (converging superlinearly,
            # each step shrinks at least as fast as the last one did)
            pred = sprev if sprev2 is None or not handover else sprev * min(1.0,
                                                                             sprev / sprev2)
            eta = max(eta, min(0.5, 0.5 * step_tol / pred))
        left = max(1, min(cg_max_iter, budget - trace.n_hvp + 1))
        step = _pcg(lambda v, b=beta: obj.hvp(b, v), grad, precond, eta, left, trace)
        trace.n_iter += 1
        sprev2, sprev = sprev, float(np.max(np.abs(step)))
        if sprev <= step_tol:
            return beta, llf, grad, True
        # a step this short and solved this accurately lands within ~eta |step| << step_tol
        # of the optimum: take it and stop rather than solve once more to see it is small
        last = handover and sprev <= 10.0 * step_tol and eta * sprev <= 0.1 * step_tol
        if trace.n_hvp > budget:
            break
        if float(grad @ step) <= _ROUNDING * max(1.0, abs(llf)):
            beta = beta + step
            llf, grad = obj.value_grad(beta)
            trace.n_eval += 1
            if last:
                return beta, llf, grad, True
            continue
        beta, llf, grad, t = _line_search(obj, beta, llf, grad, step, trace)
        trace.history.append(llf)
        if monitor is not None:
            monitor(trace, beta, llf, t * step, t)
        if last and t == 1.0:
            return beta, llf, grad, True
        if t == 0.0:
            break
    return beta, llf, grad, False


def _kron_precond(obj: MultinomialObjective, x_gram_inv: np.ndarray):
    """Preconditioner ``S^-1 (x) (X'X)^-1`` with ``S`` the mean class covariance ``E[W_n]``."""

    def factory(flat):
        if obj._point is None:
            obj.value_grad(flat)
        probs = np.vstack(obj._probs)
        s = np.diag(probs.mean(axis=0)) - probs.T @ probs / probs.shape[0]
        s_inv = np.linalg.inv(s) / probs.shape[0]

        def apply(r):
            return (x_gram_inv @ r.reshape(obj.q, obj.j, order="F") @ s_inv).ravel(order="F")

        return apply

    return factory


def _lazy_kron_precond(obj: MultinomialObjective, chunks):
    """:func:`_kron_precond` with the Gram matrix computed only if Newton-CG asks for it."""
    return lambda flat: _kron_precond(obj, _gram_inv(chunks))(flat)


def gram_matrix(chunks) -> np.ndarray:
    """``X1' W X1`` of the design with its intercept (``W``: the frequency weights, if any)."""
    g = None
    for x, _, w in chunks():
        a = add_const(x)
        if w is not None:
            a *= np.sqrt(w)[:, None]
        # syrk: half the flops of a.T @ a (a is C-contiguous, a.T Fortran: no copy)
        g = (dsyrk(1.0, a.T, trans=0, lower=0) if g is None
             else dsyrk(1.0, a.T, beta=1.0, c=g, trans=0, lower=0, overwrite_c=1))
    return symmetrize_upper(g)


def _gram_inv(chunks) -> np.ndarray:
    """``(X1'X1)^-1`` by one ``(p+1) x (p+1)`` Cholesky; pseudo-inverse if rank deficient."""
    g = gram_matrix(chunks)
    c, info = dpotrf(g, lower=0, clean=1)  # g itself is kept for the fallback
    if info == 0:
        inv, info = dpotri(c, lower=0, overwrite_c=1)  # a third of cho_solve(c, eye)'s flops
        if info == 0:
            return symmetrize_upper(inv)
    vals, vecs = np.linalg.eigh(g)
    vals = np.where(vals > vals.max() * 1e-12, vals, np.inf)
    return (vecs / vals) @ vecs.T


def bohning_preconditioner(gram_inv: np.ndarray, n_classes: int) -> Callable[[np.ndarray], np.ndarray]:
    """``B^-1 r`` for Bohning's (1992) bound ``B = 1/2 (I - 11'/K) (x) X1'X1``.

    ``I(beta) <= B`` for every ``beta``, so ``beta + B^-1 U(beta)`` is a monotone MM step and
    ``B^-1`` a fixed preconditioner. With ``J = K - 1``: ``(I_J - 11'/K)^-1 = I_J + 11'``, so
    ``B^-1 vec(R) = vec(2 (X1'X1)^-1 R (I + 11'))`` (``R`` the ``(p+1, J)`` matrix).
    """
    j = int(n_classes) - 1
    s_inv = 2.0 * (np.eye(j) + 1.0)
    q = gram_inv.shape[0]

    def apply(r: np.ndarray) -> np.ndarray:
        return (gram_inv @ r.reshape(q, j, order="F") @ s_inv).ravel(order="F")

    return apply


def covariance_bytes(n_params: int) -> int:
    """Bytes of the full information matrix plus its inverse (float64, both kept)."""
    return 2 * 8 * int(n_params) ** 2


def available_memory_bytes() -> int:
    """Memory the process may still allocate: ``MemAvailable`` (Linux), else psutil, else 8 GiB."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # pragma: no cover - non-Linux
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover
        return 8 * 2**30


def check_covariance_memory(n_params: int, max_memory: int | None = None) -> int:
    """Raise :class:`CovarianceMemoryError` if the full covariance does not fit; return bytes.

    ``max_memory`` (bytes) defaults to 80% of :func:`available_memory_bytes` at call time.
    """
    need = covariance_bytes(n_params)
    limit = int(max_memory) if max_memory is not None else int(
        _MEMORY_FRACTION * available_memory_bytes())
    if need > limit:
        raise CovarianceMemoryError(
            f"The full covariance of {n_params} parameters needs {need / 2**30:.2f} GiB (the "
            f"information matrix and its inverse) but {limit / 2**30:.2f} GiB are allowed. Ask "
            "for what you need without the full inverse: refit_output_layer(..., "
            "method='contrasts', contrasts=[...] or classes=[...]) for exact SEs of chosen "
            "coefficients or contrasts, method='class_subset' with classes=[...] for the "
            "conditional model on a class subset, method='ovr' for one-vs-rest fits with "
            "per-class covariance blocks, or method='auto' to choose; or raise max_memory.",
            n_params=n_params, needed=need, available=limit,
        )
    return need


# ============================================================================ results
@dataclass(frozen=True)
class EngineResult:
    """Maximum-likelihood fit from the fast engine.

    Attributes
    ----------
    params : ndarray
        ``(p + 1, K - 1)`` (multinomial, reference parametrization, intercept first) or
        ``(p + 1,)`` (binomial).
    covariance : CholeskyCovariance
        The inverse Fisher information of ``params.ravel(order="F")``: its variances (so
        :attr:`bse`) are ready when the fit returns; the full matrix :attr:`cov` is formed on
        first access, once (a plain ndarray passed here is wrapped as already formed).
    fisher : ndarray
        The Fisher information (negative Hessian of the log-likelihood) where ``cov`` was built.
    llf : float
        Log-likelihood at ``params``.
    grad_norm : float
        Largest absolute score component at ``params``.
    n_iter, n_fisher, n_hvp : int
        Outer iterations, full information matrices built, Fisher-vector products used.
    converged : bool
    family : {"multinomial", "binomial"}
    method : str
    n_obs : int
    classes : tuple
        Sorted class labels (multinomial: first is the baseline; binomial: ``(0, 1)``).
    terms : tuple of str
        ``("const", <column names>)``.
    seconds : float
        Wall time of the fit.
    weighted : bool
        True if frequency weights were used (binomial).
    plan : dict
        How the optimum was reached (:func:`solver_plan`): the resolved ``method``, the HVP
        ``hvp_budget``, the predicted costs of one information matrix, its Cholesky and the
        inverse in HVP units, ``handover`` (whether Newton-CG converged on its own) and
        ``n_eval`` (log-likelihood and score passes over the data).

    Notes
    -----
    ``fisher`` and ``cov`` are evaluated at the last Newton iterate; ``params`` add the final
    Newton step, whose largest component is below ``tol`` (so ``params`` are accurate to
    ``O(tol^2)``, while ``cov`` is off by ``O(tol)`` relative, about 1e-9 in practice, well
    inside the 1e-6 agreement with statsmodels' own fits). ``to_statsmodels(cov="statsmodels")``
    recomputes the Hessian exactly at ``params``.
    """

    params: np.ndarray
    covariance: CholeskyCovariance = field(repr=False, compare=False)
    fisher: np.ndarray = field(repr=False)
    llf: float
    grad_norm: float
    n_iter: int
    n_fisher: int
    n_hvp: int
    converged: bool
    family: str
    method: str
    n_obs: int
    classes: tuple
    terms: tuple[str, ...]
    seconds: float
    weighted: bool = False
    plan: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.covariance, CholeskyCovariance):
            object.__setattr__(self, "covariance", CholeskyCovariance.from_matrix(self.covariance))
        for a in (self.params, self.fisher):
            a.flags.writeable = False

    @property
    def cov(self) -> np.ndarray:
        """Inverse Fisher information of ``params.ravel(order="F")`` (read-only).

        Formed from the fit's triangular inverse on first access (LAPACK lauum, about as long
        as the Cholesky), once: later accesses and :meth:`to_statsmodels` get the same array.
        """
        return self.covariance.matrix()

    @property
    def bse(self) -> np.ndarray:
        """Standard errors, same shape as ``params`` (no full covariance needed)."""
        se = np.sqrt(self.covariance.variances)
        return se.reshape(self.params.shape, order="F")

    @property
    def params_frame(self) -> pd.DataFrame:
        """``params`` as a DataFrame (index = terms, columns = non-baseline classes)."""
        if self.params.ndim == 1:
            return pd.DataFrame({"coef": self.params}, index=list(self.terms))
        return pd.DataFrame(self.params, index=list(self.terms), columns=list(self.classes[1:]))

    def to_statsmodels(
        self,
        x,
        y,
        *,
        cov: str = "engine",
        model: str = "default",
        cov_type: str = "nonrobust",
        cov_kwds: dict | None = None,
        check_rank: bool | None = None,
    ):
        """Hand the optimum to statsmodels and return its results object.

        Calls ``MNLogit(y, [1, x]).fit(start_params=params, method="newton", maxiter=0)``
        (``Logit`` or ``GLM(family=Binomial())`` for the binomial): statsmodels takes no Newton
        step and (``cov="engine"``) uses this fit's covariance, so
        ``params``/``bse``/``summary()``/``wald_test()`` are statsmodels' own at this optimum
        (verified in the tests against statsmodels' full fits, also for ``cov_type="HC0"``).

        Parameters
        ----------
        x, y
            The same design (no intercept column) and response used for the fit.
        cov : {"engine", "statsmodels"}
            ``"engine"`` hands statsmodels this engine's covariance (``cov_params_func``):
            with ``cov_type="nonrobust"`` nothing is inverted again and no copy of the
            information matrix is made (``mle_retvals["Hessian"]`` is None; the information
            is :attr:`fisher`); robust ``cov_type`` sandwiches are statsmodels' own (it
            inverts the engine's information for the bread);
            ``"statsmodels"`` lets statsmodels compute and invert its own Hessian (slow for
            MNLogit: its (K-1)^2-block loop), an independent check.
        model : {"default", "logit", "glm"}
            Binomial only: ``Logit`` (default) or ``GLM(family=Binomial())`` results.
        cov_type, cov_kwds
            Passed to statsmodels' ``fit`` (e.g. ``"HC0"``, ``"cluster"``): robust
            covariances are then statsmodels' own, computed at this optimum.
        check_rank : bool, optional
            statsmodels' own rank check of ``[1, x]`` (``MNLogit`` / ``Logit``; a QR of the
            whole design, 0.3-0.9x the fit's own time at N=10k). Default: skipped when ``x``
            has the fit's shape, because the fit has proved full column rank already (its
            information matrix had a Cholesky factor, and ``I <= w_max (I_J (x) X1'X1)`` in
            the Loewner order, so ``X1'X1`` is positive definite too); True forces it.

        Notes
        -----
        With ``maxiter=0`` statsmodels flags the fit as not converged; ``mle_retvals`` is
        overwritten with this engine's ``converged`` flag and iteration count.
        """
        import statsmodels.api as sm
        from statsmodels.tools.sm_exceptions import ConvergenceWarning

        if cov not in ("engine", "statsmodels"):
            raise ValueError(f"cov={cov!r}; use 'engine' or 'statsmodels'.")
        if model not in ("default", "logit", "glm"):
            raise ValueError(f"model={model!r}; use 'default', 'logit' or 'glm'.")
        if self.weighted:
            raise ValueError(
                "a fit with frequency weights has no statsmodels MNLogit/Logit equivalent; use "
                "sm.GLM(y, X, family=Binomial(), freq_weights=w) with start_params=params."
            )
        exog = _exog_with_const(x, self.terms)
        endog = y if isinstance(y, pd.Series) else np.asarray(y)
        if check_rank is None:
            check_rank = not (self.n_fisher >= 1 and exog.shape == (self.n_obs, len(self.terms)))
        if self.family == "multinomial":
            sm_model = sm.MNLogit(endog, exog, check_rank=check_rank)
        elif model == "glm":
            sm_model = sm.GLM(endog, exog, family=sm.families.Binomial())
        else:
            sm_model = sm.Logit(endog, exog, check_rank=check_rank)
        flat = self.params.ravel(order="F")
        kw = {"cov_type": cov_type}
        if cov_kwds is not None:
            kw["cov_kwds"] = cov_kwds
        if cov == "engine":
            # statsmodels would invert the Hessian again (as long as the fit itself at
            # p = 2048): hand it the covariance this engine already has, and a 1 x 1
            # placeholder Hessian for its unused mle_retvals entry
            # GLM inverts its own Hessian after the optimizer (a (p+1)^2 binomial matrix,
            # cheap), and statsmodels' sandwich (robust cov_type) inverts model.hessian:
            # give those the engine's information; otherwise only a placeholder is needed
            is_glm = isinstance(sm_model, sm.GLM)
            real = is_glm or cov_type != "nonrobust"
            fixed = -np.asarray(self.fisher) if real else np.zeros((1, 1))
            original = sm_model.hessian

            def hessian(params, *args, **kwargs):
                if np.array_equal(np.ravel(params, order="F"), flat):
                    return fixed.copy()
                return original(params, *args, **kwargs)

            sm_model.hessian = hessian  # instance attribute shadows the method during fit only
            if not is_glm:
                engine_cov = self.cov
                kw["cov_params_func"] = lambda *_: engine_cov
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=RuntimeWarning)
                warnings.simplefilter("ignore", category=ConvergenceWarning)
                warnings.simplefilter("ignore", category=FutureWarning)  # cov_params_func kw
                res = sm_model.fit(start_params=flat, method="newton", maxiter=0, disp=0, **kw)
        finally:
            if cov == "engine":
                del sm_model.hessian
        if cov == "engine" and not real:
            res.mle_retvals["Hessian"] = None  # the information is EngineResult.fisher
        res.mle_retvals["converged"] = self.converged
        res.mle_retvals["iterations"] = self.n_iter
        res.mle_retvals["engine"] = "glminterp.engine"
        res._results.converged = self.converged
        return res


def _exog_with_const(x, terms: tuple[str, ...]):
    if isinstance(x, pd.DataFrame):
        out = x.astype(np.float64).copy()
        out.insert(0, "const", 1.0)
        return out
    return add_const(np.asarray(x, dtype=np.float64))


def _as_design(x) -> tuple[np.ndarray, tuple[str, ...]]:
    if isinstance(x, pd.DataFrame):
        names = tuple(str(c) for c in x.columns)
        arr = x.to_numpy(dtype=np.float64)
    else:
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 2:
            raise ValueError(f"x must be 2-D (n_obs, n_units); got shape {arr.shape}.")
        names = tuple(f"x{i + 1}" for i in range(arr.shape[1]))
    if not np.all(np.isfinite(arr)):
        raise ValueError("x contains NaN or infinite values; drop or impute those rows first.")
    return arr, ("const", *names)


def _auto_chunk(chunk_size: int | None, width: int) -> int:
    if chunk_size is None:
        return max(64, _CHUNK_BYTES // (8 * max(1, width)))
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")
    return int(chunk_size)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not known; use one of {METHODS}.")


def encode_classes(y) -> tuple[np.ndarray, tuple]:
    """Integer codes of sorted class labels (first sorted label = baseline, as MNLogit)."""
    yy = np.asarray(y)
    if yy.ndim != 1:
        raise ValueError(f"y must be 1-D; got shape {yy.shape}.")
    classes, codes = np.unique(yy, return_inverse=True)
    return codes.astype(np.int64), tuple(classes.tolist())


def null_start_multinomial(codes: np.ndarray, n_classes: int, n_terms: int) -> np.ndarray:
    """Intercept-only MLE as the start: ``log(n_k / n_0)`` intercepts, zero slopes."""
    counts = np.bincount(codes, minlength=n_classes).astype(float) + 0.5
    start = np.zeros((n_terms, n_classes - 1))
    start[0] = np.log(counts[1:] / counts[0])
    return start


def fit_multinomial(
    x,
    y,
    *,
    start=None,
    chunk_size: int | None = None,
    tol: float = 1e-8,
    max_iter: int = 100,
    method: str = "auto",
    cg_max_iter: int = 200,
    detect_separation: bool = False,
    max_memory: int | None = None,
) -> EngineResult:
    """Multinomial logit MLE (reference parametrization, first sorted class = baseline).

    Parameters
    ----------
    x : array-like, shape (n_obs, p)
        Regressors without an intercept column (one is added as the first term).
    y : array-like, shape (n_obs,)
        Class labels; ``K = len(unique(y))`` classes.
    start : array-like, optional
        Starting values, ``(p + 1, K - 1)`` or flattened in Fortran order; e.g. the network's
        head ``Head.params("reference")``. Default: the intercept-only fit.
    chunk_size : int, optional
        Rows per chunk when accumulating sums (default: about 32 MB of stacked design).
    tol : float
        Converged when the exact Newton step's largest component is below ``tol`` (statsmodels
        uses the same criterion and default).
    max_iter : int
    method : {"auto", "newton-cg", "newton"}
        ``"newton-cg"``: Hessian-free iterations (preconditioned CG on Fisher-vector
        products, Armijo line search) then one full information matrix, for the covariance
        and a last exact step; it hands over to full Newton if CG needs more products than
        ``_CG_SHARE`` (30%) of one information matrix + Cholesky would cost (a cost model,
        :func:`solver_plan`). ``"newton"``: full information matrix at every iteration, step
        halving. ``"auto"``: ``"newton-cg"`` above 500 parameters. The choice, the product
        budget and whether CG converged by itself are recorded in ``EngineResult.plan``.
    cg_max_iter : int
        Conjugate-gradient iterations per Newton-CG step.
    detect_separation : bool
        Stop with :class:`~glminterp.refit.separation.SeparationError` as soon as the iterations
        show the signature of separated data (:class:`DivergenceMonitor`), instead of
        iterating to ``max_iter`` and warning.
    max_memory : int, optional
        Bytes the information matrix and its inverse may take (default: 80% of the memory
        available when the fit starts); checked before anything is allocated.

    Returns
    -------
    EngineResult

    Raises
    ------
    FisherSingularError
        If the information matrix is singular (collinear units or separation).
    CovarianceMemoryError
        If the full covariance does not fit in ``max_memory``; see the matrix-free
        estimators in :mod:`glminterp.refit.contrasts` and :mod:`glminterp.refit.class_subset`.
    SeparationError
        With ``detect_separation=True``, on separated data.
    """
    t0 = time.perf_counter()
    _check_method(method)
    arr, terms = _as_design(x)
    codes, classes = encode_classes(y)
    if len(codes) != arr.shape[0]:
        raise ValueError(f"x has {arr.shape[0]} rows but y has {len(codes)}.")
    k = len(classes)
    if k < 2:
        raise ValueError("y has fewer than two classes; nothing to fit.")
    q = arr.shape[1] + 1
    cs = _auto_chunk(chunk_size, q * (k - 1))
    chunks = array_chunks(arr, codes, None, cs)
    obj = MultinomialObjective(chunks, q, k)
    if start is None:
        start_m = null_start_multinomial(codes, k, q)
    else:
        start_m = np.asarray(start, dtype=np.float64)
        if start_m.size != q * (k - 1):
            raise ValueError(f"start has {start_m.size} values; expected (p+1)*(K-1) = {q * (k - 1)}.")
        start_m = start_m.reshape(q, k - 1, order="F")
    check_covariance_memory(obj.n_params, max_memory)
    factory = _lazy_kron_precond(obj, chunks)
    monitor = multinomial_monitor(obj, arr.shape[0]) if detect_separation else None
    beta, llf, grad, fisher, cov, conv, trace = _solve(
        obj, start_m.ravel(order="F"), method, tol, max_iter, cg_max_iter, factory, monitor,
        max_memory,
    )
    return _result(beta.reshape(q, k - 1, order="F"), cov, fisher, llf, grad, conv, trace,
                   "multinomial", method, arr.shape[0], classes, terms, t0)


def fit_binomial(
    x,
    y,
    *,
    weights=None,
    start=None,
    chunk_size: int | None = None,
    tol: float = 1e-8,
    max_iter: int = 100,
    method: str = "auto",
    cg_max_iter: int = 200,
    detect_separation: bool = False,
    max_memory: int | None = None,
) -> EngineResult:
    """Logistic regression MLE (Newton/IRLS, or Newton-CG for many units).

    Parameters
    ----------
    x : array-like, shape (n_obs, p)
        Regressors without an intercept column.
    y : array-like of {0, 1}
    weights : array-like, optional
        Non-negative frequency weights (as ``GLM(freq_weights=...)``).
    start, chunk_size, tol, max_iter, method, cg_max_iter, detect_separation, max_memory
        As in :func:`fit_multinomial`.
    """
    t0 = time.perf_counter()
    _check_method(method)
    arr, terms = _as_design(x)
    yy = np.asarray(y, dtype=np.float64).ravel()
    if yy.shape[0] != arr.shape[0]:
        raise ValueError(f"x has {arr.shape[0]} rows but y has {yy.shape[0]}.")
    if not np.all((yy == 0) | (yy == 1)):
        raise ValueError("y must contain only 0 and 1 for a binomial fit.")
    w = None
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.shape != yy.shape or np.any(w < 0) or not np.all(np.isfinite(w)):
            raise ValueError("weights must be finite, non-negative and one per row of x.")
    q = arr.shape[1] + 1
    cs = _auto_chunk(chunk_size, q)
    chunks = array_chunks(arr, yy, w, cs)
    obj = BinomialObjective(chunks, q)
    if start is None:
        wt = np.ones_like(yy) if w is None else w
        ybar = (np.sum(wt * yy) + 0.5) / (np.sum(wt) + 1.0)
        start_v = np.zeros(q)
        start_v[0] = np.log(ybar / (1 - ybar))
    else:
        start_v = np.asarray(start, dtype=np.float64).ravel()
        if start_v.size != q:
            raise ValueError(f"start has {start_v.size} values; expected p + 1 = {q}.")
    gram_inv = _gram_inv(chunks)

    def factory(beta):
        return lambda r: gram_inv @ r * 4.0  # mu(1-mu) <= 1/4

    monitor = DivergenceMonitor(
        yy.shape[0], label="binomial fit",
        max_prob=lambda: max(float(np.max(np.maximum(m, 1 - m))) for m in obj._mu),
        probe=lambda point, back: (obj.value_grad(point)[0], obj.value_grad(back))[0],
    ) if detect_separation else None
    beta, llf, grad, fisher, cov, conv, trace = _solve(
        obj, start_v, method, tol, max_iter, cg_max_iter, factory, monitor, max_memory
    )
    n_obs = arr.shape[0] if w is None else float(np.sum(w))
    res = _result(beta, cov, fisher, llf, grad, conv, trace, "binomial", method, n_obs,
                  (0, 1), terms, t0)
    return res if w is None else dataclasses.replace(res, weighted=True)


def _result(beta, cov, fisher, llf, grad, conv, trace, family, method, n_obs, classes, terms, t0):
    if not conv:
        warnings.warn(
            f"The {family} fit did not converge in {trace.n_iter} iterations (largest score "
            f"component {np.max(np.abs(grad)):.3g}); with diverging coefficients this signals "
            "separation.",
            RuntimeWarning,
            stacklevel=3,
        )
    return EngineResult(
        params=beta,
        covariance=cov,
        fisher=fisher,
        llf=float(llf),
        grad_norm=float(np.max(np.abs(grad))),
        n_iter=trace.n_iter,
        n_fisher=trace.n_fisher,
        n_hvp=trace.n_hvp,
        converged=bool(conv),
        family=family,
        method=method,
        n_obs=n_obs,
        classes=classes,
        terms=terms,
        seconds=time.perf_counter() - t0,
        plan={**(getattr(trace, "plan", {}) or {}), "n_eval": trace.n_eval},
    )
