"""Helpers for the CAM tests: a small seeded GAP CNN and an independent statsmodels refit.

The refit here is deliberately separate from ``glminterp.glm`` so the CAM code is tested against
statsmodels directly: MNLogit on the refit split's pooled channels (dead channels dropped, then
put back with coefficient 0 and variance 0), converted to the sum-to-zero parametrization with
``gamma = beta C'`` and ``Cov(vec gamma) = L Cov(vec beta) L'``.
"""

from __future__ import annotations

import numpy as np
import statsmodels.api as sm
import torch
from torch import nn

import glminterp as gi
from glminterp.head import reference_to_sum_to_zero_map, vec_map


def seeded_gap_cnn(digits, seed: int = 0, epochs: int = 8) -> nn.Module:
    """GapCNN(8, 16, 8) trained on the digits train split, initialisation seeded too."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = gi.GapCNN(widths=(8, 16, 8))
    gi.train_model(model, digits.get_split("train"), epochs=epochs, lr=3e-3, seed=seed, progress=False)
    return model


def mnlogit_refit(acts) -> dict:
    """Fit MNLogit on the refit split; return reference and sum-to-zero params/covariances.

    Returns a dict with ``beta`` (p + 1, K - 1), ``cov_beta`` (Fortran-order vec covariance),
    ``gamma`` (p + 1, K), ``class_covs`` (K, p + 1, p + 1) and ``result`` (statsmodels).
    """
    sub = acts.subset(split="refit")
    feats = sub.head_features().to_numpy(np.float64)
    y = sub.obs["label"].to_numpy(np.int64)
    live = np.flatnonzero((feats != 0).any(axis=0))
    x = sm.add_constant(feats[:, live], has_constant="add")
    res = sm.MNLogit(y, x).fit(method="newton", disp=0, maxiter=200)
    if not res.mle_retvals["converged"] or not np.isfinite(res.params).all():
        raise RuntimeError("MNLogit did not converge on the test fixture")
    p = feats.shape[1]
    k = int(y.max()) + 1
    idx = np.concatenate([[0], live + 1])
    beta = np.zeros((p + 1, k - 1))
    beta[idx] = np.asarray(res.params)
    cov_live = np.asarray(res.cov_params())
    n_live = len(idx)
    cov_beta = np.zeros(((p + 1) * (k - 1),) * 2)
    full_idx = np.concatenate([j * (p + 1) + idx for j in range(k - 1)])
    live_idx = np.arange(n_live * (k - 1))
    cov_beta[np.ix_(full_idx, full_idx)] = cov_live[np.ix_(live_idx, live_idx)]
    cmap = reference_to_sum_to_zero_map(k)
    gamma = beta @ cmap.T
    lmap = vec_map(cmap, p + 1)
    cov_gamma = lmap @ cov_beta @ lmap.T
    class_covs = np.stack(
        [cov_gamma[j * (p + 1) : (j + 1) * (p + 1), j * (p + 1) : (j + 1) * (p + 1)] for j in range(k)]
    )
    ref_covs = np.stack(
        [cov_beta[j * (p + 1) : (j + 1) * (p + 1), j * (p + 1) : (j + 1) * (p + 1)] for j in range(k - 1)]
    )
    return {
        "beta": beta, "cov_beta": cov_beta, "ref_covs": ref_covs, "gamma": gamma,
        "class_covs": class_covs, "result": res, "live": live,
    }
