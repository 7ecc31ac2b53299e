"""Refit a network's output layer as a GLM with statsmodels: honest inference on its coefficients.

The head's inputs (hidden units) are the regressors; the labels are the response. A softmax head
becomes a multinomial logit (``MNLogit``), a sigmoid head one binomial GLM per output, an
identity head a gaussian GLM; a softmax head can also be refitted one-vs-rest. The entry point is
:func:`refit_output_layer`; it returns a :class:`RefitResult`.

Before fitting, the design is checked (:mod:`glminterp.diagnostics`): constant units are dropped,
exact collinearity raises (or drops, on request), the condition number and events per parameter
are recorded, and rows the network was trained on are flagged. Separation is detected with a
linear program (:mod:`glminterp.separation`) because statsmodels returns NaN or absurd standard
errors without failing.
"""

from __future__ import annotations

import gc
import html
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats
from scipy.special import expit, log_expit
from tqdm.auto import tqdm

from glminterp import diagnostics as dg
from glminterp import engine as eng
from glminterp import firth
from glminterp import penalized as pen
from glminterp import separation as sep
from glminterp.activations import Activations
from glminterp.head import Head, to_reference, to_sum_to_zero
from glminterp.parametrize import fold_dropped_units, sum_to_zero_cov
from glminterp.responses import build_response

FAMILIES: tuple[str, ...] = ("auto", "multinomial", "ovr", "binomial", "gaussian")
COV_TYPES: tuple[str, ...] = ("nonrobust", "HC0", "cluster")
REMEDIES: tuple[str | None, ...] = (None, "firth", "ridge", "pca")
ENGINES: tuple[str, ...] = ("auto", "statsmodels", "fast")
#: ``engine="auto"`` uses the fast engine above this many parameters (statsmodels' MNLogit
#: Hessian loop dominates there; below it statsmodels is fast enough and is the reference).
AUTO_ENGINE_MIN_PARAMS = 200
_AUTO_FAMILY = {"softmax": "multinomial", "sigmoid": "binomial", "identity": "gaussian"}
_TOL = 1e-12


class RefitWarning(UserWarning):
    """A condition that weakens the refit's inference (training overlap, low EPP, ...)."""


class FitError(RuntimeError):
    """statsmodels did not reach a finite, converged maximum-likelihood estimate."""


# ----------------------------------------------------------------------------- validation
def _check_options(
    family, parametrization, cov_type, alpha, on_collinear, on_separation, remedy, bootstrap,
    engine="statsmodels",
) -> None:
    if remedy not in REMEDIES:
        raise ValueError(f"remedy={remedy!r} is not known; use one of {REMEDIES}.")
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} is not known; use one of {ENGINES}.")
    if family not in FAMILIES:
        raise ValueError(f"family={family!r} is not known; use one of {FAMILIES}.")
    if parametrization not in ("reference", "sum_to_zero"):
        raise ValueError(
            f"parametrization={parametrization!r}; use 'reference' or 'sum_to_zero'."
        )
    if cov_type in ("HC1", "HC2", "HC3"):
        raise ValueError(
            f"cov_type={cov_type!r} is not offered: statsmodels 0.15 silently returns HC0 for "
            "GLM and MNLogit when asked for HC1-HC3. Use cov_type='HC0' (sandwich) or "
            "'cluster' (with cov_kwds={'groups': ...})."
        )
    if cov_type not in COV_TYPES:
        raise ValueError(f"cov_type={cov_type!r} is not known; use one of {COV_TYPES}.")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}.")
    if on_collinear not in ("raise", "drop"):
        raise ValueError(f"on_collinear={on_collinear!r}; use 'raise' or 'drop'.")
    if on_separation not in ("raise", "warn"):
        raise ValueError(f"on_separation={on_separation!r}; use 'raise' or 'warn'.")
    if int(bootstrap) < 0:
        raise ValueError(f"bootstrap must be a non-negative number of replicates, got {bootstrap}.")
    if remedy is not None and cov_type != "nonrobust":
        raise ValueError(
            f"cov_type={cov_type!r} cannot be combined with remedy={remedy!r}: the remedy fixes "
            "its own covariance (Firth: inverse Fisher information at the penalized estimate; "
            "ridge: its sandwich; pca: inverse Fisher information of the component fit). "
            "Use cov_type='nonrobust'."
        )
    if remedy is not None and int(bootstrap):
        raise ValueError(
            f"bootstrap={bootstrap} cannot be combined with remedy={remedy!r}: the bootstrap "
            "refits the maximum-likelihood estimate only. Use bootstrap=0."
        )


def _resolve_family(family: str, head: Head) -> str:
    fam = _AUTO_FAMILY[head.link] if family == "auto" else family
    if fam == "multinomial" and head.n_outputs < 2:
        raise ValueError("family='multinomial' needs at least 2 classes; the head has 1 output.")
    if fam == "binomial" and head.link == "softmax" and head.n_outputs > 2:
        raise ValueError(
            "family='binomial' on a softmax head with more than 2 classes is not the network's "
            "model; use family='multinomial' (the head's own GLM) or 'ovr' (one-vs-rest)."
        )
    return fam


def _labels(obs: pd.DataFrame, n_classes: int) -> np.ndarray:
    lab = obs["label"]
    if lab.isna().any():
        raise ValueError(
            f"{int(lab.isna().sum())} rows have no label; the refit needs labels (pass data "
            "with labels to extract_activations)."
        )
    y = lab.to_numpy(dtype=np.int64)
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must be class indices 0..{n_classes - 1}; got {y.min()}..{y.max()}.")
    return y


def _response(family: str, head: Head, obs: pd.DataFrame, response) -> np.ndarray:
    """Class indices (multinomial) or an (N, K) response matrix (per-output families)."""
    return build_response(family, head, obs, response)


def _groups(cov_type: str, cov_kwds: dict | None, obs: pd.DataFrame) -> dict | None:
    """Normalise ``cov_kwds``; cluster groups become integer codes aligned with the rows."""
    if cov_type != "cluster":
        if cov_kwds:
            raise ValueError(f"cov_kwds is only used with cov_type='cluster', not {cov_type!r}.")
        return None
    if not cov_kwds or "groups" not in cov_kwds:
        raise ValueError(
            "cov_type='cluster' needs cov_kwds={'groups': ...}: an obs column name, a Series "
            "indexed by sample id, or one label per row used."
        )
    g = cov_kwds["groups"]
    if isinstance(g, str):
        if g not in obs.columns:
            raise KeyError(f"cov_kwds['groups']={g!r} is not a column of acts.obs.")
        g = obs[g]
    elif isinstance(g, pd.Series):
        g = g.reindex(obs.index)
    g = pd.Series(np.asarray(g), index=obs.index) if not isinstance(g, pd.Series) else g
    if len(g) != len(obs) or g.isna().any():
        raise ValueError(f"cluster groups must give one non-missing label for each of the {len(obs)} rows.")
    codes = pd.factorize(g, sort=True)[0]
    out = {k: v for k, v in cov_kwds.items() if k != "groups"}
    out["groups"] = codes
    return out


