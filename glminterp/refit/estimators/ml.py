"""Maximum likelihood, accepted only at an optimum: one path for every family and engine.

Each fitted likelihood (the multinomial, or one binomial / gaussian GLM per output) is a
:class:`Target`. A target is fitted by the chosen engine, then judged by
:func:`glminterp.refit.acceptance.check_optimum`:

- a *clean* optimum proves overlap (Albert & Anderson 1984): no separation check is run;
- otherwise the separation linear program runs (it also names the separating units): separated
  data raise :class:`~glminterp.refit.separation.SeparationError` (or warn);
- data that overlap get the damped Newton engine from another start (``engine="auto"``) until
  the fit is an optimum, else :class:`~glminterp.refit.errors.FitError` says why.

The rule that accepted each fit is recorded (``convergence_criterion``), and statsmodels'
own convergence warnings are not shown for a fit the package accepted.
"""

from __future__ import annotations

import gc
import importlib
import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
import statsmodels.api as sm
from tqdm.auto import tqdm

from glminterp import engine as eng
from glminterp.refit import acceptance as acc
from glminterp.refit import likelihood as lk
from glminterp.refit.errors import FitError
from glminterp.refit.estimators.base import Deferred, EstimatorFit, FitContext
from glminterp.refit.options import AUTO_ENGINE_MIN_PARAMS

log = logging.getLogger("glminterp.refit")
_FAILURES = (np.linalg.LinAlgError, eng.FisherSingularError, ValueError, OverflowError)


@dataclass
class Target:
    """One fitted likelihood: its response, the network's start and the null log-likelihood."""

    index: int
    label: str
    key: str  # the output's name (results dict key)
    kind: str  # "multinomial", "binomial" or "gaussian"
    y: np.ndarray
    net_start: np.ndarray | None
    null_ll: float


@dataclass
class _Solved:
    res: object
    verdict: acc.Verdict
    engine: str
    start: str
    overlap_by_lp: bool = False
    rejected: tuple[str, ...] = ()  # earlier attempts: "engine (start): reason"
    overlap_by: str = "lp"  # what proved overlap for a fit that was not clean: "lp" or "dual"
    cov: np.ndarray | None = None  # res's covariance as an array (see _cov_array)


def _engine_module(engine: str):
    return importlib.import_module(f"glminterp.refit.estimators.ml_{engine}")


def choose_engine(engine: str, model) -> str:
    """The engine that runs first (gaussian: statsmodels' exact least squares)."""
    if model.family == "gaussian":
        return "statsmodels"
    if engine == "auto":
        return "fast" if model.n_params > AUTO_ENGINE_MIN_PARAMS else "statsmodels"
    return engine


def _judge(target: Target, model, res, info, factored: bool = False) -> acc.Verdict:
    if target.kind == "gaussian":
        ok = np.isfinite(np.asarray(res.params)).all()
        return acc.Verdict(bool(ok), bool(ok), "" if ok else "non-finite least squares",
                           {"closed_form": True})
    beta = np.asarray(res.params, dtype=np.float64)
    return acc.check_optimum(target.kind, model.x, target.y, beta, _llf(target, model, res),
                             target.null_ll, info, info_factored=factored)


def _llf(target: Target, model, res) -> float:
    """Stable log-likelihood (statsmodels' MNLogit overflows for |eta| > 709 at the optimum)."""
    beta = np.asarray(res.params, dtype=np.float64)
    if target.kind == "multinomial":
        return lk.loglik_multinomial(model.x, target.y, beta)
    if target.kind == "binomial":
        return lk.loglik_binomial(model.x, target.y, beta)
    return float(res.llf)


