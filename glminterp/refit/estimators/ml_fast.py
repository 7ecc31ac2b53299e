"""Maximum likelihood by the fast engine (:mod:`glminterp.engine`), handed to statsmodels.

Damped Newton (step halving on the log-likelihood) or Newton-CG from a safe start: the
network's head when it beats the intercept-only fit, else the intercept-only fit. The optimum is
handed to statsmodels (``EngineResult.to_statsmodels``), so results objects, covariances (also
HC0 and cluster) and tests are statsmodels' own.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings

import numpy as np

from glminterp import engine as eng
from glminterp.refit import acceptance as acc
from glminterp.refit import likelihood as lk
from glminterp.refit.estimators.ml import MaximumLikelihood, Target

ENGINE = "fast"
#: The engine returns a fit only after a successful Cholesky factorisation of the information
#: it returns (``EngineResult.fisher``; :func:`glminterp.engine._finish`): the acceptance need
#: not factor it again (``check_optimum(info_factored=True)``).
INFO_FACTORED = True
# Iterations after which a non-converged, saturated fit asks the separation LP.
PROBE_ITER = 8
log = logging.getLogger("glminterp.refit")


def warm_start(target: Target, x: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The network's head as a start if finite and better than the intercept-only fit.

    Except where the engine runs Newton-CG (a multinomial above ``_AUTO_CG_MIN_PARAMS``
    parameters): there the intercept-only start is kept. Its preconditioner
    ``S^-1 (x) (X'X)^-1`` is the exact inverse information at that start (every row has the
    class frequencies as probabilities), and measured (``benchmarks/separation_check.py``,
    "warm start") the head's start saved no products: at N = 10,000, p = 256, K = 10 the
    null start took 30 products, the true weights 31, half of them (a weight-decayed head)
    38; at p = 128 a halved head spent its product budget and paid a second information
    matrix. With full Newton (fewer parameters) the head saves iterations and is used.
    """
    start = target.net_start
    if start is None or not np.isfinite(start).all():
        return None, "null"
    if target.kind == "multinomial" and _newton_cg(x.shape[0], *np.shape(start)):
        return None, "null"
    if target.kind == "multinomial":
        ll = lk.loglik_multinomial(x, target.y, start)
    else:
        ll = lk.loglik_binomial(x, target.y, start)
    return (start, "network") if np.isfinite(ll) and ll > target.null_ll else (None, "null")


def _newton_cg(n_obs: int, n_terms: int, n_free_classes: int) -> bool:
    """Whether the engine's default method resolves to Newton-CG for this multinomial."""
    return eng.solver_plan("auto", n_obs, n_terms, n_free_classes + 1)["method"] == "newton-cg"


def fit_target(model, target: Target, ctx, start=None):
    """statsmodels results at the engine's optimum, and the engine's information matrix.

    The multinomial with the model-based covariance returns a :class:`DeferredMNLogit`
    (statsmodels' results built on first use); robust covariances and the binomial are
    statsmodels' results at once (its sandwich is computed when it fits).
    """
    kw = {"cov_type": ctx.cov_type, "cov_kwds": ctx.cov_kwds}
    fit = eng.fit_multinomial if target.kind == "multinomial" else eng.fit_binomial
    er = _fit_probing(fit, model, target, ctx, start)
    if target.kind == "multinomial" and ctx.cov_type == "nonrobust":
        return DeferredMNLogit(er, model.features, target.y), er.fisher
    if target.kind == "multinomial":
        # the design's rank was checked when the model was built (diagnostics.rank_report):
        # statsmodels' own check would repeat a QR of the whole design
        return er.to_statsmodels(model.features, target.y, check_rank=False, **kw), er.fisher
    return er.to_statsmodels(model.features, target.y, model="glm", **kw), er.fisher


