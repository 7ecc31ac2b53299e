"""Multinomial mean bias reduction as a refit estimator (softmax heads, any number of classes).

The estimator of R ``brglm2::brmultinom(type = "AS_mean")`` (Kosmidis & Firth 2011):
:func:`glminterp.refit.mnbr.fit_multinomial_br`. It is the same baseline-category logit as the
maximum-likelihood refit, with Firth's Jeffreys-prior penalty, so it is finite under complete and
quasi-complete separation. ``remedy="firth"`` on a softmax head with more than 2 classes uses it
(a 2-class softmax head keeps the binomial Firth fit, the same estimate); ``remedy="mnbr"``
names it directly for any softmax head.

Separation: the maximum-likelihood fit is tried first (the fast engine, at most
``_PROOF_MAX_ITER`` iterations); a clean optimum proves overlap (Albert & Anderson 1984), so
the separation LP is skipped, and the MLE is the start of the bias reduction. Otherwise the LP
decides (and names the separating units) and the bias reduction starts from the intercept-only
fit.

Inference: Wald standard errors, z-tests and intervals from the inverse Fisher information at
the estimate (brglm2's); joint Wald test per unit (``unit_tests``, K - 1 df); the agreement test
is the penalized likelihood ratio (:class:`~glminterp.refit.results.MultinomialBRRefitResult`).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from glminterp import engine as eng
from glminterp.refit import acceptance as acc
from glminterp.refit import likelihood as lk
from glminterp.refit.errors import FitError
from glminterp.refit.estimators.base import (
    EstimatorFit,
    FitContext,
    check_options,
    penalized_stats,
)

log = logging.getLogger("glminterp.refit")
_PROOF_MAX_ITER = 50  # an MLE not reached by then is left to the LP (it may not exist)
DEFAULT_MAX_ITER = 1000  # bias-reduction iterations unless remedy_kwds says otherwise
_FAILURES = (np.linalg.LinAlgError, eng.FisherSingularError, ValueError, OverflowError)

INFERENCE = (
    "multinomial mean bias reduction (Kosmidis & Firth 2011; brglm2 brmultinom AS_mean, the "
    "Jeffreys-prior penalized softmax model): finite estimates; Wald standard errors, p-values "
    "and intervals from the inverse Fisher information at the estimate. Under separation Wald "
    "tests lose power (Hauck-Donner: the SE grows faster than the estimate), so few units may "
    "test significant; penalized likelihood-ratio tests per unit are not available for this fit"
)


class MultinomialBiasReduction:
    """Mean bias-reduced multinomial (softmax) refit."""

    name = "mnbr"
    remedy = "mnbr"
    options = ("tol", "max_iter", "method", "precision")
    proves_overlap = True  # fit() decides separation itself (see the module docstring)

    @property
    def result_class(self) -> type:
        from glminterp.refit.results import MultinomialBRRefitResult

        return MultinomialBRRefitResult

    def check(self, model) -> None:
        """Refuse everything but a multinomial (softmax) refit."""
        model.require_logit(self.name)
        if model.family != "multinomial":
            raise ValueError(
                f"remedy={self.name!r} is the multinomial (softmax) bias reduction; this refit is "
                f"family={model.family!r}. Use remedy='firth' (one Firth-penalized binomial GLM "
                "per output)."
            )

    def fit(self, model, ctx: FitContext) -> EstimatorFit:
        from glminterp.refit.mnbr import fit_multinomial_br

        opts = check_options(self.name, self.options, ctx.options)
        # The Fisher-metric iteration converges linearly (faster from the MLE start, whose
        # information and covariance give the first step); small heads finish by exact-Hessian
        # Newton (method="auto"); large ones evaluate in float32 while far (precision="auto").
        opts.setdefault("max_iter", DEFAULT_MAX_ITER)
        start, fisher, cov = overlap_by_mle(model, ctx)
        if start is None:
            model.separation_checks(run=True)
        res = fit_multinomial_br(model.features.to_numpy(dtype=np.float64), model.y,
                                 model.n_classes, start=start, start_fisher=fisher,
                                 start_cov=cov, **opts)
        if not res.converged:
            ratio = beta_size(model) / model.n_obs
            raise FitError(
                f"The multinomial bias reduction did not converge in {res.n_iter} iterations "
                f"(last Fisher-metric step {res.step_norm:.3g} > tol={res.tol:g}). Its "
                "iteration converges at a rate that grows with parameters / rows (here "
                f"{beta_size(model)} / {model.n_obs} = {ratio:.2g}); "
                + ("use fewer units (remedy='pca') or more held-out rows."
                   if ratio > 0.3 else "raise remedy_kwds={'max_iter': ...} or drop units.")
            )
        beta = np.array(res.params)
        stats = penalized_stats(model, beta, beta.size, [True], pll=[res.pll])
        return EstimatorFit(
            beta=beta, cov=np.array(res.cov), results=res, stats=stats, inference=INFERENCE,
            engine="remedy:mnbr", converged=True,
            criterion=f"Fisher-metric step I^-1 (U + A) below tol={res.tol:g} "
                      f"({res.n_iter} iterations, method {res.method}; brglm2's criterion)",
            labelled=True, start="maximum likelihood" if start is not None else "null",
        )


def overlap_by_mle(model, ctx: FitContext) -> tuple:
    """``(MLE, its Fisher information, its inverse)`` if the engine reaches a clean optimum
    (recorded as proof of overlap), else ``(None, None, None)``; the information and its
    inverse are None where the engine did not return them."""
    from glminterp.refit.estimators.ml_fast import warm_start

    target = model.targets()[0]
    start, _ = warm_start(target, model.x)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the verdict below is the one truth
            er = eng.fit_multinomial(model.features, target.y, start=start,
                                     max_iter=min(ctx.maxiter, _PROOF_MAX_ITER))
        beta = np.asarray(er.params, dtype=np.float64)
        verdict = acc.check_optimum("multinomial", model.x, target.y, beta,
                                    lk.loglik_multinomial(model.x, target.y, beta),
                                    target.null_ll, er.fisher, info_factored=True)
    except _FAILURES:
        return None, None, None
    if not verdict.clean:
        log.info("maximum-likelihood fit is not a clean optimum (%s): separation LP",
                 verdict.reason)
        return None, None, None
    model.record_overlap(0, "clean maximum-likelihood optimum")
    fisher, cov = getattr(er, "fisher", None), getattr(er, "cov", None)
    if fisher is None or np.shape(fisher) != (beta.size, beta.size):
        return beta, None, None
    if cov is None or np.shape(cov) != (beta.size, beta.size):
        cov = None
    return beta, np.asarray(fisher, dtype=np.float64), cov


def beta_size(model) -> int:
    """Coefficients of the multinomial refit, ``(p + 1)(K - 1)``."""
    return len(model.terms) * (model.n_classes - 1)


def wants_multinomial_br(model) -> bool:
    """True for the refits where ``remedy="firth"`` means the multinomial bias reduction."""
    return model.family == "multinomial" and model.head.n_outputs > 2