def _run(engine: str, target: Target, model, ctx: FitContext, start_kind: str) -> _Solved:
    """Fit one target with one engine from one start; failures become a rejected verdict."""
    start, used = None, "null"
    t0 = time.perf_counter()
    if engine == "fast" and start_kind == "network":
        start, used = _engine_module("fast").warm_start(target, model.x)
    log.info("fit %s with %s (%s start): %d rows, %d parameters", target.label, engine,
             used, model.n_obs, model.n_params)
    try:
        with warnings.catch_warnings():
            # statsmodels' and the engine's own convergence/overflow warnings are replaced by
            # the acceptance verdict (one truth about convergence).
            warnings.simplefilter("ignore")
            module = _engine_module(engine)
            res, info = module.fit_target(model, target, ctx, start)
            verdict = _judge(target, model, res, info, getattr(module, "INFO_FACTORED", False))
            # computed inside the filter (statsmodels may warn); a deferred hand-over later
            cov = None if hasattr(res, "materialize") else _cov_array(res)
    except _FAILURES as e:
        return _Solved(None, acc.Verdict(False, False, f"{type(e).__name__}: {e}"), engine, used)
    log.info("fit %s done in %.2f s: %s", target.label, time.perf_counter() - t0,
             "clean optimum" if verdict.clean else verdict.reason or "acceptable")
    return _Solved(res, verdict, engine, used, cov=cov)


def _cov_array(res) -> np.ndarray:
    """statsmodels' covariance of ``res`` (``res.cov_params()``'s numbers) as a float64 array.

    ``res.cov_params()`` on a results *wrapper* builds a labelled DataFrame, and on the
    results object itself returns ``normalized_cov_params * scale``: at 2,313 parameters
    each is a new 42 MB matrix (0.02-0.4 s, mostly page faults on a busy machine). The
    array statsmodels returns is read here without the copy: its robust
    ``cov_params_default``, or ``normalized_cov_params`` itself where the scale is 1 (the
    logit families; ``x * 1.0`` is ``x`` bit for bit).
    """
    if hasattr(res, "cov_array"):  # a deferred hand-over (ml_fast.DeferredMNLogit)
        return np.asarray(res.cov_array(), dtype=np.float64)
    inner = getattr(res, "_results", res)
    if hasattr(inner, "cov_params_default"):
        return np.asarray(inner.cov_params_default, dtype=np.float64)
    ncov = getattr(inner, "normalized_cov_params", None)
    if ncov is not None and float(inner.scale) == 1.0:
        return np.asarray(ncov, dtype=np.float64)
    return np.asarray(inner.cov_params(), dtype=np.float64)


def _retry(target, model, ctx, first: _Solved, engine_choice: str) -> _Solved:
    """Another engine / start for a target whose data overlap but whose fit was rejected."""
    plans = []
    if first.engine == "statsmodels" and engine_choice == "auto":
        plans = [("fast", "network"), ("fast", "null")]
    elif first.engine == "fast":
        plans = [("fast", "null")] if first.start == "network" else []
    tried = (f"{first.engine} ({first.start} start): {first.verdict.reason}",)
    for engine, start in plans:
        got = _run(engine, target, model, ctx, start)
        if got.verdict.acceptable:
            got.rejected = tried
            return got
        tried += (f"{engine} ({start} start): {got.verdict.reason}",)
    first.rejected = tried
    return first


def _resolve(targets, solved, model, ctx, engine_choice) -> list[str]:
    """Separation check where a fit is not clean; retries; returns warnings to record."""
    out: list[str] = []
    doubtful = [i for i, s in enumerate(solved) if not s.verdict.clean]
    for i, s in enumerate(solved):
        if s.verdict.clean:
            model.record_overlap(i, s.verdict.criterion())
    if not doubtful:
        return out
    # the fit's probabilities may prove overlap (a dual bound on the LP) without the LP
    dual = {i for i in doubtful if solved[i].res is not None
            and model.certify_overlap(i, np.asarray(solved[i].res.params),
                                      _model_cov(solved[i], ctx))}
    checks = {i: model.separation_check(i, ctx.progress) for i in doubtful if i not in dual}
    separated = [i for i in doubtful if i in checks and checks[i].separated]
    if separated:
        if ctx.on_separation == "raise":
            model.raise_separated([checks[i] for i in separated])
        out.append(model.separation_warning([checks[i] for i in separated]))
    for i in doubtful:
        if i in separated:
            if solved[i].res is None:
                raise FitError(f"The {targets[i].label} fit failed on separated data "
                               f"({solved[i].verdict.reason}); there is no estimate to return.")
            continue
        s = solved[i] if solved[i].verdict.acceptable else _retry(
            targets[i], model, ctx, solved[i], engine_choice)
        if not s.verdict.acceptable:
            raise FitError(
                f"The {targets[i].label} maximum-likelihood fit was not accepted: "
                f"{'; '.join(s.rejected) or s.verdict.reason}. The data overlap ("
                + ("the fit's dual bound on the separation linear program excludes a "
                   "separating direction" if i in dual else "the separation linear program "
                   "found no separating direction")
                + "), so the MLE exists: try "
                "engine='fast' or a larger maxiter, or check the diagnostics (condition number, "
                "events per parameter)."
            )
        s.overlap_by_lp = True
        s.overlap_by = "dual" if i in dual else "lp"
        solved[i] = s
    return out


