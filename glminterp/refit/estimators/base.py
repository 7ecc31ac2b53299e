"""The estimator protocol: what every refit method gives the results.

An estimator is a class with a ``name``, the results class its inference needs, the
``remedy_kwds`` it accepts, a ``check(model)`` that refuses a model it cannot fit, and
``fit(model, ctx) -> EstimatorFit``. The results read only :class:`EstimatorFit`, so adding an
estimator is one module plus one line in :data:`glminterp.refit.estimators.REGISTRY`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

if TYPE_CHECKING:
    from glminterp.refit.model import OutputLayerGLM


@dataclass(frozen=True)
class FitContext:
    """Options of one fit, validated by :meth:`OutputLayerGLM.fit`."""

    cov_type: str = "nonrobust"
    cov_kwds: dict | None = None  # normalised: cluster groups as integer codes
    alpha: float = 0.05
    maxiter: int = 100
    on_separation: str = "raise"
    progress: bool = False
    engine: str = "auto"
    options: dict = field(default_factory=dict)  # the estimator's own remedy_kwds


class Deferred:
    """A value computed on first use, once (the full covariance, statsmodels' results).

    An estimator may give :class:`EstimatorFit` a ``Deferred`` ``cov`` or ``results`` when
    computing it costs real time and the tables a user reads first do not need it;
    :meth:`EstimatorFit.covariance` and :meth:`EstimatorFit.result_objects` resolve it.
    """

    def __init__(self, make):
        self._make = make
        self._value: Any = None
        self._done = False
        self._lock = threading.Lock()

    def get(self) -> Any:
        if not self._done:
            with self._lock:
                if not self._done:
                    self._value, self._make = self._make(), None
                    self._done = True
        return self._value

    def __getstate__(self):  # pickle / deepcopy the value (the lock does not pickle)
        return {"value": self.get()}

    def __setstate__(self, state):
        self._value, self._make, self._done = state["value"], None, True
        self._lock = threading.Lock()


@dataclass
class EstimatorFit:
    """What an estimator returns; everything the results tables are computed from.

    Attributes
    ----------
    beta : ndarray, shape (q, K')
        Coefficients in the refit's own layout: reference parametrization ``(q, K - 1)`` for
        the multinomial, one column per output otherwise.
    cov : ndarray or Deferred
        Covariance of ``beta.ravel(order="F")`` (read it with :meth:`covariance`).
    results : object or Deferred
        The estimator's own result objects (statsmodels results, Firth/ridge/PCA results;
        read them with :meth:`result_objects`).
    stats : list of dict
        Fit statistics per fitted likelihood (one for the multinomial, one per output):
        llf, llnull, deviance, null_deviance, lr_statistic, lr_df, aic, bic, n_params,
        converged; None where a statistic is not valid for the estimator.
    inference : str
        What the standard errors, tests and intervals are (printed beside them).
    engine : str
        The solver that produced ``beta``.
    converged : bool
        True only if the fit was accepted as an optimum of its objective.
    criterion : str
        The rule that accepted (or rejected) the fit.
    labelled : bool
        True when every table row must carry ``inference`` (penalized / reduced inference).
    se : ndarray, optional
        ``sqrt(diag(cov))`` when the estimator has it without forming ``cov`` (flat, the
        order of ``beta.ravel(order="F")``).
    """

    beta: np.ndarray
    cov: np.ndarray
    results: Any
    stats: list[dict]
    inference: str
    engine: str
    converged: bool
    criterion: str
    labelled: bool = False
    start: str | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extras: dict = field(default_factory=dict)
    se: np.ndarray | None = None

    def covariance(self) -> np.ndarray:
        """``cov`` (formed on the first call where the estimator deferred it)."""
        return self.cov.get() if isinstance(self.cov, Deferred) else self.cov

    def result_objects(self) -> Any:
        """``results`` (built on the first call where the estimator deferred them)."""
        return self.results.get() if isinstance(self.results, Deferred) else self.results


class Estimator(Protocol):
    """One refit method (see the module docstring)."""

    name: ClassVar[str]
    remedy: ClassVar[str | None]
    options: ClassVar[tuple[str, ...]]

    def check(self, model: OutputLayerGLM) -> None: ...

    def fit(self, model: OutputLayerGLM, ctx: FitContext) -> EstimatorFit: ...

    @property
    def result_class(self) -> type: ...


class PenalizedLogitEstimator:
    """Shared by the penalized remedies (ridge, PCA): logit families only, penalized results."""

    name = "penalized"

    @property
    def result_class(self) -> type:
        from glminterp.refit.results import PenalizedRefitResult

        return PenalizedRefitResult

    def check(self, model: OutputLayerGLM) -> None:
        """Logit families only."""
        model.require_logit(self.name)


def check_options(name: str, allowed: tuple[str, ...], kwds: dict) -> dict:
    """Refuse ``remedy_kwds`` an estimator does not know."""
    unknown = sorted(set(kwds) - set(allowed))
    if unknown:
        raise ValueError(
            f"remedy_kwds {unknown} are not options of remedy={name!r}; use {list(allowed)}."
        )
    return dict(kwds)


def block_diag(blocks: list[np.ndarray]) -> np.ndarray:
    """Block-diagonal matrix of square blocks."""
    size = sum(b.shape[0] for b in blocks)
    out = np.zeros((size, size))
    i = 0
    for b in blocks:
        out[i : i + b.shape[0], i : i + b.shape[0]] = b
        i += b.shape[0]
    return out


def binary_targets(model: OutputLayerGLM) -> tuple[list[str], list[np.ndarray]]:
    """Output names and 0/1 responses of the binomial fits a per-output estimator runs."""
    if model.family == "multinomial":  # 2-class softmax: class 1 against class 0 (reference)
        return [str(model.head.classes[1])], [(model.y == 1).astype(np.float64)]
    return list(model.output_classes), [model.y[:, j] for j in range(model.y.shape[1])]


def penalized_stats(model: OutputLayerGLM, beta: np.ndarray, n_params: int, converged,
                    reduced_mle: bool = False, pll=None) -> list[dict]:
    """Per-fit statistics of a remedy at its estimate (LR/AIC/BIC only for a reduced MLE)."""
    from glminterp.refit import likelihood as lk

    x, y = model.x, model.y
    if model.family == "multinomial":
        llf = [lk.loglik_multinomial(x, y, beta)]
        lln = [lk.null_loglik_multinomial(y, beta.shape[1] + 1)]
        per_fit = beta.shape[1]
    else:
        llf = [lk.loglik_binomial(x, y[:, j], beta[:, j]) for j in range(beta.shape[1])]
        lln = [lk.null_loglik_binomial(y[:, j]) for j in range(beta.shape[1])]
        per_fit = 1
    out = []
    for j, (a, b) in enumerate(zip(llf, lln)):
        s = {"llf": a, "llnull": b, "deviance": -2 * a, "null_deviance": -2 * b,
             "lr_statistic": None, "lr_df": None, "aic": None, "bic": None,
             "n_params": int(n_params), "converged": bool(converged[j])}
        if reduced_mle:  # an MLE in the reduced model: LR, AIC, BIC are valid
            s.update(lr_statistic=2 * (a - b), lr_df=int(n_params - per_fit),
                     aic=-2 * a + 2 * n_params, bic=-2 * a + n_params * np.log(model.n_obs))
        if pll is not None:
            s["penalized_llf"] = float(pll[j])
        out.append(s)
    return out
