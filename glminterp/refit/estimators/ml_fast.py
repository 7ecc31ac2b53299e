"""Maximum likelihood by the fast engine (:mod:`glminterp.engine`), handed to statsmodels.

Damped Newton (step halving on the log-likelihood) or Newton-CG from a safe start: the
network's head when it beats the intercept-only fit, else the intercept-only fit. The optimum is
handed to statsmodels (``EngineResult.to_statsmodels``), so results objects, covariances (also
HC0 and cluster) and tests are statsmodels' own.
"""

from __future__ import annotations

import numpy as np

from glminterp import engine as eng
from glminterp.refit import likelihood as lk
from glminterp.refit.estimators.ml import MaximumLikelihood, Target

ENGINE = "fast"


def warm_start(target: Target, x: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The network's head as a start if finite and better than the intercept-only fit."""
    start = target.net_start
    if start is None or not np.isfinite(start).all():
        return None, "null"
    if target.kind == "multinomial":
        ll = lk.loglik_multinomial(x, target.y, start)
    else:
        ll = lk.loglik_binomial(x, target.y, start)
    return (start, "network") if np.isfinite(ll) and ll > target.null_ll else (None, "null")


def fit_target(model, target: Target, ctx, start=None):
    """statsmodels results at the engine's optimum, and the engine's information matrix."""
    kw = {"cov_type": ctx.cov_type, "cov_kwds": ctx.cov_kwds}
    if target.kind == "multinomial":
        er = eng.fit_multinomial(model.features, target.y, start=start, max_iter=ctx.maxiter)
        return er.to_statsmodels(model.features, target.y, **kw), er.fisher
    er = eng.fit_binomial(model.features, target.y, start=start, max_iter=ctx.maxiter)
    return er.to_statsmodels(model.features, target.y, model="glm", **kw), er.fisher


class FastEngineML(MaximumLikelihood):
    """Maximum likelihood with the fast engine only."""

    name = "ml_fast"
    engine = "fast"