def _model_cov(solved: _Solved, ctx) -> np.ndarray | None:
    """The inverse information of a fit (polishes the dual bound), None for robust covariances."""
    if ctx.cov_type != "nonrobust" or solved.res is None:
        return None
    cov = solved.cov if solved.cov is not None else _cov_array(solved.res)
    return cov if np.isfinite(cov).all() else None


class MaximumLikelihood:
    """Maximum likelihood with the engine chosen by ``ctx.engine`` (``"auto"`` by size)."""

    name = "ml"
    remedy = None
    options: tuple[str, ...] = ()
    engine: str | None = None  # None: the fit's ``engine`` option

    @property
    def result_class(self) -> type:
        from glminterp.refit.results import MLRefitResult

        return MLRefitResult

    def check(self, model) -> None:
        """Every family has a maximum-likelihood fit."""

    def fit(self, model, ctx: FitContext) -> EstimatorFit:
        """Fit every target, accept each at an optimum, assemble coefficients and covariance."""
        engine_choice = self.engine or ctx.engine
        first = choose_engine(engine_choice, model)
        targets = model.targets()
        it = tqdm(targets, desc=f"refit {model.family}",
                  disable=not ctx.progress or len(targets) < 2)
        solved = []
        for t in it:
            solved.append(_run(first, t, model, ctx, "network"))
            if len(targets) > 1:
                gc.collect()  # statsmodels' IRLS keeps per-iteration copies of X in cycles
        warned = _resolve(targets, solved, model, ctx, engine_choice)
        return self._assemble(model, ctx, targets, solved, warned)

    def _assemble(self, model, ctx, targets, solved, warned) -> EstimatorFit:
        accepted = all(s.verdict.acceptable for s in solved)
        crits = [s.verdict.criterion(s.overlap_by_lp and s.overlap_by) if s.verdict.acceptable else
                 f"not an optimum: {s.verdict.reason} (separated data)" for s in solved]
        engines = sorted({s.engine for s in solved})
        notes = [f"{t.label}: rejected {'; '.join(s.rejected)}; accepted the {s.engine} "
                 f"engine's fit from the {s.start} start" for t, s in zip(targets, solved)
                 if s.rejected and s.verdict.acceptable]
        engine = engines[0] if len(engines) == 1 else "+".join(engines)
        starts = {s.start for s in solved}
        start = starts.pop() if len(starts) == 1 else "mixed"
        stats = [_stats(model, t, s, c) for t, s, c in zip(targets, solved, crits)]
        se = None
        if model.family == "multinomial":
            res = solved[0].res
            beta = np.asarray(res.params, dtype=np.float64)
            if hasattr(res, "materialize"):  # the fast engine's optimum, handed over on use
                cov, results, se = Deferred(res.cov_array), Deferred(res.materialize), res.bse_flat
            else:
                cov = solved[0].cov if solved[0].cov is not None else _cov_array(res)
                results = res
        else:
            results = {t.key: s.res for t, s in zip(targets, solved)}
            beta = np.column_stack([np.asarray(s.res.params, dtype=np.float64) for s in solved])
            cov, note = _per_output_cov(model, ctx, list(results.values()))
            if note:
                notes.append(note)
        return EstimatorFit(
            beta=beta, cov=cov, results=results, stats=stats,
            inference=f"maximum likelihood (Wald, cov_type={ctx.cov_type})",
            engine=engine, converged=accepted,
            criterion=crits[0] if len(set(crits)) == 1 else "; ".join(
                f"{t.label}: {c}" for t, c in zip(targets, crits)),
            start=start, notes=notes, warnings=warned, se=se,
        )


