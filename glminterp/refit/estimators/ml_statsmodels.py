"""Maximum likelihood by statsmodels' own optimizers (MNLogit Newton, GLM IRLS).

The reference solver and the test oracle. Its flags are not trusted: every fit is checked by
:mod:`glminterp.refit.acceptance` in :mod:`.ml`, and with ``engine="auto"`` a fit it gets wrong
(statsmodels' IRLS has no step-halving and can diverge on data whose MLE exists) is redone by the
damped Newton engine (:mod:`.ml_fast`).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm

from glminterp.refit.estimators.ml import MaximumLikelihood, Target

_TOL = 1e-12
ENGINE = "statsmodels"


def fit_target(model, target: Target, ctx, start=None):
    """statsmodels results for one target, and no information matrix (computed on check)."""
    x = pd.DataFrame(model.x, columns=list(model.terms))
    kw = {"cov_type": ctx.cov_type}
    if ctx.cov_kwds is not None:
        kw["cov_kwds"] = ctx.cov_kwds
    s0 = None if start is None else np.asarray(start).ravel(order="F")
    if target.kind == "multinomial":
        if ctx.cov_type == "nonrobust":
            kw.pop("cov_type")
        res = sm.MNLogit(target.y, x).fit(
            method="newton", maxiter=ctx.maxiter, tol=_TOL, disp=0, start_params=s0, **kw
        )
        return res, None
    fam = sm.families.Gaussian() if target.kind == "gaussian" else sm.families.Binomial()
    # statsmodels' covariance uses the IRLS weights of the step before the last: with its
    # default tol=1e-8 standard errors sit ~1e-5 from the MLE's; one more step fixes it.
    res = sm.GLM(target.y, x, family=fam).fit(maxiter=ctx.maxiter, tol=_TOL, start_params=s0, **kw)
    return res, None


def reduced_fits(multi: bool, y: np.ndarray, x: np.ndarray, start: np.ndarray | None) -> list:
    """ML fits of the design ``x`` (one multinomial, or one binomial GLM per output).

    Used by the per-unit likelihood-ratio tests. Returns an empty list when statsmodels fails
    outright (a singular Hessian on the way).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if multi:
                s0 = None if start is None else start.ravel(order="F")
                return [sm.MNLogit(y, x).fit(method="newton", maxiter=100, tol=_TOL, disp=0,
                                             start_params=s0)]
            return [
                sm.GLM(y[:, o], x, family=sm.families.Binomial()).fit(
                    maxiter=100, tol=_TOL, start_params=None if start is None else start[:, o])
                for o in range(y.shape[1])
            ]
    except np.linalg.LinAlgError:
        return []


def converged(res) -> bool:
    """statsmodels' flag, or a vanishing score where its step criterion stalls at rounding."""
    if hasattr(res, "mle_retvals") and res.mle_retvals is not None:
        if res.mle_retvals.get("converged", True):
            return True
        score = np.asarray(res.model.score(np.asarray(res.params).ravel(order="F")))
        return bool(np.isfinite(score).all() and np.abs(score).max() <= 1e-8 * res.nobs)
    return bool(getattr(res, "converged", True))


def all_good(fits: list) -> bool:
    """Every reduced fit finite and converged."""
    return bool(fits) and all(np.isfinite(r.llf) and converged(r) for r in fits)


class StatsmodelsML(MaximumLikelihood):
    """Maximum likelihood with statsmodels' optimizers only (no engine fallback)."""

    name = "ml_statsmodels"
    engine = "statsmodels"
