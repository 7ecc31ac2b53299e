"""Results of out-of-core / Dask fits (an :class:`~glminterp.engine.EngineResult`) as a RefitResult.

The rows never sit in memory, so the design here holds only what the tables need: terms,
classes, the network's head (if given) and the fit statistics the engine accumulated. The
results are :class:`~glminterp.refit.results.RefitResult`: the same coefficient table (any
parametrization, Holm/BH), unit Wald tests, fit statistics and agreement (Wald) test as an
in-memory refit; likelihood-ratio tests that need the rows are not offered.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from glminterp.head import Head
from glminterp.refit.estimators.base import Deferred, EstimatorFit


class _StreamedDesign:
    """The part of an :class:`OutputLayerGLM` a result reads, for rows that were streamed."""

    def __init__(self, er, head: Head | None):
        self.family = er.family
        self.terms = tuple(er.terms)
        p = len(self.terms) - 1
        names = tuple(str(c) for c in er.classes)
        k = len(names) if er.family == "multinomial" else 1
        if head is None:
            head = Head(name="(not given)", weight=np.full((k, p), np.nan),
                        bias=np.full(k, np.nan), link="softmax" if k > 1 else "sigmoid",
                        link_source="engine", input_layer="",
                        classes=names if k > 1 else (names[-1],))
        self.head = head
        self.network = head.coef_matrix()
        self.all_classes = names if er.family == "multinomial" else (str(names[-1]),)
        self.dropped = pd.DataFrame(columns=["unit", "reason"])
        self.n_obs = int(er.n_obs)
        self.x = np.empty((self.n_obs, 0))  # shape only: the rows were streamed
        self.y = None


def results_from_engine(er, *, head: Head | None = None, parametrization: str = "reference",
                        alpha: float = 0.05, null_llf: float | None = None):
    """A :class:`~glminterp.refit.results.RefitResult` from an out-of-core / Dask fit.

    Parameters
    ----------
    er : EngineResult
        From :func:`glminterp.scale.fit_multinomial_parquet`, ``fit_binomial_parquet`` or
        ``dask_fit_multinomial``.
    head : Head, optional
        The network's head, for the network columns and the agreement test (NaN without).
    parametrization, alpha
        As in :func:`~glminterp.refit.refit_output_layer`.
    null_llf : float, optional
        Intercept-only log-likelihood, for the LR test against it (None: not reported).
    """
    from glminterp.refit.results import RefitResult

    design = _StreamedDesign(er, head)
    beta = np.asarray(er.params, dtype=np.float64).reshape(len(design.terms), -1, order="F")
    k = beta.size
    per = beta.shape[1]
    llf = float(er.llf)
    stats = {"llf": llf, "llnull": null_llf, "deviance": -2 * llf,
             "null_deviance": None if null_llf is None else -2 * null_llf,
             "lr_statistic": None if null_llf is None else 2 * (llf - null_llf),
             "lr_df": None if null_llf is None else int(k - per),
             "aic": -2 * llf + 2 * k, "bic": -2 * llf + k * np.log(design.n_obs),
             "n_params": int(k), "converged": bool(er.converged)}
    criterion = (f"engine: Newton step below tol, largest score component {er.grad_norm:.2g}"
                 if er.converged else f"not converged (largest score component {er.grad_norm:.2g})")
    # SEs from the engine's triangular inverse; the full covariance is formed when read
    fit = EstimatorFit(beta=beta, cov=Deferred(lambda: np.asarray(er.cov)), results=er,
                       stats=[stats],
                       inference="maximum likelihood (Wald, cov_type=nonrobust; streamed rows)",
                       engine=f"fast:{er.method}", converged=bool(er.converged),
                       criterion=criterion, se=np.asarray(er.bse).ravel(order="F"))
    diagnostics = {"n_obs": design.n_obs, "events_per_parameter": float("nan"),
                   "engine": fit.engine, "convergence_criterion": criterion,
                   "separated": False, "separation": [], "notes": ["rows streamed out of core"]}
    return RefitResult(model=design, fit=fit, parametrization=parametrization, alpha=alpha,
                       cov_type="nonrobust", diagnostics=diagnostics, warnings_=())
