"""``method="auto"``: the full covariance while it fits in memory, else an exact partial one.

Checked before anything is allocated (:func:`glminterp.engine.check_covariance_memory`, the
same estimate the engine uses) and again if the fit itself runs out:

- it fits: maximum likelihood with the full covariance (``method="ml"``);
- a softmax head past the limit with ``contrasts=`` or ``classes=``: ``method="contrasts"``
  (exact SEs of those, matrix-free); without them a :class:`~glminterp.engine.
  CovarianceMemoryError` that names the options;
- per-output (one-vs-rest / binomial) fits past the limit: ``method="ovr"``, the same model
  with per-output covariance blocks only.

The choice and its reason are recorded (``fit_stats["estimator"]``,
``fit_stats["estimator_choice"]``, and so ``fit.json``); the reason names the bytes needed, not
the memory available at the time, so the record is the same on every rerun.
"""

from __future__ import annotations

from dataclasses import replace

from glminterp import engine as E
from glminterp.refit.estimators.base import EstimatorFit, FitContext, check_options


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


class Auto:
    """Maximum likelihood with the full covariance if it fits, else contrasts / one-vs-rest."""

    name = "auto"
    remedy = None
    options: tuple[str, ...] = ("contrasts", "classes", "max_memory")
    supports_bootstrap = False

    def __init__(self) -> None:
        self._chosen: object | None = None

    @property
    def result_class(self) -> type:
        from glminterp.refit.results_partial import AutoMLRefitResult

        if self._chosen is None or self._chosen.name == "ml":
            return AutoMLRefitResult
        return self._chosen.result_class

    def check(self, model) -> None:
        """Every family: the choice is made in :meth:`fit`."""

    def _fallback(self, model, opts: dict, need: int, limit: int) -> tuple[object, str]:
        from glminterp.refit.estimators.contrasts import Contrasts
        from glminterp.refit.estimators.ovr import OneVsRest

        n = model.n_params
        head = f"auto: the full covariance of {n} parameters needs {_gib(need)}, more than allowed"
        if model.family == "multinomial" and (opts.get("contrasts") is not None
                                              or opts.get("classes") is not None):
            return Contrasts(), (f"{head}; chose method='contrasts' (exact Wald SEs of the "
                                 "requested coefficients / contrasts, matrix-free)")
        if model.family in ("ovr", "binomial"):
            return OneVsRest(), (f"{head}; chose method='ovr' (the same per-output logits, "
                                 "per-output covariance blocks only)")
        cls = [str(c) for c in model.all_classes]
        raise E.CovarianceMemoryError(
            f"The full covariance of {n} parameters needs {_gib(need)} but {_gib(limit)} are "
            "allowed, and method='auto' was not told what to compute instead. Pass "
            f"contrasts=[({cls[-1]!r}, {model.terms[-1]!r}), ({cls[-1]!r}, {cls[1]!r}, "
            f"{model.terms[-1]!r}), ...] or classes=[{cls[-1]!r}, ...] (exact SEs of those "
            "only, method='contrasts'); or method='class_subset' with classes=[...] (the "
            "conditional model on those classes' rows, full inference); or method='ovr' (one-"
            "vs-rest logits, a different model, per-class covariance blocks); or raise "
            "max_memory.", n_params=n, needed=need, available=limit)

    def fit(self, model, ctx: FitContext) -> EstimatorFit:
        from glminterp.refit.estimators.ml import MaximumLikelihood

        opts = check_options(self.name, self.options, ctx.options)
        need = E.covariance_bytes(model.n_params)
        limit = opts.get("max_memory")
        limit = int(limit) if limit is not None else int(
            E._MEMORY_FRACTION * E.available_memory_bytes())
        fit = None
        if need <= limit:
            try:
                fit = MaximumLikelihood().fit(model, replace(ctx, options={}))
                self._chosen = MaximumLikelihood()
                reason = (f"auto: the full covariance of {model.n_params} parameters "
                          f"({_gib(need)}) fits; maximum likelihood with the full covariance")
            except E.CovarianceMemoryError as err:
                limit = min(limit, err.available)
        if fit is None:
            self._chosen, reason = self._fallback(model, opts, need, limit)
            sub = {k: opts[k] for k in ("contrasts", "classes") if k in opts
                   and k in self._chosen.options}
            fit = self._chosen.fit(model, replace(ctx, options=sub))
        if self._chosen.name == "ml" and model.family == "multinomial" and (
                opts.get("contrasts") is not None or opts.get("classes") is not None):
            from glminterp.refit.estimators.contrasts import contrast_spec

            c, labels, keys = contrast_spec(model, opts.get("contrasts"), opts.get("classes"))
            fit.extras.update(contrast_rows=c, labels=labels, keys=keys)
        fit.extras["choice"] = {"method": "auto", "chosen": self._chosen.name, "reason": reason}
        fit.extras.setdefault("estimator", self._chosen.name)
        fit.notes.append(reason)
        return fit