def _stats(model, target: Target, s: _Solved, criterion: str) -> dict:
    res = s.res
    llf = _llf(target, model, res)
    llnull = float(res.llnull) if target.kind == "gaussian" else target.null_ll
    if target.kind == "multinomial":
        k = model.n_params
        n_par, dev, ndev, lr_df = k, -2 * llf, -2 * llnull, k - (model.n_classes - 1)
        k_ic = k
    else:
        n_par = len(model.terms)
        dev, ndev, lr_df = -2 * llf, -2 * llnull, n_par - 1
        if target.kind == "gaussian":  # residual sum of squares, not -2 llf
            dev, ndev = float(res.deviance), float(res.null_deviance)
        k_ic = n_par + (1 if target.kind == "gaussian" else 0)
    return {
        "llf": llf, "llnull": llnull, "deviance": dev, "null_deviance": ndev,
        "lr_statistic": 2 * (llf - llnull), "lr_df": int(lr_df),
        "aic": -2 * llf + 2 * k_ic, "bic": -2 * llf + k_ic * np.log(model.n_obs),
        "n_params": int(n_par), "converged": bool(s.verdict.acceptable),
        "convergence_criterion": criterion,
    }


def _per_output_cov(model, ctx, fits: list) -> tuple[np.ndarray, str | None]:
    q = len(model.terms)
    if ctx.cov_type == "nonrobust":
        cov = np.zeros((q * len(fits),) * 2)
        for j, r in enumerate(fits):
            cov[j * q : (j + 1) * q, j * q : (j + 1) * q] = _cov_array(r)
        note = None
        if len(fits) > 1:
            note = ("cov_type='nonrobust' with per-output fits: cross-output covariance blocks "
                    "are zero (outputs treated as independent); use cov_type='HC0' for the "
                    "stacked sandwich that accounts for their dependence.")
        return cov, note
    return cross_cov(fits, model.x, model.y, ctx.cov_type, ctx.cov_kwds), None


def cross_cov(results: list, x: np.ndarray, y: np.ndarray, cov_type: str, cov_kwds) -> np.ndarray:
    """Stacked-estimating-equation sandwich across per-output fits (HC0 / cluster).

    Cov(b_j, b_k) = A_j^-1 (sum_n s_nj s_nk') A_k^-1 with s_nj = x_n (y_nj - mu_nj) / phi_j and
    A_j = X' W_j X / phi_j; for j == k this is statsmodels' own HC0/cluster block.
    """
    q = x.shape[1]
    scores, bread = [], []
    for j, res in enumerate(results):
        mu = np.asarray(res.fittedvalues)
        scale = float(res.scale)
        gauss = isinstance(res.model.family, sm.families.Gaussian)
        w = np.ones_like(mu) if gauss else np.asarray(res.model.family.variance(mu))
        scores.append(x * ((y[:, j] - mu) / scale)[:, None])
        bread.append(np.linalg.inv((x * w[:, None]).T @ x / scale))
    s = np.hstack(scores)
    factor = 1.0
    if cov_type == "cluster":
        g = cov_kwds["groups"]
        n_groups = int(g.max()) + 1
        s = np.vstack([np.bincount(g, weights=s[:, i], minlength=n_groups)
                       for i in range(s.shape[1])]).T
        if cov_kwds.get("use_correction", True):
            n = x.shape[0]
            factor = n_groups / (n_groups - 1) * (n - 1) / (n - q)
    meat = s.T @ s * factor
    k = len(results)
    cov = np.zeros((q * k, q * k))
    for a in range(k):
        for b in range(k):
            cov[a * q : (a + 1) * q, b * q : (b + 1) * q] = (
                bread[a] @ meat[a * q : (a + 1) * q, b * q : (b + 1) * q] @ bread[b]
            )
    return cov