class DeferredMNLogit:
    """The engine's multinomial optimum (model-based covariance), handed to statsmodels on use.

    The coefficients and standard errors a user reads first need neither statsmodels'
    results object nor the full covariance: ``params`` and ``bse`` are the engine's
    (``EngineResult.bse``: the variances from its triangular inverse). :meth:`cov_array`
    forms the full inverse information once, and :meth:`materialize` builds statsmodels'
    ``MNLogitResults`` at the optimum (``EngineResult.to_statsmodels``, no Newton step, this
    covariance), both on first call. The information matrix itself is not kept (a
    model-based MNLogit hand-over does not read it): the results hold one ``m x m`` matrix,
    as statsmodels' own results would.
    """

    def __init__(self, er, features, y):
        self._er = dataclasses.replace(er, fisher=np.zeros((1, 1)))
        self._features, self._y = features, y
        self._sm = None
        self.params = np.asarray(er.params)

    @property
    def bse_flat(self) -> np.ndarray:
        """Standard errors of ``params.ravel(order="F")``."""
        return np.asarray(self._er.bse).ravel(order="F")

    def cov_array(self) -> np.ndarray:
        """The inverse information (formed on the first call, read-only)."""
        return self._er.cov

    def materialize(self):
        """statsmodels' ``MNLogitResults`` at this optimum (built once)."""
        if self._sm is None:
            # the design's rank was checked when the model was built
            # (diagnostics.rank_report): statsmodels' own check would repeat a QR of it
            self._sm = self._er.to_statsmodels(self._features, self._y, check_rank=False)
        return self._sm


def _fit_probing(fit, model, target: Target, ctx, start, early: bool | None = None):
    """The engine's fit, stopped early on separated data.

    A separated fit never converges: its coefficients grow until ``maxiter`` (at N=10,000,
    p=256, K=10, minutes of Newton steps). The first ``PROBE_ITER`` iterations watch for the
    signature of separated data (``detect_separation``: the engine's
    :class:`~glminterp.engine.DivergenceMonitor`, which stops Newton-CG after a handful of
    matrix-free steps instead of paying exact Newton steps, one information matrix each);
    when it shows, the separation LP decides (exact; cached on the model). Separated: the
    fit raises the monitor's :class:`SeparationError` (``early``), which the caller records
    as a failed fit and answers from the LP's check; overlapping after all: the fit runs
    again from ``start``. A fit that has not converged after ``PROBE_ITER`` iterations with
    saturated fitted probabilities also asks the LP; if the data are separated the fit stops
    there (the caller rejects it and raises or warns from the same check), else it continues
    from where it is.

    ``early`` (default: ``ctx.on_separation == "raise"``): stop at the monitor's signal.
    False where separated data must still return the fit's estimates (``"warn"``).
    """
    from glminterp.refit.separation import SeparationError

    if ctx.maxiter <= PROBE_ITER:
        return fit(model.features, target.y, start=start, max_iter=ctx.maxiter)
    early = ctx.on_separation == "raise" if early is None else early
    try:
        er = fit(model.features, target.y, start=start, max_iter=PROBE_ITER,
                 detect_separation=early)
    except SeparationError:
        if model.separation_check(target.index, ctx.progress).separated:
            log.info("fit %s stopped after at most %d iterations: they diverge as on "
                     "separated data, and the LP confirms separation", target.label,
                     PROBE_ITER)
            raise
        log.info("fit %s: the LP finds overlap after the divergence signal; fitting on",
                 target.label)
        return fit(model.features, target.y, start=start, max_iter=ctx.maxiter)
    if er.converged or _stalled_at_optimum(model, target, er):
        return er
    if (_saturated(model.x, target, er.params)
            and model.separation_check(target.index, ctx.progress).separated):
        log.info("fit %s stopped after %d iterations: the data are separated", target.label,
                 er.n_iter)
        return er
    return fit(model.features, target.y, start=er.params, max_iter=ctx.maxiter - er.n_iter)


