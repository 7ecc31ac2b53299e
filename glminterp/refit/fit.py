"""One fit of an :class:`~glminterp.refit.model.OutputLayerGLM`: model -> estimator -> results."""

from __future__ import annotations

import warnings

from glminterp.refit import design as ds
from glminterp.refit.bootstrap import bootstrap as run_bootstrap
from glminterp.refit.errors import RefitWarning
from glminterp.refit.estimators import FitContext, get_estimator
from glminterp.refit.options import check_options


def _warn(msg: str, into: list[str]) -> None:
    into.append(msg)
    warnings.warn(msg, RefitWarning, stacklevel=5)


def _diagnostics(model, fit, remedy, checks) -> dict:
    return {
        "n_obs": model.n_obs,
        "n_units_input": len(model.all_units),
        "n_units_used": len(model.units),
        "dropped_units": list(model.dropped["unit"]),
        "rank": int(model.rank.rank),
        "condition_number": float(model.condition_number),
        "events_per_parameter": float(model.events_per_parameter),
        "p_over_n": float(model.p_over_n),
        "train_overlap": len(model.overlap),
        "train_overlap_ids": model.overlap[:20],
        "separated": any(c.separated for c in checks),
        "separation": [c.to_dict() for c in checks],
        "engine": fit.engine,
        "start": fit.start,
        "remedy": remedy,
        "convergence_criterion": fit.criterion,
        "notes": list(model.notes) + list(fit.notes),
        "split": model.split,
    }


def fit_model(
    model, method: str = "ml", *, engine: str = "auto", parametrization: str = "reference",
    cov_type: str = "nonrobust", cov_kwds: dict | None = None, alpha: float = 0.05,
    on_separation: str = "raise", bootstrap: int = 0, seed: int = 0,
    remedy_kwds: dict | None = None, maxiter: int = 100, progress: bool = True,
    contrasts=None, classes=None,
):
    """Fit ``model`` with the estimator registered as ``method``; options as
    :func:`~glminterp.refit.refit_output_layer`. Returns the estimator's results class."""
    est = get_estimator(method)()
    chosen = {k: v for k, v in (("contrasts", contrasts), ("classes", classes)) if v is not None}
    if not set(chosen) <= set(getattr(est, "options", ())):
        raise ValueError(f"{sorted(chosen)} are used by method='contrasts', 'class_subset' "
                         f"(classes) or 'auto', not method={method!r}.")
    if bootstrap and not getattr(est, "supports_bootstrap", True):
        raise ValueError(f"bootstrap={bootstrap} is not offered with method={method!r} (the "
                         "bootstrap refits the full maximum-likelihood model); use bootstrap=0.")
    check_options(family="auto", parametrization=parametrization, cov_type=cov_type,
                  alpha=alpha, on_collinear="raise", on_separation=on_separation,
                  remedy=None, bootstrap=bootstrap, engine=engine, maxiter=maxiter, seed=seed)
    if est.remedy is not None and (cov_type != "nonrobust" or bootstrap):
        check_options(family="auto", parametrization=parametrization, cov_type=cov_type,
                      alpha=alpha, on_collinear="raise", on_separation=on_separation,
                      remedy=est.remedy, bootstrap=bootstrap, engine=engine, maxiter=maxiter,
                      remedies=(None, est.remedy))
    est.check(model)
    warned = list(model.warnings)
    if est.remedy is None and remedy_kwds and not getattr(est, "options", ()):
        raise ValueError("remedy_kwds is only used with a remedy; pass remedy=... or drop it.")
    cov_kwds_n = ds.cluster_groups(cov_type, cov_kwds, model.obs)
    extra_notes = []
    ctx = FitContext(cov_type=cov_type, cov_kwds=cov_kwds_n, alpha=float(alpha),
                     maxiter=int(maxiter), on_separation=on_separation, progress=progress,
                     engine=engine, options={**(remedy_kwds or {}), **chosen})
    if est.remedy is not None and not getattr(est, "proves_overlap", False):
        # a remedy says whether the data were separated: the MLE fit decides where it can
        # (a clean optimum, or its dual bound on the LP), the LP only where it cannot
        from glminterp.refit.estimators.ml_fast import decide_separation

        decide_separation(model, ctx)
    fit = est.fit(model, ctx)
    # an estimator with proves_overlap decided separation in fit (clean MLE, else the LP)
    if est.remedy is not None and any(
            c.separated for c in model.separation_checks(run=True, progress=progress)):
        extra_notes.append(f"separated data: remedy={est.remedy!r} used instead of the "
                           "maximum-likelihood estimate, which does not exist here")
    fit.notes[:0] = extra_notes
    for msg in fit.warnings:
        _warn(msg, warned)
    boot = None
    if bootstrap:
        boot = run_bootstrap(model, fit.beta, int(bootstrap), seed, progress, cov_kwds_n, maxiter)
        if boot["failed"]:
            _warn(f"{boot['failed']} of {bootstrap} bootstrap replicates failed (separated, "
                  "not converged or a class missing) and were left out; percentile intervals "
                  f"use {bootstrap - boot['failed']} replicates.", warned)
    if est.remedy is not None:
        _warn(f"PENALIZED / REDUCED INFERENCE (remedy={est.remedy!r}): {fit.inference}.", warned)
    diagnostics = _diagnostics(model, fit, est.remedy, model.separation_checks())
    return est.result_class(
        model=model, fit=fit, parametrization=parametrization, alpha=float(alpha),
        cov_type=cov_type, diagnostics=diagnostics, warnings_=tuple(warned), bootstrap=boot,
        checks=model.separation_checks(), remedy=est.remedy,
    )
