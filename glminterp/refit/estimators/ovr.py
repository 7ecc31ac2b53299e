"""One-vs-rest as an estimator: K binomial logits, per-class covariance blocks only.

A different model from the softmax head (:mod:`glminterp.refit.one_vs_rest`): each class
against all others by its own logistic regression, fitted by the fast engine and accepted at
an optimum (:func:`glminterp.refit.acceptance.check_optimum`). Memory is ``K (p + 1)^2``
(the blocks), never the ``(K (p + 1))^2`` stacked covariance; cross-class covariances are not
estimated. On a ``family="ovr"`` model it is the same model as ``method="ml"`` (same
estimates and blocks), for K too large for the stacked covariance.
"""

from __future__ import annotations

import numpy as np

from glminterp import engine as E
from glminterp.refit import acceptance as acc
from glminterp.refit import likelihood as lk
from glminterp.refit.errors import FitError
from glminterp.refit.estimators.base import EstimatorFit, FitContext, check_options
from glminterp.refit.one_vs_rest import MODEL_NOTE, ovr_model


def _stats(llf: float, llnull: float, q: int, n: int, converged: bool) -> dict:
    return {"llf": llf, "llnull": llnull, "deviance": -2 * llf, "null_deviance": -2 * llnull,
            "lr_statistic": 2 * (llf - llnull), "lr_df": q - 1, "aic": -2 * llf + 2 * q,
            "bic": -2 * llf + q * np.log(n), "n_params": q, "converged": bool(converged)}


class OneVsRest:
    """One binomial logit per class (or per output), each with its own covariance block."""

    name = "ovr"
    remedy = None
    options: tuple[str, ...] = ("tol",)
    supports_bootstrap = False

    @property
    def result_class(self) -> type:
        from glminterp.refit.results_partial import OneVsRestRefitResult

        return OneVsRestRefitResult

    def check(self, model) -> None:
        """Logit families only."""
        model.require_logit(self.name)

    def fit(self, model, ctx: FitContext) -> EstimatorFit:
        opts = check_options(self.name, self.options, ctx.options)
        if ctx.cov_type != "nonrobust":
            raise ValueError(
                f"method='ovr' gives model-based per-class blocks only, not cov_type="
                f"{ctx.cov_type!r}; for the stacked sandwich across classes use family='ovr' "
                "with method='ml' (it needs the full stacked covariance in memory).")
        view = ovr_model(model)
        x, q = view.x, len(view.terms)
        k = view.y.shape[1]
        beta, blocks = np.zeros((q, k)), np.zeros((k, q, q))
        stats, crits, warned = [], [], []
        for j, cls in enumerate(view.output_classes):
            yj = view.y[:, j]
            start = view.network[:, j] if np.isfinite(view.network[:, j]).all() else None
            er = E.fit_binomial(x[:, 1:], yj, start=start, max_iter=ctx.maxiter,
                                tol=float(opts.get("tol", 1e-8)))
            null = lk.null_loglik_binomial(yj)
            llf = lk.loglik_binomial(x, yj, er.params)
            verdict = acc.check_optimum("binomial", x, yj, er.params, llf, null, er.fisher,
                                         info_factored=True)
            if not verdict.clean:
                check = view.separation_check(j)
                if check.separated and ctx.on_separation == "raise":
                    view.raise_separated([check])
                if check.separated:
                    warned.append(view.separation_warning([check]))
                elif not verdict.acceptable:
                    raise FitError(f"The one-vs-rest fit of class {cls!r} was not accepted: "
                                   f"{verdict.reason}; try a larger maxiter.")
            else:
                view.record_overlap(j, verdict.criterion())
            beta[:, j], blocks[j] = er.params, er.cov
            stats.append(_stats(llf, null, q, view.n_obs, verdict.acceptable))
            crits.append(verdict.criterion(not verdict.clean) if verdict.acceptable else
                         f"not an optimum: {verdict.reason} (separated data)")
            del er
        criterion = crits[0] if len(set(crits)) == 1 else "; ".join(
            f"{c}: {r}" for c, r in zip(view.output_classes, crits))
        note = f"{MODEL_NOTE} ({k} fits; cross-class covariances not estimated)"
        return EstimatorFit(
            beta=beta, cov=None, results=None, stats=stats,
            inference=f"maximum likelihood of {note} (Wald)", engine="fast", converged=all(
                s["converged"] for s in stats), criterion=criterion, labelled=True,
            start="network" if np.isfinite(view.network).all() else "null",
            notes=[note], warnings=warned,
            extras={"design": view, "cov_blocks": blocks, "estimator": self.name},
        )
