"""Single-precision pieces of the multinomial bias reduction, for the evaluations far from the estimate.

One evaluation of the adjusted score (:mod:`glminterp.refit.mnbr`) is dominated by two
``O(N dim^2)`` products: the stacked information ``I = sum_n D_n (x) x1_n x1_n'`` and the per-row
leverage blocks ``V_n[a, c] = x1_n' (I^-1)_{ac} x1_n``. In float32 both run about twice as fast.
While the Fisher-metric step is large the rounding (about 1e-7 relative, measured on the step
after centring) is far below the step, so these evaluations lose nothing; the iteration switches
to float64 before it stops, so the estimate, its standard errors and the stopping test are
float64-exact.

Rounding in float32 grows with the condition number of ``I``, so the design is centred first:
``theta = L beta`` with ``theta_0 = beta_0 + m' beta_1`` per class (``m`` the unit means), an
exact reparametrisation (``log det L = 0``, the leverages are unchanged). Scores go into the
centred coordinates by ``L^-T`` and steps come back by ``L^-1``. Layout as
:mod:`glminterp.engine`: parameters ``(p + 1, J)`` flattened in Fortran (class-major) order.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.blas import dgemm, ssyrk, strmv
from scipy.linalg.lapack import spotri, spotrs, strtri

from glminterp.engine import symmetrize_upper

F32 = np.float32


class SingleDesign:
    """The centred float32 design ``[1, x - m]`` and the maps between the two coordinates."""

    def __init__(self, x: np.ndarray, n_classes: int):
        n, p = x.shape
        self.mean = x.mean(axis=0)
        self.x1c = np.empty((n, p + 1), dtype=F32)
        self.x1c[:, 0] = 1.0
        self.x1c[:, 1:] = x - self.mean
        self.q, self.j = p + 1, n_classes - 1

    # ---------------------------------------------------------------- coordinates
    def center_score(self, r: np.ndarray) -> np.ndarray:
        """``L^-T r`` for a score ``r`` of shape ``(q, J)``."""
        out = np.array(r, dtype=np.float64)
        out[1:] -= np.outer(self.mean, r[0])
        return out

    def uncenter_step(self, s: np.ndarray) -> np.ndarray:
        """``L^-1 s`` for a step ``s`` of shape ``(q, J)`` in centred coordinates."""
        out = np.array(s, dtype=np.float64)
        out[0] -= self.mean @ s[1:]
        return out

    def center_fisher(self, fisher: np.ndarray) -> np.ndarray:
        """``L^-T I L^-1`` (float64 in, float64 out, Fortran order).

        ``L^-1 = 1 - U M'`` (``U``: the intercept coordinates, ``M``: the means in each class's
        slope coordinates), so ``L^-T I L^-1 = I - T`` with the symmetric rank-``2J`` term
        ``T = C M' + M (C' - G M')``, ``C = I U``, ``G = U' I U``.
        """
        f = np.array(fisher, dtype=np.float64, order="F")
        q, j = self.q, self.j
        idx = np.arange(j) * q
        m = np.zeros((f.shape[0], j), order="F")
        for a in range(j):
            m[a * q + 1 : (a + 1) * q, a] = self.mean
        c = np.asfortranarray(f[:, idx])
        d = np.asfortranarray(c - m @ c[idx])  # I - C M' - M (C - M G)'  (G symmetric)
        f = dgemm(-1.0, c, m, beta=1.0, c=f, trans_b=1, overwrite_c=1)  # in place: no new
        return dgemm(-1.0, m, d, beta=1.0, c=f, trans_b=1, overwrite_c=1)  # 40 MB matrices

    def center_cov(self, cov: np.ndarray) -> np.ndarray:
        """``L S L'`` for ``S = I^-1`` (float64 in, float64 out)."""
        s = np.array(cov, dtype=np.float64, order="F")
        q = self.q
        for a in range(self.j):  # intercept row += m' slope rows
            s[a * q] += self.mean @ s[a * q + 1 : (a + 1) * q]
        for a in range(self.j):
            s[:, a * q] += s[:, a * q + 1 : (a + 1) * q] @ self.mean
        return s

    # ---------------------------------------------------------------- float32 kernels
    def blocks(self, x1: np.ndarray, rinv: np.ndarray) -> np.ndarray:
        """Leverage blocks ``V_n = W_n W_n'`` with ``W_n = X_n R^-1`` (``I^-1 = R^-1 R^-T``).

        Row ``a`` of ``W_n`` is ``x1_n' R^-1[a-block rows, :]``, zero left of block ``a``
        (``R^-1`` is upper triangular), so no inverse is formed: the products have the shapes of
        the inverse-based ones, and ``V_n[a, c] = W_n[a] . W_n[c]`` adds ``O(n q J^3)``.
        """
        n, q, j = x1.shape[0], self.q, self.j
        w = [x1 @ rinv[a * q : (a + 1) * q, a * q :] for a in range(j)]  # (n, (j - a) q)
        v = np.empty((n, j, j), dtype=F32)
        for a in range(j):
            for c in range(a, j):
                vac = np.einsum("nk,nk->n", w[a][:, (c - a) * q :], w[c])
                v[:, a, c] = vac
                v[:, c, a] = vac
        return v

    def fisher(self, probs: np.ndarray, chunk: int) -> np.ndarray:
        """Information in centred coordinates, float32, both triangles.

        ``blockdiag_j(X1' diag(p_j) X1) - A'A`` with ``A = [p_1 X1, ..., p_J X1]`` (the
        stacked form of :func:`glminterp.engine.multinomial_fisher_chunk`, in single precision).
        """
        q, j = self.q, self.j
        out = np.zeros((j * q, j * q), dtype=F32, order="F")
        for i in range(0, probs.shape[0], chunk):
            x1 = self.x1c[i : i + chunk]
            p = probs[i : i + chunk].astype(F32)
            a = (p[:, :, None] * x1[:, None, :]).reshape(x1.shape[0], j * q)
            out = ssyrk(-1.0, a.T, beta=1.0, c=out, trans=0, lower=0, overwrite_c=1)
            for k in range(j):
                b = x1 * np.sqrt(p[:, k])[:, None]
                sl = slice(k * q, (k + 1) * q)
                out[sl, sl] += ssyrk(1.0, b.T, trans=0, lower=0)
        return _symmetrize(out)


