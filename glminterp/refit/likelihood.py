"""Log-likelihoods, Wald statistics and multiple-testing adjustments shared by the refit.

Small, exact and stable functions; the estimators and the results call them, never each other.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, log_expit

#: Multiple-testing adjustments offered on the tables: Holm (family-wise error), Benjamini-
#: Hochberg (FDR under independence or positive dependence, PRDS) and Benjamini-Yekutieli (FDR
#: under arbitrary dependence).
P_ADJUST_METHODS: tuple[str, ...] = ("holm", "fdr_bh", "fdr_by")


def loglik_multinomial(x: np.ndarray, y: np.ndarray, beta: np.ndarray) -> float:
    """Multinomial log-likelihood, reference parametrization ``(q, K - 1)``, stable."""
    eta = np.column_stack([np.zeros(x.shape[0]), x @ beta])
    m = eta.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(eta - m).sum(axis=1))
    return float(np.sum(eta[np.arange(len(y)), y] - lse))


def loglik_binomial(x: np.ndarray, y: np.ndarray, b: np.ndarray) -> float:
    """Binomial log-likelihood of 0/1 responses ``y`` at ``b``."""
    eta = x @ b
    return float(np.sum(y * log_expit(eta) + (1.0 - y) * log_expit(-eta)))


def null_loglik_multinomial(y: np.ndarray, k: int) -> float:
    """Intercept-only multinomial log-likelihood."""
    n = np.bincount(y, minlength=k).astype(float)
    n = n[n > 0]
    return float(np.sum(n * np.log(n / n.sum())))


def null_loglik_binomial(y: np.ndarray) -> float:
    """Intercept-only binomial log-likelihood."""
    m = float(np.mean(y))
    if m in (0.0, 1.0):
        return 0.0
    return float(len(y) * (m * np.log(m) + (1 - m) * np.log(1 - m)))


def firth_pll(x1: np.ndarray, y: np.ndarray, b: np.ndarray) -> float:
    """Firth's penalized log-likelihood ``l(b) + 1/2 log det X'WX`` (unit weights)."""
    eta = x1 @ b
    mu = expit(eta)
    info = (x1 * (mu * (1 - mu))[:, None]).T @ x1
    sign, logdet = np.linalg.slogdet(info)
    if sign <= 0:
        return -np.inf
    return loglik_binomial(x1, y, b) + 0.5 * float(logdet)


#: Above this size :func:`wald` tries a Cholesky factorisation first (one eigendecomposition
#: of a 2,313-parameter covariance costs seconds; the factorisation a tenth of that).
WALD_EIG_MAX = 600
#: The factorisation path needs the scaled covariance's reciprocal condition number above this
#: many times ``n * eps`` (LAPACK's estimate; far from numerical rank deficiency).
_WALD_RCOND_MARGIN = 1e3


def wald(b: np.ndarray, v: np.ndarray) -> tuple[float, int]:
    """Wald statistic b' V^+ b with df = rank(V) (pinv handles the sum-to-zero case).

    Up to :data:`WALD_EIG_MAX` parameters: the pseudo-inverse and the numerical rank of ``V``
    (one eigendecomposition each). Above, a ``V`` that is positive definite far from
    numerical rank deficiency (:func:`_wald_cholesky`) is full rank, ``df = len(b)``, and
    ``b' V^-1 b`` comes from its Cholesky factor (the same statistic to rounding); any other
    ``V`` (singular, or nearly) takes the eigen path.
    """
    v = np.asarray(v, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if v.shape[0] > WALD_EIG_MAX:
        fast = _wald_cholesky(b, v)
        if fast is not None:
            return fast
    vp = np.linalg.pinv(v, hermitian=True)
    df = int(np.linalg.matrix_rank(v, hermitian=True))
    return float(b @ vp @ b), df


def _wald_cholesky(b: np.ndarray, v: np.ndarray) -> tuple[float, int] | None:
    """``(b' V^-1 b, n)`` from the Cholesky factor of the unit-diagonal scaling of ``V``, or
    None unless that factorisation succeeds with an estimated reciprocal condition number
    (LAPACK ``dpocon``) above ``_WALD_RCOND_MARGIN * n * eps``.

    The scaling ``S = D^-1/2 V D^-1/2`` (``D = diag V``) leaves the statistic unchanged
    (``b' V^-1 b = c' S^-1 c`` with ``c = D^-1/2 b``) and is within a factor ``n`` of the best
    conditioned diagonal scaling (van der Sluis 1969).
    """
    from scipy.linalg import LinAlgError, cho_factor, lapack, solve_triangular

    n = v.shape[0]
    d = np.diag(v).copy()
    if not (np.isfinite(d).all() and d.min() > 0):
        return None
    r = 1.0 / np.sqrt(d)
    s = v * r[:, None]
    s *= r[None, :]
    anorm = float(np.abs(s).sum(axis=0).max())  # before the factorisation overwrites s
    try:
        c, _ = cho_factor(s, lower=False, check_finite=True, overwrite_a=True)
    except (LinAlgError, ValueError):
        return None
    rcond, info = lapack.dpocon(c, anorm, uplo="U")
    if info != 0 or not rcond > _WALD_RCOND_MARGIN * n * np.finfo(np.float64).eps:
        return None
    z = solve_triangular(c, b * r, trans="T", lower=False, check_finite=False)
    return float(z @ z), int(n)


def p_adjust(p: np.ndarray, method: str) -> np.ndarray:
    """Holm (``"holm"``), Benjamini-Hochberg (``"fdr_bh"``) or -Yekutieli (``"fdr_by"``).

    Same values as ``statsmodels.stats.multitest.multipletests``, which in statsmodels 0.15
    runs a full ``gc.collect()`` per call (too slow inside simulations).
    """
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    ps = p[order]
    if method == "holm":
        adj = np.maximum.accumulate((m - np.arange(m)) * ps)
    elif method in ("fdr_bh", "fdr_by"):
        c_m = float(np.sum(1.0 / np.arange(1, m + 1))) if method == "fdr_by" else 1.0
        adj = np.minimum.accumulate(c_m * m / np.arange(m, 0, -1) * ps[::-1])[::-1]
    else:
        raise ValueError(f"method={method!r}; use one of {P_ADJUST_METHODS}.")
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out
