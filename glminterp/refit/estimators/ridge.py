"""Ridge (L2-penalized) logit as a refit estimator: penalized inference, sandwich covariance."""

from __future__ import annotations

import numpy as np

from glminterp.refit import penalized as pen
from glminterp.refit.errors import FitError
from glminterp.refit.estimators.base import (
    EstimatorFit,
    FitContext,
    PenalizedLogitEstimator,
    binary_targets,
    block_diag,
    check_options,
    penalized_stats,
)


class Ridge(PenalizedLogitEstimator):
    """:func:`glminterp.refit.penalized.fit_ridge`, multinomial or one binomial fit per output."""

    name = "ridge"
    remedy = "ridge"
    options = ("lam", "tol", "max_iter")

    def fit(self, model, ctx: FitContext) -> EstimatorFit:
        opts = check_options(self.name, self.options, ctx.options)
        lam = float(opts.get("lam", 1.0))
        rkw = {k: opts[k] for k in ("tol", "max_iter") if k in opts}
        notes = []
        if model.family == "multinomial":
            rr = pen.fit_ridge(model.features, model.y, lam=lam, family="multinomial", **rkw)
            fits = {"all": rr}
            beta, cov = rr.params.to_numpy(), rr.cov
        else:
            names, targets = binary_targets(model)
            fits = {c: pen.fit_ridge(model.features, yc, lam=lam, family="binomial", **rkw)
                    for c, yc in zip(names, targets)}
            beta = np.column_stack([f.params.to_numpy()[:, 0] for f in fits.values()])
            cov = block_diag([f.cov for f in fits.values()])
            if len(fits) > 1:
                notes.append("ridge remedy with per-output fits: cross-output covariance "
                             "blocks are zero (outputs treated as independent)")
        bad = [c for c, f in fits.items() if not f.converged]
        if bad:
            raise FitError(f"The ridge fit did not converge for {bad}; increase max_iter or lam.")
        per_fit = beta.shape[1] if model.family == "multinomial" else 1
        stats = penalized_stats(model, beta, len(model.terms) * per_fit,
                                [f.converged for f in fits.values()])
        return EstimatorFit(
            beta=beta, cov=cov, results=fits["all"] if model.family == "multinomial" else fits,
            stats=stats, inference=next(iter(fits.values())).inference, engine="remedy:ridge",
            converged=True, criterion="penalized score below tol", labelled=True, notes=notes,
            extras={"lam": lam, "not_comparable": "shrunken toward 0 by the ridge penalty"},
        )