# ----------------------------------------------------------------------------------- fits
def _fit_multinomial(y, x, cov_type, cov_kwds, maxiter, start=None):
    model = sm.MNLogit(y, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        kw = {"cov_type": cov_type} if cov_type != "nonrobust" else {}
        if cov_kwds is not None:
            kw["cov_kwds"] = cov_kwds
        return model.fit(
            method="newton", maxiter=maxiter, tol=_TOL, disp=0, start_params=start, **kw
        )


def _fit_glm(y, x, family, cov_type, cov_kwds, maxiter, start=None):
    fam = sm.families.Gaussian() if family == "gaussian" else sm.families.Binomial()
    kw = {"cov_kwds": cov_kwds} if cov_kwds is not None else {}
    # statsmodels' covariance uses the IRLS weights of the step before the last: with its
    # default tol=1e-8 standard errors sit ~1e-5 from the MLE's; one more step fixes it.
    return sm.GLM(y, x, family=fam).fit(
        maxiter=maxiter, tol=_TOL, cov_type=cov_type, start_params=start, **kw
    )


def _converged(res) -> bool:
    if hasattr(res, "mle_retvals") and res.mle_retvals is not None:
        if res.mle_retvals.get("converged", True):
            return True
        # statsmodels' Newton stops on the parameter change; at tol=1e-12 that criterion can
        # stall at rounding level although the score is already zero. Accept a vanishing score.
        score = np.asarray(res.model.score(np.asarray(res.params).ravel(order="F")))
        return bool(np.isfinite(score).all() and np.abs(score).max() <= 1e-8 * res.nobs)
    return bool(getattr(res, "converged", True))


def _reduced_fits(multi: bool, y: np.ndarray, x: np.ndarray, start: np.ndarray | None) -> list:
    """ML fits of the design ``x`` (one multinomial, or one binomial GLM per output).

    Returns an empty list when statsmodels fails outright (a singular Hessian on the way).
    """
    try:
        if multi:
            s0 = None if start is None else start.ravel(order="F")
            return [_fit_multinomial(y, x, "nonrobust", None, 100, start=s0)]
        return [
            _fit_glm(y[:, o], x, "binomial", "nonrobust", None, 100,
                     start=None if start is None else start[:, o])
            for o in range(y.shape[1])
        ]
    except np.linalg.LinAlgError:
        return []


def _all_good(fits: list) -> bool:
    return bool(fits) and all(np.isfinite(r.llf) and _converged(r) for r in fits)


def _check_fit(res, label: str, on_separation: str) -> None:
    params, bse = np.asarray(res.params), np.asarray(res.bse)
    finite = np.isfinite(params).all() and np.isfinite(bse).all()
    if finite and _converged(res):
        return
    msg = (
        f"The {label} fit did not reach a finite maximum-likelihood estimate "
        f"(converged={_converged(res)}, {int((~np.isfinite(params)).sum())} non-finite "
        f"parameters, {int((~np.isfinite(bse)).sum())} non-finite standard errors)."
    )
    if on_separation == "warn":
        warnings.warn(msg, RefitWarning, stacklevel=3)
        return
    raise FitError(msg + " Check the diagnostics (condition number, events per parameter).")


def _cross_cov(results: list, x: np.ndarray, y: np.ndarray, cov_type: str, cov_kwds) -> np.ndarray:
    """Stacked-estimating-equation sandwich across per-output fits (HC0 / cluster).

    Cov(b_j, b_k) = A_j^-1 (sum_n s_nj s_nk') A_k^-1 with s_nj = x_n (y_nj - mu_nj) / phi_j and
    A_j = X' W_j X / phi_j; for j == k this is statsmodels' own HC0/cluster block.
    """
    q = x.shape[1]
    scores, bread = [], []
    for j, res in enumerate(results):
        mu = np.asarray(res.fittedvalues)
        scale = float(res.scale)
        w = np.asarray(res.model.family.variance(mu)) if not isinstance(
            res.model.family, sm.families.Gaussian
        ) else np.ones_like(mu)
        scores.append(x * ((y[:, j] - mu) / scale)[:, None])
        bread.append(np.linalg.inv((x * w[:, None]).T @ x / scale))
    s = np.hstack(scores)
    factor = 1.0
    if cov_type == "cluster":
        g = cov_kwds["groups"]
        n_groups = int(g.max()) + 1
        s = np.vstack([np.bincount(g, weights=s[:, i], minlength=n_groups) for i in range(s.shape[1])]).T
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


# ------------------------------------------------------------------------------ the entry
def refit_output_layer(
    acts: Activations,
    *,
    split: str | Sequence[str] | None = "refit",
    family: str = "auto",
    parametrization: str = "reference",
    cov_type: str = "nonrobust",
    cov_kwds: dict | None = None,
    alpha: float = 0.05,
    drop_dead: bool = True,
    on_collinear: str = "raise",
    bootstrap: int = 0,
    seed: int = 0,
    progress: bool = True,
    train_ids: Sequence[str] | None = None,
    on_separation: str = "raise",
    remedy: str | None = None,
    remedy_kwds: dict | None = None,
    engine: str = "auto",
    response=None,
    maxiter: int = 100,
) -> RefitResult:
    """Refit the network's output layer as a GLM on held-out rows.

    Parameters
    ----------
    acts : Activations
        Exported activations with a detected head (``acts.head``) and labels.
    split : str, sequence of str or None
        Rows to use (``acts.obs["split"]``); None uses every row. The default ``"refit"`` is
        held out from training, which is what makes the inference valid.
    family : {"auto", "multinomial", "ovr", "binomial", "gaussian"}
        ``"auto"`` follows the head's link (softmax -> multinomial, sigmoid -> binomial per
        output, identity -> gaussian). ``"ovr"`` fits one binomial GLM per class.
    parametrization : {"reference", "sum_to_zero"}
        Default parametrization of the result (multinomial only; per-output families are
        identified as they are). ``"reference"``: class 0 is the baseline, columns are classes
        1..K-1 (statsmodels' MNLogit). ``"sum_to_zero"``: all K classes, ``w_k - mean_j w_j``.
    cov_type : {"nonrobust", "HC0", "cluster"}
        Model-based, sandwich, or cluster-robust covariance (statsmodels' own). HC1-HC3 are
        refused because statsmodels silently returns HC0 for them with these models.
    cov_kwds : dict, optional
        For ``"cluster"``: ``{"groups": obs column name | Series by sample id | per-row labels}``
        and optionally ``use_correction`` (statsmodels' small-sample factor, default True).
    alpha : float
        Level of the confidence intervals and of the agreement test's verdict.
    drop_dead : bool
        Drop constant (incl. all-zero) units, listed in ``dropped_units``. If False they make the
        design rank deficient and ``on_collinear`` applies.
    on_collinear : {"raise", "drop"}
        Exact collinearity among units: raise :class:`~glminterp.diagnostics.CollinearityError`
        naming the dependent units, or drop them (recorded).
    bootstrap : int
        Number of nonparametric bootstrap replicates (rows, or clusters with
        ``cov_type="cluster"``) for percentile intervals; 0 for none.
    seed : int
        Seed of the bootstrap's ``numpy.random.Generator``.
    progress : bool
        Show progress bars (per-class fits, bootstrap).
    train_ids : sequence of str, optional
        Ids of the network's training rows, in addition to ``obs["split"] == "train"``.
    on_separation : {"raise", "warn"}
        Separated data raise :class:`~glminterp.separation.SeparationError` (default) or, with
        ``"warn"``, are fitted anyway with a loud warning (the estimates are then meaningless).
    remedy : {None, "firth", "ridge", "pca"}
        A fit that exists under separation, used instead of the maximum-likelihood estimate
        (whether or not the data are separated; the separation check is recorded either way).
        ``"firth"``: Firth's bias-reduced logistic regression (:func:`glminterp.firth.fit_firth`)
        for binomial / one-vs-rest heads and for a 2-class softmax head (its multinomial model
        is the binomial logit of class 1 against class 0); ``.coefficients`` then holds the
        penalized-likelihood-ratio p-values (column ``p``, with Holm/BH on them) and profile
        penalized-likelihood intervals. A multinomial refit with more than 2 classes has no
        Firth fit here: use ``family="ovr"`` or ``remedy="ridge"``. ``"ridge"``: L2-penalized
        logit with a sandwich covariance (:func:`glminterp.penalized.fit_ridge`), *penalized
        inference*. ``"pca"``: the GLM on the leading principal components of the units
        (:func:`glminterp.penalized.fit_pca`), mapped back to unit coefficients; loadings in
        :attr:`RefitResult.pca_loadings`. Not for the gaussian family.
    remedy_kwds : dict, optional
        ``"firth"``: ``pl`` (bool, default True: PLR tests and profile CIs; False: Wald),
        ``tol``, ``max_iter``. ``"ridge"``: ``lam`` (default 1.0, on the summed log-likelihood
        scale), ``tol``, ``max_iter``. ``"pca"``: ``n_components`` (default: the fewest
        components explaining ``min_variance`` = 0.9 of the units' variance), ``scale``
        (standardise units first, default False).
    engine : {"auto", "statsmodels", "fast"}
        Maximum-likelihood solver (remedy None). ``"statsmodels"``: statsmodels' own Newton
        (MNLogit) / IRLS (GLM). ``"fast"``: :mod:`glminterp.engine` (stacked Fisher information,
        Newton-CG above 500 parameters), warm-started at the network's head when that beats the
        intercept-only start, then handed to statsmodels at the optimum
        (``EngineResult.to_statsmodels``), so the results objects, covariances (also HC0 and
        cluster) and tests are statsmodels' own. ``"auto"``: fast above
        ``AUTO_ENGINE_MIN_PARAMS`` (200) parameters. The gaussian family always uses
        statsmodels. Which engine ran is in ``diagnostics["engine"]`` and ``fit_stats``.
    response : str, sequence of str, array or DataFrame, optional
        The response(s), one per output (see :mod:`glminterp.responses`). Default: the
        ``target:<class>`` columns (multi-label 0/1 or real-valued labels), else the label.
    maxiter : int
        Newton / IRLS iterations.

    Returns
    -------
    RefitResult

    Raises
    ------
    SeparationError, CollinearityError, FitError, ValueError
    """
    _check_options(
        family, parametrization, cov_type, alpha, on_collinear, on_separation, remedy, bootstrap,
        engine,
    )
    if not isinstance(acts, Activations):
        raise TypeError(f"acts must be an Activations object, got {type(acts).__name__}.")
    head = acts.head
    sub = acts if split is None else acts.subset(split=split)
    features = sub.head_features().astype(np.float64)
    if head is None:  # head_features raised already; keeps type checkers informed
        raise ValueError("acts has no head.")
    fam = _resolve_family(family, head)
    obs = sub.obs
    n = len(obs)
    if n == 0:
        raise ValueError(f"split={split!r} selects no rows.")
    y = _response(fam, head, obs, response)
    cov_kwds_n = _groups(cov_type, cov_kwds, obs)
    notes: list[str] = []
    warned: list[str] = []

    def warn(msg: str) -> None:
        warned.append(msg)
        warnings.warn(msg, RefitWarning, stacklevel=3)

    # -- training overlap
    overlap = dg.train_overlap(obs.index, acts.obs, train_ids)
    if overlap:
        warn(
            f"REFIT USES TRAINING ROWS: {len(overlap)} of {n} rows (e.g. {overlap[:3]}) were used "
            "to train the network. Coefficients fitted on training rows are biased away from zero "
            "and their standard errors, tests and intervals are not valid; refit on held-out rows "
            "(split='refit')."
        )

    # -- dead / constant units, then exact collinearity
    all_units = [str(c) for c in features.columns]
    dead = dg.dead_units(features)
    dropped_rows = []
    constant: dict[str, float] = {}
    if drop_dead and len(dead):
        constant = dict(zip(dead["unit"], dead["value"].astype(float)))
        features = features.drop(columns=list(constant))
        dropped_rows += [{"unit": u, "reason": r} for u, r in zip(dead["unit"], dead["reason"])]
        notes.append(f"dropped {len(constant)} constant unit(s): {list(constant)}")
    rank = dg.rank_report(features)
    dependencies: dict[str, dict[str, float]] = {}
    if not rank.full_rank:
        if on_collinear == "raise":
            raise dg.collinearity_error(rank)
        dependencies = {u: dict(c) for u, c in rank.dependencies.items()}
        features = features.drop(columns=list(rank.dependent))
        for u, combo in dependencies.items():
            expr = " + ".join(f"{a:.4g}*{t}" for t, a in combo.items())
            dropped_rows.append({"unit": u, "reason": f"collinear: {u} = {expr}"})
        warn(f"dropped {len(dependencies)} exactly collinear unit(s): {list(dependencies)}")
    units = [str(c) for c in features.columns]
    terms = ["const", *units]
    x = np.column_stack([np.ones(n), features.to_numpy(dtype=np.float64)])
    p = len(units)

    cond = dg.condition_number(features)
    if cond > dg.CONDITION_WARN:
        warn(
            f"condition number of the scaled design is {cond:.3g} (> {dg.CONDITION_WARN:g}): "
            "near-collinear units; standard errors are inflated and individual coefficients "
            "are poorly determined."
        )
    # Gaussian: no events; rows per unit is recorded instead.
    epp = dg.events_per_parameter(y, p) if fam != "gaussian" else float(n) / max(p, 1)
    if fam != "gaussian" and epp < dg.EPP_WARN:
        warn(
            f"events per parameter is {epp:.3g} (< {dg.EPP_WARN:g}): the MLE is biased away from "
            "zero and Wald tests can be miscalibrated at this p/N (Sur & Candes 2019); prefer "
            "fewer units or more held-out rows."
        )

    # -- separation
    checks: list[sep.SeparationCheck] = []
    if fam == "multinomial":
        checks.append(sep.check_multinomial(x, y, terms=terms, classes=head.classes))
    elif fam in ("ovr", "binomial"):
        cls = _output_classes(head)
        for j, c in enumerate(cls):
            checks.append(
                sep.check_binomial(
                    x, y[:, j], terms=terms, label=f"binomial: {c}", classes=(f"not {c}", c)
                )
            )
    separated = any(c.separated for c in checks)
    if remedy is not None:
        _check_remedy(remedy, fam, head)
        if separated:
            notes.append(
                f"separated data: remedy={remedy!r} used instead of the maximum-likelihood "
                "estimate, which does not exist here"
            )
    elif separated:
        if on_separation == "raise":
            sep.raise_if_separated(checks, p)
        warn(
            "SEPARATED DATA, fitted anyway (on_separation='warn'): "
            + "; ".join(f"{c.label}: classes {list(c.classes)}" for c in checks if c.separated)
            + ". The MLE does not exist; estimates and standard errors are meaningless."
        )

    # -- the network's head on the same terms (also the fast engine's warm start)
    net_full, net_note = _network_matrix(head, fam)
    if net_note:
        notes.append(net_note)
    net_folded, _ = fold_dropped_units(net_full, all_units, constant, dependencies)
    if constant or dependencies:
        notes.append("network weights of dropped units were folded into the kept terms")

    # -- fit
    n_out = 1 if fam == "multinomial" else y.shape[1]
    n_params = len(terms) * ((head.n_outputs - 1) if fam == "multinomial" else n_out)
    extra: dict = {}
    if remedy is not None:
        used_engine = f"remedy:{remedy}"
        beta, cov, results, extra = _fit_remedy(
            remedy, dict(remedy_kwds or {}), fam, head, features, x, y, alpha, progress
        )
        if extra.get("note"):
            notes.append(extra["note"])
    else:
        if remedy_kwds:
            raise ValueError("remedy_kwds is only used with a remedy; pass remedy=... or drop it.")
        used_engine = _choose_engine(engine, fam, n_params)
        beta, cov, results, start_used = _fit_mle(
            used_engine, fam, head, features, x, y, terms, cov_type, cov_kwds_n, maxiter,
            on_separation, progress, net_folded, notes,
        )
        extra["start"] = start_used

    boot = None
    if bootstrap:
        boot = _bootstrap(
            fam, x, y, beta, int(bootstrap), seed, progress, cov_kwds_n, maxiter, terms, head
        )
        if boot["failed"]:
            warn(
                f"{boot['failed']} of {bootstrap} bootstrap replicates failed (separated, "
                "not converged or a class missing) and were left out; percentile intervals use "
                f"{bootstrap - boot['failed']} replicates."
            )
    if remedy is not None:
        warn(f"PENALIZED / REDUCED INFERENCE (remedy={remedy!r}): {extra['inference']}.")

    diagnostics = {
        "n_obs": int(n),
        "n_units_input": len(all_units),
        "n_units_used": p,
        "dropped_units": [d["unit"] for d in dropped_rows],
        "rank": int(rank.rank),
        "condition_number": float(cond),
        "events_per_parameter": float(epp),
        "train_overlap": len(overlap),
        "train_overlap_ids": overlap[:20],
        "separated": bool(separated),
        "separation": [c.to_dict() for c in checks],
        "engine": used_engine,
        "start": extra.get("start"),
        "remedy": remedy,
        "notes": notes,
        "split": split if split is None or isinstance(split, str) else list(split),
    }
    return RefitResult(
        family=fam,
        parametrization=parametrization,
        head=head,
        terms=tuple(terms),
        beta=beta,
        cov=cov,
        network=net_folded,
        results=results,
        x=x,
        y=y,
        alpha=alpha,
        cov_type=cov_type,
        dropped=pd.DataFrame(dropped_rows, columns=["unit", "reason"]),
        diagnostics=diagnostics,
        warnings_=tuple(warned),
        bootstrap=boot,
        checks=tuple(checks),
        remedy=remedy,
        remedy_extra=extra,
    )


# ------------------------------------------------------------------------ engines and fits
def _choose_engine(engine: str, fam: str, n_params: int) -> str:
    if fam == "gaussian":
        return "statsmodels"  # the fast engine has logit likelihoods only
    if engine == "auto":
        return "fast" if n_params > AUTO_ENGINE_MIN_PARAMS else "statsmodels"
    return engine


def _loglik_multinomial(x: np.ndarray, y: np.ndarray, beta: np.ndarray) -> float:
    """Multinomial log-likelihood, reference parametrization ``(q, K - 1)``, stable."""
    eta = np.column_stack([np.zeros(x.shape[0]), x @ beta])
    m = eta.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(eta - m).sum(axis=1))
    return float(np.sum(eta[np.arange(len(y)), y] - lse))