def solve32(chol_upper: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``I^-1 r`` from the upper float32 Cholesky factor of ``I`` (LAPACK spotrs), float64 out.

    Its rounding perturbs the metric of a Fisher step, not the adjusted score, so it leaves the
    fixed point of the iteration where it is.
    """
    out, info = spotrs(chol_upper, np.asarray(r, dtype=F32), lower=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK spotrs failed (info={info}).")
    return out.astype(np.float64)


def triangular_inverse32(chol_upper: np.ndarray, q: int) -> np.ndarray:
    """``R^-1`` of an upper float32 Cholesky factor ``R``, over it (LAPACK strtri).

    Only the upper triangle is meaningful; the lower triangles of the ``q x q`` diagonal
    blocks are zeroed (:meth:`SingleDesign.blocks` reads them), the rest is left as it was.
    """
    rinv, info = strtri(chol_upper, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK strtri failed (info={info}).")
    low = np.tril_indices(q, -1)
    for a in range(0, rinv.shape[0], q):
        rinv[a : a + q, a : a + q][low] = 0.0
    return rinv


def triangular_solve32(rinv: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``I^-1 r = R^-1 R^-T r`` from ``R^-1`` (upper triangle only, BLAS strmv), float64 out."""
    y = strmv(rinv, np.asarray(r, dtype=F32), lower=0, trans=1)
    return strmv(rinv, y, lower=0, trans=0, overwrite_x=1).astype(np.float64)


def inverse32(chol_upper: np.ndarray) -> np.ndarray:
    """Inverse from an upper float32 Cholesky factor (LAPACK spotri), both triangles."""
    inv, info = spotri(chol_upper, lower=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK spotri failed (info={info}).")
    return _symmetrize(inv)


def _symmetrize(a: np.ndarray) -> np.ndarray:
    """Upper triangle copied onto the lower one, in place (any dtype)."""
    return symmetrize_upper(a)
