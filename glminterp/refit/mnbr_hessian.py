"""Exact Hessian of the Jeffreys-penalised multinomial log-likelihood ``l + 1/2 log det I``.

Used by :mod:`glminterp.refit.mnbr` for a damped Newton iteration where it is affordable. With
``X_n = I_J (x) x1_n'`` (``J = K - 1``), ``V_n = X_n I^-1 X_n'``, category vectors
``z_nk = e_k - p_n`` (``e_0 = 0``) and probabilities ``pi_nk`` (k = 0..J), the cumulants of the
categorical response give

    d2 l* = -I + 1/2 [ sum_n X_n' W_n X_n  -  Psi' (Q o Q) Psi ],

* ``W_n = Z_n' diag(h_n) Z_n - tr(V_n D_n) D_n - 2 D_n V_n D_n`` (the fourth cumulant contracted
  with ``V_n``; ``h_nk = pi_nk z_nk' V_n z_nk`` are the hat values of the adjusted score),
* ``Psi`` stacks the ``N K`` pseudo-rows ``pi_nk (z_nk (x) x1_n)'`` and ``Q`` is their Gram
  matrix in the ``I^-1`` metric, ``Q[(n,k),(m,l)] = (z_nk (x) x1_n)' I^-1 (z_ml (x) x1_m)``:
  the term ``tr(I^-1 dI I^-1 dI)``, which couples every pair of rows.

The second term costs ``O((N K)^2 dim)`` flops (``dim = (p + 1) J``), against
``O(N dim^2 + dim^3)`` for one adjusted score: the Newton iteration is used only while that
is small in absolute terms (:func:`hessian_flops`). Layout as :mod:`glminterp.engine`:
parameters flattened in Fortran (class-major) order.
"""

from __future__ import annotations

import numpy as np

from glminterp.engine import add_const


def hessian_flops(n_obs: int, n_classes: int, dim: int) -> float:
    """Floating-point operations of :func:`penalized_hessian` (the ``Q o Q`` term dominates)."""
    nk = float(n_obs) * n_classes
    return 2.0 * nk * nk * dim + 2.0 * nk * dim * dim


def leverage_blocks(x1: np.ndarray, inv: np.ndarray, j: int) -> np.ndarray:
    """``V_n[a, c] = x1_n' (I^-1)_{ac} x1_n``, shape ``(n, J, J)``."""
    n, q = x1.shape
    v = np.empty((n, j, j))
    for a in range(j):  # symmetric: blocks (a, c >= a) only
        z = (x1 @ inv[a * q : (a + 1) * q, a * q :]).reshape(n, j - a, q)
        va = np.einsum("nlq,nq->nl", z, x1)
        v[:, a, a:] = va
        v[:, a:, a] = va
    return v


def _fourth_cumulant_term(x1: np.ndarray, probs: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``sum_n X_n' W_n X_n`` (see the module docstring), ``(J q, J q)``."""
    n, j = probs.shape
    q = x1.shape[1]
    pi = np.c_[1.0 - probs.sum(axis=1), probs]
    z = _categories(probs)
    h = pi * np.einsum("nki,nij,nkj->nk", z, v, z)
    d = probs[:, :, None] * np.eye(j) - probs[:, :, None] * probs[:, None, :]
    trvd = np.einsum("nij,nji->n", v, d)
    w = np.einsum("nki,nk,nkj->nij", z, h, z) - trvd[:, None, None] * d - 2.0 * (d @ v @ d)
    out = np.empty((j * q, j * q), order="F")
    for a in range(j):
        for c in range(a, j):
            blk = (x1 * w[:, a, c][:, None]).T @ x1
            out[a * q : (a + 1) * q, c * q : (c + 1) * q] = blk
            out[c * q : (c + 1) * q, a * q : (a + 1) * q] = blk.T
    return out


def _categories(probs: np.ndarray) -> np.ndarray:
    """``z_nk = e_k - p_n`` for k = 0..J (``e_0 = 0``), shape ``(n, K, J)``."""
    n, j = probs.shape
    z = np.zeros((n, j + 1, j))
    z[:, 1:, :] = np.eye(j)
    return z - probs[:, None, :]


def _pair_term(x1: np.ndarray, probs: np.ndarray, inv: np.ndarray, chunk: int) -> np.ndarray:
    """``Psi' (Q o Q) Psi = tr(I^-1 dI I^-1 dI)`` over all pairs of pseudo-rows."""
    n, j = probs.shape
    k, dim = j + 1, inv.shape[0]
    pi = np.c_[1.0 - probs.sum(axis=1), probs].reshape(n * k, 1)
    zx = (_categories(probs)[:, :, :, None] * x1[:, None, None, :]).reshape(n * k, dim)
    keep = np.flatnonzero(pi[:, 0] > 0.0)  # saturated categories carry no weight
    zx, pi = zx[keep], pi[keep]
    psi = pi * zx
    y = zx @ inv
    out = np.zeros((dim, dim))
    for i in range(0, zx.shape[0], chunk):
        qb = y[i : i + chunk] @ zx.T
        qb *= qb
        out += psi[i : i + chunk].T @ (qb @ psi)
    return out


def penalized_hessian(x: np.ndarray, probs: np.ndarray, fisher: np.ndarray, inv: np.ndarray,
                      chunk: int = 1024) -> np.ndarray:
    """Exact Hessian of ``l(b) + 1/2 log det I(b)`` at the point with these probabilities.

    Parameters
    ----------
    x : ndarray, shape (n, p)
        Design without intercept.
    probs : ndarray, shape (n, J)
        Probabilities of classes 1..J at the point.
    fisher, inv : ndarray, shape (J q, J q)
        Fisher information there and its inverse (Fortran, class-major order).
    chunk : int
        Pseudo-rows per block of the pair term (memory ``chunk x N K``).

    Returns
    -------
    ndarray, shape (J q, J q)
        Symmetric; negative definite near a maximum.
    """
    x1 = add_const(x)
    j = probs.shape[1]
    v = leverage_blocks(x1, inv, j)
    hess = 0.5 * (_fourth_cumulant_term(x1, probs, v) - _pair_term(x1, probs, inv, chunk))
    hess -= fisher
    return 0.5 * (hess + hess.T)
