"""Single-precision pieces of the multinomial bias reduction, for the evaluations far from the estimate.

One evaluation of the adjusted score (:mod:`glminterp.refit.mnbr`) is dominated by two
``O(N dim^2)`` products: the stacked information ``I = sum_n D_n (x) x1_n x1_n'`` (here the
engine's block build, one ``ssyrk`` per symmetric class pair) and the per-row leverage blocks
``V_n[a, c] = x1_n' (I^-1)_{ac} x1_n`` (:mod:`glminterp.refit.mnbr_hats`, from the upper
triangle of the float32 inverse). In float32 both run about twice as fast.
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
from scipy.linalg.blas import dgemm, ssyrk
from scipy.linalg.lapack import spotri, spotrs

from glminterp.engine import _put_block, symmetrize_upper

F32 = np.float32
_BUFFER = 2**18  # elements of one weighted row block of the information build (1 MiB)
_TINY32 = 1e-15  # weights below: 0 (their squares would be near float32's subnormal range)


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
    def fisher(self, probs: np.ndarray, chunk: int | None = None) -> np.ndarray:
        """Information in centred coordinates, float32, both triangles.

        The block build of :func:`glminterp.engine.multinomial_fisher` in single precision:
        each of the ``J (J + 1) / 2`` symmetric blocks ``X1' diag(w) X1`` (``w = p_a (1 - p_a)``
        on the diagonal, ``-p_a p_c`` off it) is one ``ssyrk`` on ``sqrt(|w|) X1`` in
        cache-sized row blocks (44% fewer flops than one ``syrk`` on the stacked design at
        K=10, and no cancellation). ``chunk`` is accepted for the older signature, unused.
        """
        q, j, n = self.q, self.j, probs.shape[0]
        p = probs.astype(F32)
        roots = np.sqrt(p)
        rows = max(64, _BUFFER // q)
        buf = np.empty((min(rows, n), q), dtype=F32)
        out = np.empty((j * q, j * q), dtype=F32, order="F")
        acc = np.zeros((q, q), dtype=F32, order="F")
        for a in range(j):
            for c in range(a, j):
                acc.fill(0.0)
                for i in range(0, n, rows):
                    sl = slice(i, i + rows)
                    w = (np.sqrt(p[sl, a] * (1.0 - p[sl, a])) if a == c
                         else roots[sl, a] * roots[sl, c])
                    w[w < _TINY32] = 0.0  # no subnormal products inside ssyrk (slow)
                    bb = buf[: w.shape[0]]
                    np.multiply(self.x1c[sl], w[:, None], out=bb)
                    acc = ssyrk(1.0, bb.T, beta=1.0, c=acc, trans=0, lower=0, overwrite_c=1)
                _put_block(out, acc, a, c, q, accumulate=False)  # the engine's mirroring
        return out


def solve32(chol_upper: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``I^-1 r`` from the upper float32 Cholesky factor of ``I`` (LAPACK spotrs), float64 out.

    Its rounding perturbs the metric of a Fisher step, not the adjusted score, so it leaves the
    fixed point of the iteration where it is.
    """
    out, info = spotrs(chol_upper, np.asarray(r, dtype=F32), lower=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK spotrs failed (info={info}).")
    return out.astype(np.float64)


def inverse32(chol_upper: np.ndarray, symmetric: bool = False) -> np.ndarray:
    """Inverse from an upper float32 Cholesky factor (LAPACK spotri).

    Only the upper triangle is set unless ``symmetric`` (the hat values read only that,
    :func:`glminterp.refit.mnbr_hats.pair_triangles`).
    """
    inv, info = spotri(chol_upper, lower=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK spotri failed (info={info}).")
    return _symmetrize(inv) if symmetric else inv


def _symmetrize(a: np.ndarray) -> np.ndarray:
    """Upper triangle copied onto the lower one, in place (any dtype)."""
    return symmetrize_upper(a)
