"""Multinomial mean bias reduction as a refit estimator (softmax heads, any number of classes).

The estimator of R ``brglm2::brmultinom(type = "AS_mean")`` (Kosmidis & Firth 2011):
:func:`glminterp.refit.mnbr.fit_multinomial_br`. It is the same baseline-category logit as the
maximum-likelihood refit, with Firth's Jeffreys-prior penalty, so it is finite under complete and
quasi-complete separation. ``remedy="firth"`` on a softmax head with more than 2 classes uses it
(a 2-class softmax head keeps the binomial Firth fit, the same estimate); ``remedy="mnbr"``
names it directly for any softmax head.

Inference: Wald standard errors, z-tests and intervals from the inverse Fisher information at
the estimate (brglm2's); joint Wald test per unit (``unit_tests``, K - 1 df); the agreement test
is the penalized likelihood ratio (:class:`~glminterp.refit.results.MultinomialBRRefitResult`).
"""

from __future__ import annotations

import numpy as np

from glminterp.refit.errors import FitError
from glminterp.refit.estimators.base import (
    EstimatorFit,
    FitContext,
    check_options,
    penalized_stats,
)

INFERENCE = (
    "multinomial mean bias reduction (Kosmidis & Firth 2011; brglm2 brmultinom AS_mean, the "
    "Jeffreys-prior penalized softmax model): finite estimates; Wald standard errors, p-values "
    "and intervals from the inverse Fisher information at the estimate"
)


class MultinomialBiasReduction:
    """Mean bias-reduced multinomial (softmax) refit."""

    name = "mnbr"
    remedy = "mnbr"
    options = ("tol", "max_iter")

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
        res = fit_multinomial_br(model.features.to_numpy(dtype=np.float64), model.y,
                                 model.n_classes, **opts)
        if not res.converged:
            raise FitError(
                f"The multinomial bias reduction did not converge in {res.n_iter} iterations "
                f"(last Fisher-metric step {res.step_norm:.3g} > tol={res.tol:g}); raise "
                "remedy_kwds={'max_iter': ...} or drop units."
            )
        beta = np.array(res.params)
        stats = penalized_stats(model, beta, beta.size, [True], pll=[res.pll])
        return EstimatorFit(
            beta=beta, cov=np.array(res.cov), results=res, stats=stats, inference=INFERENCE,
            engine="remedy:mnbr", converged=True,
            criterion=f"Fisher-metric step I^-1 (U + A) below tol={res.tol:g} "
                      f"({res.n_iter} iterations; brglm2's criterion)",
            labelled=True,
        )


def wants_multinomial_br(model) -> bool:
    """True for the refits where ``remedy="firth"`` means the multinomial bias reduction."""
    return model.family == "multinomial" and model.head.n_outputs > 2
