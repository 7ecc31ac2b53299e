"""Two benign designs on which statsmodels' own optimizers fail (issue 10's regression data).

Both are seeded, overlapping (the separation LP finds no separating direction) and have a finite
MLE; the generators are the searches that found them, fixed at the seed.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize
from scipy.special import log_expit, logsumexp


def binomial_irls_diverges() -> tuple[np.ndarray, np.ndarray]:
    """200 rows, 10 ReLU units, 16 events: statsmodels' GLM IRLS diverges (llf << null)."""
    rng = np.random.default_rng(2006)
    n, p = 200, 10
    rng.choice([1, 3, 10])  # keeps the generator's stream as in the search
    x = np.maximum(rng.standard_normal((n, p)), 0) * 1.0
    eta = x @ (rng.normal(0, 1, p) * 3.0)
    y = (eta >= np.sort(eta)[-16]).astype(float)
    k = rng.integers(1, 4)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    flip_neg = neg[np.argsort(-eta[neg])[:k]]
    flip_pos = rng.choice(pos, k, replace=False)
    y[flip_neg], y[flip_pos] = 1, 0
    return x, y


def multinomial_newton_overflows() -> tuple[np.ndarray, np.ndarray]:
    """300 rows, 6 squared-ReLU units of scale 10, 3 classes: MNLogit's Newton from 0 gives NaN."""
    rng = np.random.default_rng(702)
    n, p, k = 300, 6, 3
    sc = rng.choice([10, 30, 100])
    x = np.maximum(rng.standard_normal((n, p)), 0) ** 2 * sc
    b = rng.normal(0, 2.5, (p, k - 1)) / sc
    eta = np.column_stack([np.zeros(n), x @ b])
    prob = np.exp(eta - eta.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    y = (prob.cumsum(1) > rng.random(n)[:, None]).argmax(1)
    return x, y


def bfgs_binomial(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Reference MLE by BFGS on the negative log-likelihood (an independent optimizer)."""
    x1 = np.column_stack([np.ones(len(y)), x])

    def f(b):
        eta = x1 @ b
        mu = 1 / (1 + np.exp(-eta))
        return -np.sum(y * log_expit(eta) + (1 - y) * log_expit(-eta)), -x1.T @ (y - mu)

    b = optimize.minimize(f, np.zeros(x1.shape[1]), jac=True, method="BFGS",
                          options={"gtol": 1e-10, "maxiter": 20000}).x
    return optimize.minimize(f, b, jac=True, method="BFGS",
                             options={"gtol": 1e-11, "maxiter": 20000}).x


def bfgs_multinomial(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Reference multinomial MLE ``(q, K - 1)`` by BFGS."""
    x1 = np.column_stack([np.ones(len(y)), x])
    q, k = x1.shape[1], int(y.max()) + 1
    onehot = np.eye(k)[y]

    def f(flat):
        b = np.column_stack([np.zeros(q), flat.reshape(q, k - 1, order="F")])
        eta = x1 @ b
        lse = logsumexp(eta, axis=1)
        prob = np.exp(eta - lse[:, None])
        g = -(x1.T @ (onehot - prob))[:, 1:]
        return -(np.sum(eta[np.arange(len(y)), y]) - lse.sum()), g.ravel(order="F")

    flat = np.zeros(q * (k - 1))
    for gtol in (1e-9, 1e-11):
        flat = optimize.minimize(f, flat, jac=True, method="BFGS",
                                 options={"gtol": gtol, "maxiter": 50000}).x
    return flat.reshape(q, k - 1, order="F")