def _loglik_binomial(x: np.ndarray, y: np.ndarray, b: np.ndarray) -> float:
    eta = x @ b
    return float(np.sum(y * log_expit(eta) + (1.0 - y) * log_expit(-eta)))


def _null_loglik_multinomial(y: np.ndarray, k: int) -> float:
    n = np.bincount(y, minlength=k).astype(float)
    n = n[n > 0]
    return float(np.sum(n * np.log(n / n.sum())))


def _null_loglik_binomial(y: np.ndarray) -> float:
    m = float(np.mean(y))
    if m in (0.0, 1.0):
        return 0.0
    return float(len(y) * (m * np.log(m) + (1 - m) * np.log(1 - m)))


def _warm_start(fam, x, y_col, start, null_ll) -> tuple[np.ndarray | None, str]:
    """The network's head as a start if finite and better than the intercept-only fit."""
    if start is None or not np.isfinite(start).all():
        return None, "null"
    ll = _loglik_multinomial(x, y_col, start) if fam == "multinomial" else _loglik_binomial(
        x, y_col, start
    )
    return (start, "network") if np.isfinite(ll) and ll > null_ll else (None, "null")


def _fit_mle(
    engine, fam, head, features, x, y, terms, cov_type, cov_kwds_n, maxiter, on_separation,
    progress, net_folded, notes,
):
    """Maximum-likelihood fit(s) as statsmodels results: (beta, cov, results, start)."""
    kw_sm = {"cov_type": cov_type, "cov_kwds": cov_kwds_n}
    if fam == "multinomial":
        if engine == "fast":
            start, start_used = _warm_start(
                fam, x, y, to_reference(net_folded), _null_loglik_multinomial(y, head.n_outputs)
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                er = eng.fit_multinomial(features, y, start=start, max_iter=maxiter)
            res = er.to_statsmodels(features, y, **kw_sm)
        else:
            start_used = "null"
            res = _fit_multinomial(y, pd.DataFrame(x, columns=terms), cov_type, cov_kwds_n, maxiter)
        _check_fit(res, "multinomial", on_separation)
        beta = np.asarray(res.params, dtype=np.float64)
        cov = np.asarray(res.cov_params(), dtype=np.float64)
        return beta, cov, res, start_used
    out_classes = _output_classes(head)
    fits, betas, starts = {}, [], []
    it = tqdm(out_classes, desc=f"refit {fam}", disable=not progress or len(out_classes) < 2)
    for j, c in enumerate(it):
        if engine == "fast":
            start, used = _warm_start(
                fam, x, y[:, j], net_folded[:, j], _null_loglik_binomial(y[:, j])
            )
            starts.append(used)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                er = eng.fit_binomial(features, y[:, j], start=start, max_iter=maxiter)
            r = er.to_statsmodels(features, y[:, j], model="glm", **kw_sm)
        else:
            r = _fit_glm(y[:, j], pd.DataFrame(x, columns=terms), fam, cov_type, cov_kwds_n, maxiter)
        _check_fit(r, f"{fam} ({c})", on_separation)
        fits[c] = r
        betas.append(np.asarray(r.params, dtype=np.float64))
        gc.collect()  # statsmodels' IRLS keeps per-iteration copies of X in cycles
    beta = np.column_stack(betas)
    q = len(terms)
    if cov_type == "nonrobust":
        cov = np.zeros((q * len(out_classes),) * 2)
        for j, r in enumerate(fits.values()):
            cov[j * q : (j + 1) * q, j * q : (j + 1) * q] = np.asarray(r.cov_params())
        if len(out_classes) > 1:
            notes.append(
                "cov_type='nonrobust' with per-output fits: cross-output covariance blocks "
                "are zero (outputs treated as independent); use cov_type='HC0' for the "
                "stacked sandwich that accounts for their dependence."
            )
    else:
        cov = _cross_cov(list(fits.values()), x, y, cov_type, cov_kwds_n)
    start_used = "null" if engine != "fast" else (
        "network" if starts and all(s == "network" for s in starts) else
        "null" if not any(s == "network" for s in starts) else "mixed"
    )
    return beta, cov, fits, start_used


_REMEDY_KWDS = {
    "firth": ("pl", "tol", "max_iter"),
    "ridge": ("lam", "tol", "max_iter"),
    "pca": ("n_components", "scale", "min_variance"),
}


def _check_remedy(remedy: str, fam: str, head: Head) -> None:
    if fam == "gaussian":
        raise ValueError(
            f"remedy={remedy!r} is for logit refits; the gaussian family has no separation. "
            "Use remedy=None."
        )
    if remedy == "firth" and fam == "multinomial" and head.n_outputs > 2:
        raise ValueError(
            f"remedy='firth' is implemented for binomial models; a {head.n_outputs}-class "
            "multinomial refit has no Firth fit here. Use family='ovr' (one Firth-penalized "
            "binomial GLM per class) or remedy='ridge' (penalized multinomial)."
        )


def _remedy_options(remedy: str, kwds: dict) -> dict:
    unknown = sorted(set(kwds) - set(_REMEDY_KWDS[remedy]))
    if unknown:
        raise ValueError(
            f"remedy_kwds {unknown} are not options of remedy={remedy!r}; "
            f"use {list(_REMEDY_KWDS[remedy])}."
        )
    return kwds


def _binary_targets(fam: str, head: Head, y: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
    """Output names and 0/1 responses of the binomial fits a remedy runs."""
    if fam == "multinomial":  # 2-class softmax: class 1 against class 0 (reference)
        return [str(head.classes[1])], [(y == 1).astype(np.float64)]
    return list(_output_classes(head)), [y[:, j] for j in range(y.shape[1])]


def _block_diag(blocks: list[np.ndarray]) -> np.ndarray:
    size = sum(b.shape[0] for b in blocks)
    out = np.zeros((size, size))
    i = 0
    for b in blocks:
        out[i : i + b.shape[0], i : i + b.shape[0]] = b
        i += b.shape[0]
    return out


def _fit_remedy(remedy, kwds, fam, head, features, x, y, alpha, progress):
    """Remedy fit(s): (beta, cov, results, extra) with beta in the refit's own layout."""
    opts = _remedy_options(remedy, kwds)
    extra: dict = {"remedy": remedy}
    if remedy == "firth":
        pl = bool(opts.get("pl", True))
        fkw = {k: opts[k] for k in ("tol", "max_iter") if k in opts}
        names, targets = _binary_targets(fam, head, y)
        fits, betas, covs, rows = {}, [], [], []
        it = tqdm(names, desc="Firth refit", disable=not progress or len(names) < 2)
        for c, yc in zip(it, targets):
            fr = firth.fit_firth(features, yc, alpha=alpha, **fkw)
            if not fr.converged:
                raise FitError(f"The Firth fit for {c} did not converge; see the warnings.")
            fits[c] = fr
            betas.append(fr.params.to_numpy())
            covs.append(fr.cov.to_numpy())
            tab = fr.summary_frame(pl=pl)
            rows.append(tab)
        extra["table"] = rows
        extra["pl"] = pl
        extra["inference"] = (
            "Firth penalized likelihood (Jeffreys prior): finite bias-reduced estimates; "
            + ("p-values are penalized likelihood-ratio tests and intervals profile penalized "
               "likelihood (logistf/brglm2 convention)" if pl else
               "Wald p-values and intervals on the penalized estimate (pl=False)")
        )
        results = fits[names[0]] if fam == "multinomial" else fits
        return np.column_stack(betas), _block_diag(covs), results, extra
    if remedy == "ridge":
        lam = float(opts.get("lam", 1.0))
        rkw = {k: opts[k] for k in ("tol", "max_iter") if k in opts}
        if fam == "multinomial":
            rr = pen.fit_ridge(features, y, lam=lam, family="multinomial", **rkw)
            fits = {"all": rr}
            beta, cov = rr.params.to_numpy(), rr.cov
        else:
            names, targets = _binary_targets(fam, head, y)
            fits = {c: pen.fit_ridge(features, yc, lam=lam, family="binomial", **rkw)
                    for c, yc in zip(names, targets)}
            beta = np.column_stack([f.params.to_numpy()[:, 0] for f in fits.values()])
            cov = _block_diag([f.cov for f in fits.values()])
            if len(fits) > 1:
                extra["note"] = ("ridge remedy with per-output fits: cross-output covariance "
                                 "blocks are zero (outputs treated as independent)")
        bad = [c for c, f in fits.items() if not f.converged]
        if bad:
            raise FitError(f"The ridge fit did not converge for {bad}; increase max_iter or lam.")
        extra["lam"] = lam
        extra["inference"] = next(iter(fits.values())).inference
        results = fits["all"] if fam == "multinomial" else fits
        return beta, cov, results, extra
    # pca
    arr = features.to_numpy(dtype=np.float64)
    scale = bool(opts.get("scale", False))
    k = opts.get("n_components")
    if k is None:
        xs = arr - arr.mean(axis=0)
        if scale:
            sd = arr.std(axis=0)
            xs = xs / np.where(sd > 0, sd, 1.0)
        var = np.linalg.svd(xs, compute_uv=False) ** 2
        frac = np.cumsum(var) / var.sum()
        k = int(np.searchsorted(frac, float(opts.get("min_variance", 0.9)) - 1e-12) + 1)
    k = int(k)
    if fam == "multinomial":
        targets = {"all": y}
        family = "multinomial"
    else:
        names, ys = _binary_targets(fam, head, y)
        targets = dict(zip(names, ys))
        family = "binomial"
    fits = {}
    for c, yc in targets.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                pr = pen.fit_pca(features, yc, n_components=k, family=family, scale=scale)
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
        fits[c] = pr
    first = next(iter(fits.values()))
    beta = np.column_stack([f.unit_params.to_numpy() for f in fits.values()])
    cov = _block_diag([f.unit_cov for f in fits.values()])
    extra.update(
        n_components=k,
        loadings=first.loadings,
        explained_variance_ratio=first.explained_variance_ratio,
        inference=first.inference,
        n_params=(k + 1) * beta.shape[1],
    )
    results = fits["all"] if fam == "multinomial" else fits
    return beta, cov, results, extra


def _output_classes(head: Head) -> tuple[str, ...]:
    if head.link == "softmax" and head.n_outputs == 2:
        return tuple(head.classes)
    return tuple(head.classes) if len(head.classes) == head.n_outputs else tuple(
        str(i) for i in range(head.n_outputs)
    )


def _network_matrix(head: Head, fam: str) -> tuple[np.ndarray, str | None]:
    """The network's head as a ``(p + 1, K)`` matrix comparable with the refit, or NaN."""
    w = head.coef_matrix()
    if fam == "multinomial" and head.link == "softmax":
        return w, None
    if fam in ("ovr", "binomial") and head.link == "sigmoid":
        return w, None
    if fam in ("ovr", "binomial") and head.link == "softmax" and head.n_outputs == 2:
        # Two-class softmax: logit P(class k) = (w_k - w_other)'x exactly.
        return w - w[:, ::-1], None
    if fam == "gaussian" and head.link == "identity":
        return w, None
    return np.full_like(w, np.nan), (
        f"the network's {head.link} head is not the {fam} model refitted: network weights "
        "are not comparable (NaN) and the agreement test is not defined"
    )


def p_adjust(p: np.ndarray, method: str) -> np.ndarray:
    """Holm (``"holm"``) or Benjamini-Hochberg (``"fdr_bh"``) adjusted p-values.

    Same values as ``statsmodels.stats.multitest.multipletests``, which in statsmodels 0.15
    runs a full ``gc.collect()`` per call (too slow inside simulations).
    """
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    ps = p[order]
    if method == "holm":
        adj = np.maximum.accumulate((m - np.arange(m)) * ps)
    elif method == "fdr_bh":
        adj = np.minimum.accumulate(m / np.arange(m, 0, -1) * ps[::-1])[::-1]
    else:
        raise ValueError(f"method={method!r}; use 'holm' or 'fdr_bh'.")
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


# ------------------------------------------------------------------------------ bootstrap
def _bootstrap(fam, x, y, beta, n_boot, seed, progress, cov_kwds, maxiter, terms, head) -> dict:
    """Nonparametric bootstrap of the MLE (rows, or whole clusters), warm-started at the MLE."""
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    groups = None if cov_kwds is None else cov_kwds["groups"]
    members = None
    if groups is not None:
        members = [np.flatnonzero(groups == g) for g in range(int(groups.max()) + 1)]
    draws, failed = [], 0
    for _ in tqdm(range(n_boot), desc="bootstrap", disable=not progress):
        if members is None:
            idx = rng.integers(0, n, n)
        else:
            pick = rng.integers(0, len(members), len(members))
            idx = np.concatenate([members[g] for g in pick])
        xb, yb = x[idx], y[idx]
        try:
            if fam == "multinomial":
                if np.unique(yb).size != beta.shape[1] + 1:
                    failed += 1
                    continue
                if sep.check_multinomial(xb, yb, terms=terms, classes=head.classes).separated:
                    failed += 1
                    continue
                r = _fit_multinomial(yb, xb, "nonrobust", None, maxiter, start=beta.ravel("F"))
                b = np.asarray(r.params)
                ok = _converged(r)
            else:
                cols, ok = [], True
                for j in range(y.shape[1]):
                    if fam != "gaussian" and sep.check_binomial(xb, yb[:, j], terms=terms).separated:
                        ok = False
                        break
                    r = _fit_glm(yb[:, j], xb, fam, "nonrobust", None, maxiter, start=beta[:, j])
                    ok = ok and _converged(r)
                    cols.append(np.asarray(r.params))
                b = np.column_stack(cols) if ok else None
                gc.collect()
        except (np.linalg.LinAlgError, ValueError):
            ok, b = False, None
        if not ok or b is None or not np.isfinite(b).all():
            failed += 1
            continue
        draws.append(b)
    return {"draws": np.array(draws), "failed": failed, "n": n_boot, "seed": seed}


# --------------------------------------------------------------------------------- result
def _firth_pll(x1: np.ndarray, y: np.ndarray, b: np.ndarray) -> float:
    """Firth's penalized log-likelihood ``l(b) + 1/2 log det X'WX`` (unit weights)."""
    eta = x1 @ b
    mu = expit(eta)
    info = (x1 * (mu * (1 - mu))[:, None]).T @ x1
    sign, logdet = np.linalg.slogdet(info)
    if sign <= 0:
        return -np.inf
    return _loglik_binomial(x1, y, b) + 0.5 * float(logdet)


def _wald(b: np.ndarray, v: np.ndarray) -> tuple[float, int]:
    """Wald statistic b' V^+ b with df = rank(V) (pinv handles the sum-to-zero case)."""
    vp = np.linalg.pinv(v, hermitian=True)
    df = int(np.linalg.matrix_rank(v, hermitian=True))
    return float(b @ vp @ b), df


class RefitResult:
    """A refitted output layer: coefficients, covariance, tests and the network's own head.

    Built by :func:`refit_output_layer`; all attributes are read-only. Coefficient matrices are
    ``(terms, classes)`` DataFrames; covariances are indexed by ``(class, term)`` pairs, class
    outer (statsmodels' order).
    """

    def __init__(
        self, *, family, parametrization, head, terms, beta, cov, network, results, x, y, alpha,
        cov_type, dropped, diagnostics, warnings_, bootstrap, checks=(), remedy=None,
        remedy_extra=None,
    ) -> None:
        self._family = family
        self._param = parametrization
        self._head = head
        self._terms = tuple(terms)
        self._beta = beta  # reference (multinomial) or per-output, (q, K')
        self._cov = cov
        self._network = network  # folded (q, K) in the network's own parametrization
        self._results = results
        self._x = x
        self._y = y
        self._alpha = float(alpha)
        self._cov_type = cov_type
        self._dropped = dropped
        self._diagnostics = diagnostics
        self._warnings = warnings_
        self._boot = bootstrap
        self._checks = tuple(checks)
        self._remedy = remedy
        self._extra = dict(remedy_extra or {})
        self._all_classes = (
            tuple(head.classes) if family == "multinomial" else _output_classes(head)
        )
        self._cache: dict = {}

    # ------------------------------------------------------------ simple properties
    @property
    def family(self) -> str:
        """``"multinomial"``, ``"ovr"``, ``"binomial"`` or ``"gaussian"``."""
        return self._family

    @property
    def parametrization(self) -> str:
        return self._param

    @property
    def alpha(self) -> float:
        return self._alpha

    @property
    def cov_type(self) -> str:
        return self._cov_type

    @property
    def head(self) -> Head:
        return self._head

    @property
    def terms(self) -> tuple[str, ...]:
        """``"const"`` then the units kept."""
        return self._terms

    @property
    def units(self) -> tuple[str, ...]:
        return self._terms[1:]

    @property
    def classes(self) -> tuple[str, ...]:
        """Columns of :meth:`params` in the result's own parametrization."""
        return self._classes(self._param)

    @property
    def n_obs(self) -> int:
        return int(self._x.shape[0])

    @property
    def dropped_units(self) -> pd.DataFrame:
        """Units left out of the fit, with the reason (constant, collinear)."""
        return self._dropped.copy()

    @property
    def diagnostics(self) -> dict:
        """Pre-fit checks (JSON-serialisable): rank, condition number, EPP, overlap, separation."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._diagnostics.items()}

    @property
    def warnings(self) -> tuple[str, ...]:
        """Every warning issued during the refit."""
        return self._warnings

    @property
    def results(self):
        """The fitted model objects.

        Without a remedy, statsmodels results (also with ``engine="fast"``): one
        ``MNLogitResults``, or a dict class -> ``GLMResults``. With a remedy, its own result
        objects: :class:`~glminterp.firth.FirthResult`, :class:`~glminterp.penalized.RidgeResult`
        or :class:`~glminterp.penalized.PCAResult` (one, for a multinomial refit, or a dict per
        output).
        """
        return self._results

    @property
    def remedy(self) -> str | None:
        """The separation remedy used (``"firth"``, ``"ridge"``, ``"pca"``) or None (MLE)."""
        return self._remedy

    @property
    def engine(self) -> str:
        """Which solver ran: ``"statsmodels"``, ``"fast"`` or ``"remedy:<name>"``."""
        return self._diagnostics.get("engine", "statsmodels")

    @property
    def inference(self) -> str:
        """What the standard errors, tests and intervals are (printed beside them)."""
        if self._remedy is None:
            return f"maximum likelihood (Wald, cov_type={self._cov_type})"
        return self._extra["inference"]

    @property
    def separated(self) -> bool:
        """True if any separation check found (quasi-)complete separation."""
        return any(c.separated for c in self._checks)

    @property
    def separation(self) -> pd.DataFrame:
        """The Konis (2007) linear-programming separation checks run before the fit.

        One row per check (``"multinomial"``, or ``"binomial: <class>"`` per output): check,
        separated, classes (perfectly predicted), n_units and units (the separating direction's
        units, largest first), n_rows (rows strictly separated), objective (the LP optimum).
        """
        cols = ["check", "separated", "classes", "n_units", "units", "n_rows", "objective"]
        rows = [
            {"check": c.label, "separated": bool(c.separated), "classes": ", ".join(c.classes),
             "n_units": len(c.units), "units": ", ".join(c.units),
             "n_rows": int(c.n_rows_separated), "objective": float(c.objective)}
            for c in self._checks
        ]
        return pd.DataFrame(rows, columns=cols)

    @property
    def pca_loadings(self) -> pd.DataFrame | None:
        """Units x components loadings of ``remedy="pca"`` (unit-norm columns), else None."""
        lo = self._extra.get("loadings")
        return None if lo is None else lo.copy()

    @property
    def pca_explained_variance(self) -> pd.Series | None:
        """Explained-variance ratio of each component kept by ``remedy="pca"``, else None."""
        ev = self._extra.get("explained_variance_ratio")
        return None if ev is None else ev.copy()

    # ------------------------------------------------------------ parametrizations
    def _own(self, parametrization: str | None) -> str:
        p = self._param if parametrization is None else parametrization
        if p not in ("reference", "sum_to_zero"):
            raise ValueError(f"parametrization={p!r}; use 'reference', 'sum_to_zero' or None.")
        return p if self._family == "multinomial" else "per_output"

    def _classes(self, parametrization: str | None) -> tuple[str, ...]:
        own = self._own(parametrization)
        return self._all_classes[1:] if own == "reference" else self._all_classes

    def _index(self, parametrization: str | None) -> pd.MultiIndex:
        return pd.MultiIndex.from_product(
            [list(self._classes(parametrization)), list(self._terms)], names=["class", "term"]
        )

    def _beta_in(self, parametrization: str | None) -> np.ndarray:
        own = self._own(parametrization)
        if own == "sum_to_zero":
            return to_sum_to_zero(np.hstack([np.zeros((len(self._terms), 1)), self._beta]))
        return self._beta

    def _cov_in(self, parametrization: str | None) -> np.ndarray:
        own = self._own(parametrization)
        if own == "sum_to_zero":
            if "cov_stz" not in self._cache:
                self._cache["cov_stz"] = sum_to_zero_cov(
                    self._cov, len(self._all_classes), len(self._terms)
                )
            return self._cache["cov_stz"]
        return self._cov

    def _network_in(self, parametrization: str | None) -> np.ndarray:
        own = self._own(parametrization)
        if own == "reference":
            return to_reference(self._network)
        if own == "sum_to_zero":
            return to_sum_to_zero(self._network)
        return self._network

    def params(self, parametrization: str | None = None) -> pd.DataFrame:
        """Coefficients, index = terms, columns = classes (None: the result's own parametrization)."""
        return pd.DataFrame(
            self._beta_in(parametrization),
            index=pd.Index(self._terms, name="term"),
            columns=pd.Index(self._classes(parametrization), name="class"),
        )

    def cov_params(self, parametrization: str | None = None) -> pd.DataFrame:
        """Covariance of the coefficients, MultiIndex ``(class, term)`` on both axes."""
        idx = self._index(parametrization)
        return pd.DataFrame(self._cov_in(parametrization), index=idx, columns=idx)

    def class_cov(self, cls: str, parametrization: str | None = None) -> pd.DataFrame:
        """Terms x terms covariance of one class's coefficient vector."""
        classes = self._classes(parametrization)
        cls = str(cls)
        if cls not in classes:
            hint = (
                " (the baseline class has no coefficients in the reference parametrization; "
                "use parametrization='sum_to_zero')"
                if cls in self._all_classes
                else ""
            )
            raise KeyError(f"class {cls!r} not among {list(classes)}{hint}.")
        q = len(self._terms)
        j = classes.index(cls)
        block = self._cov_in(parametrization)[j * q : (j + 1) * q, j * q : (j + 1) * q]
        t = pd.Index(self._terms, name="term")
        return pd.DataFrame(block, index=t, columns=t)

    def network_params(self, parametrization: str | None = None) -> pd.DataFrame:
        """The network's head in the same layout as :meth:`params` (dropped units folded in)."""
        return pd.DataFrame(
            self._network_in(parametrization),
            index=pd.Index(self._terms, name="term"),
            columns=pd.Index(self._classes(parametrization), name="class"),
        )

    # ------------------------------------------------------------ tables
    @property
    def coefficients(self) -> pd.DataFrame:
        """Tidy table, one row per (class, term), in the result's own parametrization.

        Columns: class, term, coef, se, z, p, ci_lower, ci_upper (Wald, level 1 - alpha),
        p_holm, p_bh (across all unit coefficients; NaN for intercepts), network_weight,
        z_network, p_network (Wald z of coef - network_weight), and with a bootstrap
        boot_se, boot_ci_lower, boot_ci_upper (percentile). See :meth:`coefficient_table`
        for the same table in another parametrization.
        """
        return self.coefficient_table(None)

    def coefficient_table(self, parametrization: str | None = None) -> pd.DataFrame:
        """The tidy :attr:`coefficients` table in any parametrization of the same fit.

        E.g. ``coefficient_table("sum_to_zero")`` of a reference-parametrized multinomial
        refit has rows for every class (the baseline included), with delta-method standard
        errors and Holm/BH corrections recomputed across that table's unit coefficients.
        Firth's profile-likelihood columns exist only in the fit's own parametrization; in
        another one the table is Wald.
        """
        key = f"coef:{self._own(parametrization)}"
        if key in self._cache:
            return self._cache[key].copy()
        own = self._own(parametrization) == self._own(None)
        par = parametrization
        b = self._beta_in(par).ravel(order="F")
        v = self._cov_in(par)
        se = np.sqrt(np.clip(np.diag(v), 0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = b / se
        zc = stats.norm.ppf(1 - self._alpha / 2)
        idx = self._index(par)
        df = pd.DataFrame(
            {
                "class": idx.get_level_values(0),
                "term": idx.get_level_values(1),
                "coef": b,
                "se": se,
                "z": z,
                "p": 2 * stats.norm.sf(np.abs(z)),
                "ci_lower": b - zc * se,
                "ci_upper": b + zc * se,
            }
        )
        if self._remedy == "firth" and own:
            self._firth_columns(df)
        unit_rows = (df["term"] != "const").to_numpy()
        for col, method in (("p_holm", "holm"), ("p_bh", "fdr_bh")):
            df[col] = np.nan
            pv = df.loc[unit_rows, "p"].to_numpy()
            ok = np.isfinite(pv)
            if ok.any():
                adj = np.full(pv.shape, np.nan)
                adj[ok] = p_adjust(pv[ok], method)
                df.loc[unit_rows, col] = adj
        net = self._network_in(par).ravel(order="F")
        df["network_weight"] = net
        with np.errstate(divide="ignore", invalid="ignore"):
            zn = (b - net) / se
        df["z_network"] = zn
        df["p_network"] = 2 * stats.norm.sf(np.abs(zn))
        if self._remedy in ("ridge", "pca"):
            # Not a test: the shrunken / reduced-rank estimate is not the MLE the network's
            # weights would be compared with (see agreement_test).
            df["z_network"] = np.nan
            df["p_network"] = np.nan
        if self._remedy is not None:
            df["inference"] = self.inference
        if self._boot is not None and len(self._boot["draws"]):
            draws = self._boot_draws(par).reshape(len(self._boot["draws"]), -1, order="F")
            df["boot_se"] = draws.std(axis=0, ddof=1)
            df["boot_ci_lower"] = np.quantile(draws, self._alpha / 2, axis=0)
            df["boot_ci_upper"] = np.quantile(draws, 1 - self._alpha / 2, axis=0)
        self._cache[key] = df
        return df.copy()

    def _firth_columns(self, df: pd.DataFrame) -> None:
        """Replace Wald p and CIs by PLR p and profile CIs (in place), keep Wald as p_wald."""
        tabs = self._extra["table"]
        df["p_wald"] = df["p"].to_numpy()
        if not self._extra.get("pl", True):
            return
        if self._own(None) == "sum_to_zero":  # 2 classes: gamma_1 = beta / 2 = -gamma_0
            t = tabs[0]
            lo, hi = t["ci_lower"].to_numpy() / 2, t["ci_upper"].to_numpy() / 2
            chi2 = np.tile(t["chi2_plr"].to_numpy(), 2)
            p = np.tile(t["p_plr"].to_numpy(), 2)
            lower, upper = np.concatenate([-hi, lo]), np.concatenate([-lo, hi])
        else:
            chi2 = np.concatenate([t["chi2_plr"].to_numpy() for t in tabs])
            p = np.concatenate([t["p_plr"].to_numpy() for t in tabs])
            lower = np.concatenate([t["ci_lower"].to_numpy() for t in tabs])
            upper = np.concatenate([t["ci_upper"].to_numpy() for t in tabs])
        df["chi2_plr"] = chi2
        df["p"] = p
        df["ci_lower"] = lower
        df["ci_upper"] = upper

    def _boot_draws(self, parametrization: str | None) -> np.ndarray:
        d = self._boot["draws"]
        if self._own(parametrization) == "sum_to_zero":
            full = np.concatenate([np.zeros(d.shape[:2] + (1,)), d], axis=2)
            return full - full.mean(axis=2, keepdims=True)
        return d

    @property
    def summary(self) -> pd.DataFrame:
        """Coefficient table indexed by (class, term), the columns a reader needs first."""
        cols = ["coef", "se", "z", "p", "ci_lower", "ci_upper", "p_holm", "network_weight"]
        out = self.coefficients.set_index(["class", "term"])[cols]
        out.attrs["inference"] = self.inference
        if self._remedy is not None:  # printed beside every number of a penalized fit
            out["inference"] = self.inference
        return out

    @property
    def unit_tests(self) -> pd.DataFrame:
        """Joint Wald test per unit: does the unit matter for any class?

        For the multinomial the test uses the K - 1 reference contrasts (the hypothesis "all
        classes share the unit's weight" is the same in every parametrization); for per-output
        fits the unit's K coefficients with the covariance of :meth:`cov_params`.
        Columns: unit, statistic, df, p, p_holm, p_bh.
        """
        v = self._cov
        b = self._beta.ravel(order="F")
        q = len(self._terms)
        k = self._beta.shape[1]
        rows = []
        for j, unit in enumerate(self._terms[1:], start=1):
            sel = np.arange(k) * q + j
            stat, df = _wald(b[sel], v[np.ix_(sel, sel)])
            rows.append({"unit": unit, "statistic": stat, "df": df, "p": stats.chi2.sf(stat, df)})
        out = pd.DataFrame(rows, columns=["unit", "statistic", "df", "p"])
        if len(out):
            out["p_holm"] = p_adjust(out["p"].to_numpy(), "holm")
            out["p_bh"] = p_adjust(out["p"].to_numpy(), "fdr_bh")
        return out

    def unit_lr_tests(self) -> pd.DataFrame:
        """Likelihood-ratio test per unit: refit without the unit and compare log-likelihoods.

        Preferred over the Wald :attr:`unit_tests` when p/N is not small (Wald tests are then
        miscalibrated; Sur & Candes 2019) or near separation (Hauck-Donner). Costs one refit per
        unit (started from the full fit's estimate without that unit), so it is computed on
        request and cached. The multinomial test has K - 1 degrees of freedom; per-output
        (binomial) fits add their statistics over the K outputs (df K). Gaussian fits and
        remedies (penalized likelihoods) are not supported.

        Returns
        -------
        DataFrame
            unit, statistic, df, p, p_holm, p_bh, converged (of the reduced fit; a reduced fit
            that does not converge gives NaN).
        """
        if self._remedy is not None or self._family == "gaussian":
            raise ValueError(
                "unit_lr_tests needs a maximum-likelihood multinomial or binomial fit; "
                f"this result is family={self._family!r}, remedy={self._remedy!r}. Use "
                "unit_tests (Wald), or the Firth result's penalized LR p-values in coefficients."
            )
        if "unit_lr" in self._cache:
            return self._cache["unit_lr"].copy()
        x, y, b = self._x, self._y, self._beta
        multi = self._family == "multinomial"
        if multi:
            full = _loglik_multinomial(x, y, b)
        else:
            full = sum(_loglik_binomial(x, y[:, o], b[:, o]) for o in range(b.shape[1]))
        rows = []
        for j, unit in enumerate(self._terms[1:], start=1):
            xr, start = np.delete(x, j, axis=1), np.delete(b, j, axis=0)

            # the full fit's estimate without the unit is usually close to the reduced MLE;
            # with large coefficients it can overflow, then start from statsmodels' default
            fits = _reduced_fits(multi, y, xr, start)
            if not _all_good(fits):
                fits = _reduced_fits(multi, y, xr, None)
            ok = _all_good(fits)
            stat = 2.0 * (full - sum(float(r.llf) for r in fits)) if ok else np.nan
            df = b.shape[1]
            rows.append({"unit": unit, "statistic": max(stat, 0.0) if ok else np.nan, "df": df,
                         "p": stats.chi2.sf(stat, df) if ok else np.nan, "converged": ok})
            del fits
            gc.collect()  # statsmodels' IRLS keeps reference cycles alive between fits
        out = pd.DataFrame(rows, columns=["unit", "statistic", "df", "p", "converged"])
        for col, method in (("p_holm", "holm"), ("p_bh", "fdr_bh")):
            out[col] = np.nan
            ok = out["p"].notna().to_numpy()
            if ok.any():
                out.loc[ok, col] = p_adjust(out.loc[ok, "p"].to_numpy(), method)
        out = out[["unit", "statistic", "df", "p", "p_holm", "p_bh", "converged"]]
        self._cache["unit_lr"] = out
        return out.copy()

    @property
    def agreement_test(self) -> dict:
        """Wald test of H0: the network's head equals the refit MLE (on the held-out rows).

        Returns a dict with statistic, df, p_value, reject (at ``alpha``) and interpretation;
        statistic and p_value are None when the network's head is not the refitted model.
        The statistic is parametrization-invariant (reference contrasts for the multinomial).
        """
        net = self._network_in("reference").ravel(order="F")
        if self._remedy in ("ridge", "pca"):
            what = ("shrunken toward 0 by the ridge penalty" if self._remedy == "ridge" else
                    "restricted to the span of the leading principal components")
            return {
                "statistic": None, "df": None, "p_value": None, "reject": None,
                "interpretation": f"Not defined for remedy={self._remedy!r}: the estimate is "
                f"{what}, so a Wald distance to the network's head is not a test of the "
                "maximum-likelihood fit (the network's weights are still listed beside the "
                "coefficients for comparison).",
            }
        if not np.isfinite(net).all():
            return {
                "statistic": None, "df": None, "p_value": None, "reject": None,
                "interpretation": "Not defined: the network's head is not the refitted model "
                f"({self._head.link} head, {self._family} refit).",
            }
        if self._remedy == "firth":
            return self._firth_agreement(net)
        stat, df = _wald(self._beta.ravel(order="F") - net, self._cov)
        pval = float(stats.chi2.sf(stat, df))
        reject = pval < self._alpha
        if reject:
            text = (
                f"Rejected at alpha={self._alpha:g} (chi2={stat:.4g}, df={df}, p={pval:.3g}): the "
                "network's head differs from the maximum-likelihood fit on these rows. This is "
                "the usual outcome for a network trained with weight decay or early stopping (its "
                "head is shrunk, not the MLE) or on other rows; it says the head is not the MLE "
                "here, not that the network is wrong."
            )
        else:
            text = (
                f"Not rejected at alpha={self._alpha:g} (chi2={stat:.4g}, df={df}, p={pval:.3g}): "
                "the rows are consistent with the network's head being the MLE. Not rejecting is "
                "not proof of equality; the power depends on the number of rows."
            )
        return {"statistic": stat, "df": df, "p_value": pval, "reject": bool(reject),
                "interpretation": text}

    def _firth_fits(self) -> list:
        r = self._results
        return list(r.values()) if isinstance(r, dict) else [r]

    def _firth_agreement(self, net: np.ndarray) -> dict:
        """Penalized LR test of H0: coefficients = the network's head (all of them fixed)."""
        q = len(self._terms)
        stat = 0.0
        for j, fr in enumerate(self._firth_fits()):
            b0 = net[j * q : (j + 1) * q]
            stat += 2.0 * (fr.pll - _firth_pll(self._x, fr._y, b0))
        stat = max(stat, 0.0)
        df = q * len(self._firth_fits())
        pval = float(stats.chi2.sf(stat, df))
        reject = pval < self._alpha
        verdict = "Rejected" if reject else "Not rejected"
        text = (
            f"{verdict} at alpha={self._alpha:g} (penalized LR chi2={stat:.4g}, df={df}, "
            f"p={pval:.3g}): penalized likelihood-ratio test of H0 'the network's head equals "
            "the coefficients' against the Firth-penalized fit (Jeffreys prior). Under "
            "separation the maximum-likelihood estimate does not exist, so this compares the "
            "head with the bias-reduced fit, not with an MLE; per-output statistics are summed "
            "as if the outputs were independent."
        )
        return {"statistic": float(stat), "df": df, "p_value": pval, "reject": bool(reject),
                "interpretation": text, "test": "penalized likelihood ratio (Firth)"}

    def _remedy_parts(self) -> dict:
        """Per-fit log-likelihoods of a remedy fit, at its (penalized) estimate."""
        x, y, b = self._x, self._y, self._beta
        if self._family == "multinomial":
            llf = [_loglik_multinomial(x, y, b)]
            lln = [_null_loglik_multinomial(y, b.shape[1] + 1)]
            names, per_fit = ["all"], b.shape[1]
        else:
            llf = [_loglik_binomial(x, y[:, j], b[:, j]) for j in range(b.shape[1])]
            lln = [_null_loglik_binomial(y[:, j]) for j in range(b.shape[1])]
            names, per_fit = list(self._all_classes), 1
        res = self._results
        objs = list(res.values()) if isinstance(res, dict) else [res]
        conv = [bool(o.fit.converged if self._remedy == "pca" else o.converged) for o in objs]
        if self._remedy == "pca":
            n_par = (self._extra["n_components"] + 1) * per_fit
        else:
            n_par = len(self._terms) * per_fit
        out = {"names": names, "llf": llf, "llnull": lln, "converged": conv,
               "n_params": n_par, "per_fit": per_fit}
        if self._remedy == "firth":
            out["pll"] = [fr.pll for fr in self._firth_fits()]
        return out

    def _remedy_stats(self, i: int | None) -> dict:
        """Fit statistics of fit ``i`` (None: summed). LR/AIC/BIC only where they are valid."""
        r = self._remedy_parts()
        idx = range(len(r["llf"])) if i is None else [i]
        llf = float(sum(r["llf"][j] for j in idx))
        lln = float(sum(r["llnull"][j] for j in idx))
        k = r["n_params"] * len(idx)
        out = {
            "llf": llf, "llnull": lln, "deviance": -2 * llf, "null_deviance": -2 * lln,
            "lr_statistic": None, "lr_df": None, "aic": None, "bic": None,
            "n_params": int(k), "converged": all(r["converged"][j] for j in idx),
        }
        if self._remedy == "pca":  # an MLE in the reduced model: LR, AIC, BIC are valid
            out["lr_statistic"] = 2 * (llf - lln)
            out["lr_df"] = int(k - r["per_fit"] * len(idx))
            out["aic"] = -2 * llf + 2 * k
            out["bic"] = -2 * llf + k * np.log(self.n_obs)
        if "pll" in r:
            out["penalized_llf"] = float(sum(r["pll"][j] for j in idx))
        return out

    # ------------------------------------------------------------ fit statistics
    def _per_output_stats(self, res, n_params: int) -> dict:
        gauss = self._family == "gaussian"
        llf, llnull = float(res.llf), float(res.llnull)
        k = n_params + (1 if gauss else 0)
        return {
            "llf": llf,
            "llnull": llnull,
            "deviance": float(res.deviance),
            "null_deviance": float(res.null_deviance),
            "lr_statistic": 2 * (llf - llnull),
            "lr_df": n_params - 1,
            "aic": -2 * llf + 2 * k,
            "bic": -2 * llf + k * np.log(self.n_obs),
            "n_params": int(n_params),
            "converged": _converged(res),
        }

    @property
    def class_fit_stats(self) -> pd.DataFrame:
        """Fit statistics per output (per-output families) or one row ``"all"`` (multinomial)."""
        if self._family == "multinomial":
            return pd.DataFrame([self.fit_stats], index=pd.Index(["all"], name="class"))
        q = len(self._terms)
        rows = {}
        for j, (c, res) in enumerate(self._results.items()):
            if self._remedy is not None:
                s = self._remedy_stats(j)
            else:
                s = self._per_output_stats(res, q)
            s["lr_pvalue"] = (float(stats.chi2.sf(s["lr_statistic"], s["lr_df"]))
                              if s["lr_statistic"] is not None else None)
            s["mcfadden_r2"] = 1 - s["llf"] / s["llnull"] if s["llnull"] else float("nan")
            if self._family != "gaussian":
                s["events_per_parameter"] = dg.events_per_parameter(
                    self._y[:, [j]], len(self.units)
                )
            rows[c] = s
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("class")

    @property
    def fit_stats(self) -> dict:
        """Model fit, JSON-serialisable: llf, deviance, null deviance, LR test against the
        intercept-only model, AIC/BIC, McFadden R2, n_obs, n_params, events per parameter.

        For per-output families the values are sums over the outputs (a joint likelihood that
        treats the outputs as independent; see :attr:`class_fit_stats` for each one).
        """
        q, n = len(self._terms), self.n_obs
        if self._remedy is not None:
            out = {"family": self._family, **self._remedy_stats(None)}
        elif self._family == "multinomial":
            res = self._results
            llf, llnull = float(res.llf), float(res.llnull)
            k = q * self._beta.shape[1]
            out = {
                "family": self._family,
                "llf": llf,
                "llnull": llnull,
                "deviance": -2 * llf,
                "null_deviance": -2 * llnull,
                "lr_statistic": 2 * (llf - llnull),
                "lr_df": int(k - self._beta.shape[1]),
                "aic": -2 * llf + 2 * k,
                "bic": -2 * llf + k * np.log(n),
                "n_params": int(k),
                "converged": _converged(res),
            }
        else:
            per = [self._per_output_stats(r, q) for r in self._results.values()]
            out = {"family": self._family}
            for key in ("llf", "llnull", "deviance", "null_deviance", "lr_statistic", "aic", "bic"):
                out[key] = float(sum(s[key] for s in per))
            out["lr_df"] = int(sum(s["lr_df"] for s in per))
            out["n_params"] = int(sum(s["n_params"] for s in per))
            out["converged"] = all(s["converged"] for s in per)
        out["lr_pvalue"] = (float(stats.chi2.sf(out["lr_statistic"], out["lr_df"]))
                            if out["lr_statistic"] is not None else None)
        out["mcfadden_r2"] = 1 - out["llf"] / out["llnull"] if out["llnull"] else float("nan")
        out["n_obs"] = int(n)
        out["n_units"] = len(self.units)
        out["events_per_parameter"] = float(self._diagnostics["events_per_parameter"])
        out["cov_type"] = self._cov_type
        out["engine"] = self.engine
        out["remedy"] = self._remedy
        return {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in out.items()}

    # ------------------------------------------------------------ display
    def __repr__(self) -> str:
        fs = self.fit_stats
        return (
            f"RefitResult(family={self._family!r}, parametrization={self._param!r}, "
            f"n_obs={self.n_obs}, units={len(self.units)} (+{len(self._dropped)} dropped), "
            f"classes={len(self.classes)}, llf={fs['llf']:.6g}, cov_type={self._cov_type!r}, "
            f"engine={self.engine!r}, remedy={self._remedy!r}, warnings={len(self._warnings)})"
        )

    def _repr_html_(self) -> str:
        fs = self.fit_stats
        agree = self.agreement_test
        stats_tbl = pd.DataFrame([fs]).T.rename(columns={0: "value"}).to_html()
        top = self.coefficients
        top = top[top["term"] != "const"].reindex(
            top.loc[top["term"] != "const", "z"].abs().sort_values(ascending=False).index
        ).head(20)
        warn_html = "".join(f"<li>{html.escape(w)}</li>" for w in self._warnings)
        return (
            f"<div><h4>Refit of head {html.escape(self._head.name)!s} as a {self._family} GLM "
            f"({self._param}, cov_type={self._cov_type})</h4>"
            + (f"<p style='color:#a00'><b>{html.escape(self.inference)}</b></p>"
               if self._remedy is not None else "")
            + (f"<p><b>Warnings</b></p><ul>{warn_html}</ul>" if warn_html else "")
            + f"<p>Agreement with the network: {html.escape(agree['interpretation'])}</p>"
            + stats_tbl
            + "<p>Top 20 unit coefficients by |z|</p>"
            + top.to_html(index=False, float_format=lambda v: f"{v:.4g}")
            + "</div>"
        )
