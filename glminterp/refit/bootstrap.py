"""Nonparametric bootstrap of the maximum-likelihood refit (rows, or whole clusters)."""

from __future__ import annotations

import gc
import warnings

import numpy as np
import statsmodels.api as sm
from tqdm.auto import tqdm

from glminterp.refit import separation as sep
from glminterp.refit.estimators.ml_statsmodels import converged

_TOL = 1e-12


def _resample(rng, n: int, members):
    if members is None:
        return rng.integers(0, n, n)
    pick = rng.integers(0, len(members), len(members))
    return np.concatenate([members[g] for g in pick])


def _one(model, xb, yb, beta, maxiter):
    """Coefficients of one replicate, or None (separated, a class missing, not converged)."""
    if model.family == "multinomial":
        if np.unique(yb).size != beta.shape[1] + 1:
            return None
        if sep.check_multinomial(xb, yb, terms=model.terms, classes=model.head.classes).separated:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            r = sm.MNLogit(yb, xb).fit(method="newton", maxiter=maxiter, tol=_TOL, disp=0,
                                       start_params=beta.ravel("F"))
        return np.asarray(r.params) if converged(r) else None
    fam = sm.families.Gaussian() if model.family == "gaussian" else sm.families.Binomial()
    cols = []
    for j in range(yb.shape[1]):
        if model.family != "gaussian" and sep.check_binomial(xb, yb[:, j], terms=model.terms).separated:
            return None
        r = sm.GLM(yb[:, j], xb, family=fam).fit(maxiter=maxiter, tol=_TOL, start_params=beta[:, j])
        if not converged(r):
            return None
        cols.append(np.asarray(r.params))
    gc.collect()
    return np.column_stack(cols)


def bootstrap(model, beta, n_boot: int, seed: int, progress: bool, cov_kwds, maxiter) -> dict:
    """Percentile-bootstrap draws of the MLE, warm-started at it; failures are counted."""
    rng = np.random.default_rng(seed)
    groups = None if cov_kwds is None else cov_kwds["groups"]
    members = None
    if groups is not None:
        members = [np.flatnonzero(groups == g) for g in range(int(groups.max()) + 1)]
    draws, failed = [], 0
    for _ in tqdm(range(n_boot), desc="bootstrap", disable=not progress):
        idx = _resample(rng, model.n_obs, members)
        try:
            b = _one(model, model.x[idx], model.y[idx], beta, maxiter)
        except (np.linalg.LinAlgError, ValueError):
            b = None
        if b is None or not np.isfinite(b).all():
            failed += 1
            continue
        draws.append(b)
    return {"draws": np.array(draws), "failed": failed, "n": n_boot, "seed": seed}
