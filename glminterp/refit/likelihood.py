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


def wald(b: np.ndarray, v: np.ndarray) -> tuple[float, int]:
    """Wald statistic b' V^+ b with df = rank(V) (pinv handles the sum-to-zero case)."""
    vp = np.linalg.pinv(v, hermitian=True)
    df = int(np.linalg.matrix_rank(v, hermitian=True))
    return float(b @ vp @ b), df


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
