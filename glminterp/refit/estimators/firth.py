"""Firth's bias-reduced logistic regression as a refit estimator (binomial models).

For binomial / one-vs-rest heads and a 2-class softmax head (whose multinomial model is the
binomial logit of class 1 against class 0). Inference: penalized likelihood-ratio tests and
profile penalized-likelihood intervals (``pl=True``, the logistf / brglm2 convention) or Wald.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from glminterp.refit import firth as firth_fit
from glminterp.refit.errors import FitError
from glminterp.refit.estimators.base import (
    EstimatorFit,
    FitContext,
    binary_targets,
    block_diag,
    check_options,
    penalized_stats,
)


class Firth:
    """Firth-penalized binomial fit(s), one per output (:func:`glminterp.refit.firth.fit_firth`)."""

    name = "firth"
    remedy = "firth"
    options = ("pl", "tol", "max_iter")

    @property
    def result_class(self) -> type:
        from glminterp.refit.results import FirthRefitResult

        return FirthRefitResult

    def check(self, model) -> None:
        """Refuse the gaussian family and softmax heads with more than 2 classes."""
        model.require_logit(self.name)
        if model.family == "multinomial" and model.head.n_outputs > 2:
            raise ValueError(
                f"remedy='firth' is implemented for binomial models; a {model.head.n_outputs}-class "
                "multinomial refit has no Firth fit here. Use family='ovr' (one Firth-penalized "
                "binomial GLM per class) or remedy='ridge' (penalized multinomial)."
            )

    def fit(self, model, ctx: FitContext) -> EstimatorFit:
        opts = check_options(self.name, self.options, ctx.options)
        pl = bool(opts.get("pl", True))
        fkw = {k: opts[k] for k in ("tol", "max_iter") if k in opts}
        names, targets = binary_targets(model)
        fits, tables = {}, []
        it = tqdm(names, desc="Firth refit", disable=not ctx.progress or len(names) < 2)
        for c, yc in zip(it, targets):
            fr = firth_fit.fit_firth(model.features, yc, alpha=ctx.alpha, **fkw)
            if not fr.converged:
                raise FitError(f"The Firth fit for {c} did not converge; see the warnings.")
            fits[c] = fr
            tables.append(fr.summary_frame(pl=pl))
        beta = np.column_stack([f.params.to_numpy() for f in fits.values()])
        inference = (
            "Firth penalized likelihood (Jeffreys prior): finite bias-reduced estimates; "
            + ("p-values are penalized likelihood-ratio tests and intervals profile penalized "
               "likelihood (logistf/brglm2 convention)" if pl else
               "Wald p-values and intervals on the penalized estimate (pl=False)")
        )
        stats = penalized_stats(model, beta, len(model.terms) * _per_fit(model),
                                [f.converged for f in fits.values()],
                                pll=[f.pll for f in fits.values()])
        return EstimatorFit(
            beta=beta, cov=block_diag([f.cov.to_numpy() for f in fits.values()]),
            results=fits[names[0]] if model.family == "multinomial" else fits,
            stats=stats, inference=inference, engine="remedy:firth", converged=True,
            criterion="Firth modified score below tol (Newton with step halving)",
            labelled=True, extras={"table": tables, "pl": pl, "fits": list(fits.values())},
        )


def _per_fit(model) -> int:
    return model.beta_columns if model.family == "multinomial" else 1
