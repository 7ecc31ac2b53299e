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
from scipy.linalg.blas import ssyrk
from scipy.linalg.lapack import spotri

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
        """``L^-T I L^-1`` (float64 in, float64 out)."""
        f = np.array(fisher, dtype=np.float64, order="F")
        q = self.q
        for a in range(self.j):  # rows, then columns: slope rows -= m * intercept row
            f[a * q + 1 : (a + 1) * q] -= np.outer(self.mean, f[a * q])
        for a in range(self.j):
            f[:, a * q + 1 : (a + 1) * q] -= np.outer(f[:, a * q], self.mean)
        return f

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


def inverse32(chol_upper: np.ndarray) -> np.ndarray:
    """Inverse from an upper float32 Cholesky factor (LAPACK spotri), both triangles."""
    inv, info = spotri(chol_upper, lower=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK spotri failed (info={info}).")
    return _symmetrize(inv)


def _symmetrize(a: np.ndarray) -> np.ndarray:
    """Upper triangle copied onto the lower one, in place (any dtype)."""
    return symmetrize_upper(a)
