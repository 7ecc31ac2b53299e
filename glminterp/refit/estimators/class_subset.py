"""Class-subset refit as an estimator: the conditional multinomial logit on the rows of S.

The rows whose class is in ``S`` follow a softmax over ``S`` with the network's own
coefficients (:mod:`glminterp.refit.class_subset`), so maximum likelihood on them
(:class:`~glminterp.refit.estimators.ml.MaximumLikelihood`, every acceptance check included)
gives full inference in ``(p + 1)(|S| - 1)`` parameters where the full model's covariance does
not fit. The results say it is the conditional model on the rows of ``S``.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from glminterp.refit.class_subset import subset_model
from glminterp.refit.estimators.base import EstimatorFit, FitContext, check_options
from glminterp.refit.estimators.ml import MaximumLikelihood


def subset_cov_kwds(cov_kwds: dict | None, keep: np.ndarray) -> dict | None:
    """Cluster groups of the subset rows, recoded 0..G-1."""
    if not cov_kwds or "groups" not in cov_kwds:
        return cov_kwds
    _, codes = np.unique(np.asarray(cov_kwds["groups"])[keep], return_inverse=True)
    return {**cov_kwds, "groups": codes}


class ClassSubset:
    """Maximum likelihood of the conditional model on the rows whose class is in ``classes``."""

    name = "class_subset"
    remedy = None
    options: tuple[str, ...] = ("classes", "baseline")
    supports_bootstrap = False

    @property
    def result_class(self) -> type:
        from glminterp.refit.results_partial import ClassSubsetRefitResult

        return ClassSubsetRefitResult

    def check(self, model) -> None:
        """Softmax heads (multinomial family) only."""
        if model.family != "multinomial":
            raise ValueError(f"method='class_subset' needs a softmax head's multinomial refit; "
                             f"this one is family={model.family!r}.")

    def fit(self, model, ctx: FitContext) -> EstimatorFit:
        opts = check_options(self.name, self.options, ctx.options)
        with warnings.catch_warnings():  # recorded on the subset model, issued once by the fit
            warnings.simplefilter("ignore")
            sub = subset_model(model, opts.get("classes"), opts.get("baseline"))
        sub_ctx = replace(ctx, cov_kwds=subset_cov_kwds(ctx.cov_kwds, sub.row_mask), options={})
        fit = MaximumLikelihood().fit(sub, sub_ctx)
        s = list(sub.all_classes)
        what = (f"conditional multinomial logit on the {sub.n_obs} of {model.n_obs} rows whose "
                f"class is in S={s} (baseline {s[0]!r}): P(y=k | y in S, x)")
        fit.inference = f"maximum likelihood of the {what} (Wald, cov_type={ctx.cov_type})"
        fit.labelled = True
        fit.notes.append(f"class subset: {what}; coefficients are the head's w_k - w_{s[0]} for "
                         "k in S, estimated from the subset rows only (says nothing about the "
                         "other classes)")
        fit.notes[:0] = list(sub.notes)
        fit.warnings[:0] = [w for w in sub.warnings if w not in model.warnings]
        fit.extras.update(design=sub, estimator=self.name, class_subset=s)
        return fit
