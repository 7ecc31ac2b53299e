"""Chosen coefficients and contrasts as an estimator: the MLE without the full covariance.

The softmax head's maximum-likelihood fit, Hessian-free, and exact Wald standard errors of the
coefficients / contrasts the user names only (``SE(c'b)^2 = c' I^-1 c`` by preconditioned CG:
:mod:`glminterp.refit.contrasts`). Memory: the rows, their class probabilities and a few
``n_params x m`` blocks; no ``n_params^2`` matrix, so K = 1000 heads fit. The results tables
hold the chosen rows and say that the other standard errors were not computed.
"""

from __future__ import annotations

import numpy as np

from glminterp import engine as E
from glminterp.head import to_reference
from glminterp.refit import likelihood as lk
from glminterp.refit.contrasts import contrast_matrix, fit_contrasts
from glminterp.refit.estimators.base import EstimatorFit, FitContext, check_options


def contrast_spec(model, contrasts, classes) -> tuple[np.ndarray, tuple[str, ...], list]:
    """Rows ``C`` (reference parameters), labels and ``(class, term)`` of the chosen contrasts.

    ``contrasts``: items ``(class, term)``, ``(class_a, class_b, term)`` or an array of rows
    (:func:`glminterp.refit.contrasts.contrast_matrix`). ``classes``: every coefficient of
    these classes against the baseline (the head's first class).
    """
    names = tuple(str(c) for c in model.all_classes)
    spec = []
    if contrasts is None and classes is None:
        raise ValueError(
            "method='contrasts' needs contrasts=[(class, term), (class_a, class_b, term), ...] "
            f"or classes=[...] (e.g. contrasts=[({names[1]!r}, {model.terms[1]!r})])."
        )
    if isinstance(contrasts, np.ndarray):
        c, labels = contrast_matrix(contrasts, names, model.terms)
        return c, labels, [(lab, "") for lab in labels]
    for item in contrasts or ():
        if not isinstance(item, (tuple, list)):
            raise TypeError(f"contrasts item {item!r}: use (class, term) or (class_a, class_b, "
                            "term).")
        spec.append(tuple(str(v) for v in item))
    for cls in classes or ():
        if str(cls) == names[0]:
            raise ValueError(f"classes: {cls!r} is the baseline (no free coefficients); name "
                             "contrasts against another class instead.")
        spec += [(str(cls), t) for t in model.terms]
    c, labels = contrast_matrix(spec, names, model.terms)
    keys = [(" - ".join(s[:-1]), s[-1]) for s in spec]
    return c, labels, keys


class Contrasts:
    """Maximum likelihood, exact Wald SEs of the chosen coefficients / contrasts only."""

    name = "contrasts"
    remedy = None
    options: tuple[str, ...] = ("contrasts", "classes", "tol", "rtol", "cg_max_iter")
    supports_bootstrap = False

    @property
    def result_class(self) -> type:
        from glminterp.refit.results_partial import ContrastRefitResult

        return ContrastRefitResult

    def check(self, model) -> None:
        """Softmax heads only (per-output fits have small per-output blocks: use 'ovr')."""
        if model.family != "multinomial":
            raise ValueError(f"method='contrasts' is for a softmax head's multinomial refit; this "
                             f"one is family={model.family!r} (per-output fits keep per-output "
                             "covariance blocks: use method='ovr').")

    def fit(self, model, ctx: FitContext) -> EstimatorFit:
        opts = check_options(self.name, self.options, ctx.options)
        if ctx.cov_type != "nonrobust":
            raise ValueError(f"method='contrasts' computes model-based SEs (c' I^-1 c) only, not "
                             f"cov_type={ctx.cov_type!r}.")
        c, labels, keys = contrast_spec(model, opts.get("contrasts"), opts.get("classes"))
        net = to_reference(model.network)
        null = lk.null_loglik_multinomial(model.y, model.n_classes)
        start = net if np.isfinite(net).all() and lk.loglik_multinomial(
            model.x, model.y, net) > null else None
        kw = {k: opts[k] for k in ("tol", "rtol", "cg_max_iter") if k in opts}
        res = fit_contrasts(model.x[:, 1:], model.y, c, start=start, max_iter=ctx.maxiter,
                            detect_separation=ctx.on_separation == "raise", **kw)
        if res.converged:
            model.record_overlap(0, "matrix-free fit")
        n, m = model.n_params, len(labels)
        llf = float(res.llf)
        stats = [{"llf": llf, "llnull": null, "deviance": -2 * llf, "null_deviance": -2 * null,
                  "lr_statistic": 2 * (llf - null), "lr_df": n - (model.n_classes - 1),
                  "aic": -2 * llf + 2 * n, "bic": -2 * llf + n * np.log(model.n_obs),
                  "n_params": n, "converged": bool(res.converged)}]
        cv = res.convergence
        criterion = (f"matrix-free Newton-CG: largest score component {cv['grad_norm']:.2g}; "
                     f"I v = c solved to relative residual {cv['max_rel_residual']:.1e}")
        if not res.converged:
            criterion = "not converged: " + criterion
        return EstimatorFit(
            beta=res.params, cov=None, results=res, stats=stats,
            inference=(f"maximum likelihood; exact Wald SEs of the {m} chosen contrasts only "
                       f"(c' I^-1 c by matrix-free CG); the other {n - m} SEs were not computed"),
            engine="matrix-free", converged=bool(res.converged), criterion=criterion,
            labelled=True, start="network" if start is not None else "null",
            notes=[f"method='contrasts': {m} of {n} standard errors computed (the full "
                   f"covariance would need {E.covariance_bytes(n) / 2**30:.2f} GiB)"],
            extras={"contrast_rows": c, "labels": labels, "keys": keys, "estimator": self.name,
                    "convergence": {k: v for k, v in cv.items() if k != "seconds"}},
        )