def _stalled_at_optimum(model, target: Target, er) -> bool:
    """The probe's fit is already an optimum by the acceptance's rule (vanishing score,
    positive definite information) whose information is too ill-conditioned (condition above
    ``acceptance.COND_MAX``) for the engine's step criterion: Newton steps along its
    near-null directions are rounding noise, so more iterations (one information matrix each)
    cannot converge. The caller accepts or rejects it as it would after ``maxiter``; the
    condition is only known up to ``acceptance._EIG_MAX_DIM`` parameters."""
    info = getattr(er, "fisher", None)
    if info is None:
        return False
    beta = np.asarray(er.params, dtype=np.float64)
    llf = (lk.loglik_multinomial(model.x, target.y, beta) if target.kind == "multinomial"
           else lk.loglik_binomial(model.x, target.y, beta))
    verdict = acc.check_optimum(target.kind, model.x, target.y, beta, llf, target.null_ll,
                                info, info_factored=INFO_FACTORED)
    cond = verdict.record.get("info_condition")
    stalled = verdict.acceptable and cond is not None and cond > acc.COND_MAX
    if stalled:
        log.info("fit %s stopped after %d iterations: an optimum (vanishing score) whose "
                 "information has condition %.3g, beyond the step criterion's reach",
                 target.label, er.n_iter, cond)
    return stalled


def _saturated(x: np.ndarray, target: Target, beta: np.ndarray) -> bool:
    """Any observed outcome fitted with probability within ``SATURATION`` of 1."""
    with np.errstate(over="ignore", invalid="ignore"):
        eta = x @ np.asarray(beta, dtype=np.float64)
        if target.kind == "multinomial":
            eta = np.column_stack([np.zeros(x.shape[0]), eta])
            eta -= eta.max(axis=1, keepdims=True)
            log_p = eta[np.arange(x.shape[0]), target.y] - np.log(np.exp(eta).sum(axis=1))
        else:
            sign = np.where(np.asarray(target.y) > 0.5, 1.0, -1.0)
            log_p = -np.logaddexp(0.0, -sign * eta)
    return bool(np.any(~np.isfinite(log_p) | (log_p > np.log1p(-acc.SATURATION))))


def decide_separation(model, ctx) -> None:
    """Decide separation for every target of a remedy's model, the cheap way first.

    A remedy reports whether the data were separated. The maximum-likelihood fit (this engine,
    stopped early on separated data by :func:`_fit_probing`) decides it where it can: a clean
    optimum proves overlap (Albert & Anderson 1984), else its fitted probabilities may bound
    the separation LP's optimum (:meth:`OutputLayerGLM.certify_overlap`); only a target that
    neither decides runs the LP. On overlapping data the check then costs one MLE fit, not
    the LP (minutes at N = 10,000, p = 256, K = 10).
    """
    from glminterp.refit.estimators.ml import _FAILURES

    for target in model.targets():
        i = target.index
        if model.checked(i) is not None:
            continue
        t0 = time.perf_counter()
        log.info("separation (%s): maximum-likelihood fit first", target.label)
        fit = eng.fit_multinomial if target.kind == "multinomial" else eng.fit_binomial
        start, _ = warm_start(target, model.x)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the verdict below is the one truth
                er = _fit_probing(fit, model, target, ctx, start, early=True)
                beta = np.asarray(er.params, dtype=np.float64)
                llf = (lk.loglik_multinomial(model.x, target.y, beta)
                       if target.kind == "multinomial"
                       else lk.loglik_binomial(model.x, target.y, beta))
                verdict = acc.check_optimum(target.kind, model.x, target.y, beta, llf,
                                            target.null_ll, er.fisher,
                                            info_factored=INFO_FACTORED)
        except _FAILURES as e:
            log.info("separation (%s): the fit failed (%s): LP", target.label,
                     type(e).__name__)
            model.separation_check(i, ctx.progress)
            continue
        if verdict.clean:
            model.record_overlap(i, verdict.criterion())
        elif not model.certify_overlap(i, beta, er.cov):
            model.separation_check(i, ctx.progress)
        log.info("separation (%s) decided in %.2f s (%s)", target.label,
                 time.perf_counter() - t0, model.checked(i).method)


class FastEngineML(MaximumLikelihood):
    """Maximum likelihood with the fast engine only."""

    name = "ml_fast"
    engine = "fast"
