"""The GLM on leading principal components of the units, mapped back to unit coefficients."""

from __future__ import annotations

import warnings

import numpy as np

from glminterp import engine as eng
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


def n_components(arr: np.ndarray, scale: bool, min_variance: float) -> int:
    """The fewest components explaining ``min_variance`` of the (scaled) units' variance."""
    xs = arr - arr.mean(axis=0)
    if scale:
        sd = arr.std(axis=0)
        xs = xs / np.where(sd > 0, sd, 1.0)
    var = np.linalg.svd(xs, compute_uv=False) ** 2
    frac = np.cumsum(var) / var.sum()
    return int(np.searchsorted(frac, min_variance - 1e-12) + 1)


class PrincipalComponents(PenalizedLogitEstimator):
    """:func:`glminterp.refit.penalized.fit_pca`: reduced-rank inference."""

    name = "pca"
    remedy = "pca"
    options = ("n_components", "scale", "min_variance")

    def _fit_one(self, model, c, yc, k, family, scale):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                pr = pen.fit_pca(model.features, yc, n_components=k, family=family, scale=scale)
        except eng.FisherSingularError as e:
            raise FitError(
                f"The PCA refit with {k} components failed for {c} ({e}); the components are "
                "probably still separated: use fewer components or remedy='firth'."
            ) from e
        if not pr.fit.converged or not np.isfinite(pr.unit_params.to_numpy()).all():
            raise FitError(
                f"The PCA refit with {k} components did not converge for {c}; the component "
                "scores are probably still separated: use fewer components (remedy_kwds="
                "{'n_components': ...}) or remedy='firth'."
            )
        return pr

    def fit(self, model, ctx: FitContext) -> EstimatorFit:
        opts = check_options(self.name, self.options, ctx.options)
        scale = bool(opts.get("scale", False))
        k = opts.get("n_components")
        if k is None:
            k = n_components(model.features.to_numpy(dtype=np.float64), scale,
                             float(opts.get("min_variance", 0.9)))
        k = int(k)
        if model.family == "multinomial":
            targets, family = {"all": model.y}, "multinomial"
        else:
            targets, family = dict(zip(*binary_targets(model))), "binomial"
        fits = {c: self._fit_one(model, c, yc, k, family, scale) for c, yc in targets.items()}
        first = next(iter(fits.values()))
        beta = np.column_stack([f.unit_params.to_numpy() for f in fits.values()])
        per_fit = beta.shape[1] if model.family == "multinomial" else 1
        stats = penalized_stats(model, beta, (k + 1) * per_fit,
                                [f.fit.converged for f in fits.values()], reduced_mle=True)
        return EstimatorFit(
            beta=beta, cov=block_diag([f.unit_cov for f in fits.values()]),
            results=fits["all"] if model.family == "multinomial" else fits,
            stats=stats, inference=first.inference, engine="remedy:pca", converged=True,
            criterion="maximum likelihood on the components (engine step below tol)",
            labelled=True,
            extras={"n_components": k, "loadings": first.loadings,
                    "explained_variance_ratio": first.explained_variance_ratio,
                    "not_comparable": "restricted to the span of the leading principal "
                                      "components"},
        )
