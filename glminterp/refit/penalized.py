"""Remedies for separation and high p/N besides Firth: ridge and principal components.

- :func:`fit_ridge`: multinomial or binomial logit with an L2 penalty ``lam/2 ||b||^2`` on the
  slopes (intercepts unpenalised), solved by Newton with the engine's Fisher information, and
  the sandwich covariance ``H^-1 J H^-1`` (``H = I + lam D`` the penalised information, ``J`` the
  empirical covariance of the estimating functions ``s_n - lam D b / N``). This is *penalised*
  inference: the estimate is shrunk toward 0 and intervals are centred on the shrunk value; the
  result says so in its ``inference`` label.
- :func:`fit_pca`: fit the GLM on the leading ``k`` principal components of the units, report
  the loadings (which units load on which component) and map the component coefficients back
  to units, ``b_units = V_k g`` with covariance ``L Cov(g) L'`` (rank ``k (K - 1)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from scipy.linalg import cho_factor, cho_solve
from scipy.linalg.blas import dsyrk

from glminterp.engine import (
    BinomialObjective,
    EngineResult,
    MultinomialObjective,
    _as_design,
    add_const,
    array_chunks,
    encode_classes,
    fit_binomial,
    fit_multinomial,
    inverse_from_cholesky,
    multinomial_probs,
    null_start_multinomial,
    symmetrize_upper,
)
from glminterp.refit.mnbr import pcg

FAMILIES = ("multinomial", "binomial")


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family={family!r}; use one of {FAMILIES}.")


@dataclass(frozen=True)
class RidgeResult:
    """Ridge-penalised logit fit with sandwich covariance (penalised inference).

    Attributes
    ----------
    params : DataFrame
        Index = terms (``"const"`` first), columns = non-baseline classes (multinomial,
        reference parametrization) or ``["coef"]`` (binomial).
    cov : ndarray
        Sandwich covariance ``H^-1 J H^-1`` of ``params`` flattened in Fortran order.
    lam : float
    family : str
    llf : float
        Unpenalised log-likelihood at the estimate.
    n_iter : int
    converged : bool
    inference : str
        A label to print beside every number derived from this fit.
    """

    params: pd.DataFrame
    cov: np.ndarray = field(repr=False)
    lam: float
    family: str
    llf: float
    n_iter: int
    converged: bool
    inference: str

    @property
    def bse(self) -> pd.DataFrame:
        se = np.sqrt(np.diag(self.cov)).reshape(self.params.shape, order="F")
        return pd.DataFrame(se, index=self.params.index, columns=self.params.columns)

    def summary_frame(self, alpha: float = 0.05) -> pd.DataFrame:
        """Tidy table (class, term, coef, se, z, p, ci_lower, ci_upper, inference)."""
        coef = self.params.stack().rename("coef")
        se = self.bse.stack().rename("se")
        out = pd.concat([coef, se], axis=1)
        out.index.names = ["term", "class"]
        out = out.reset_index()[["class", "term", "coef", "se"]]
        crit = stats.norm.ppf(1 - alpha / 2)
        out["z"] = out["coef"] / out["se"]
        out["p"] = 2 * stats.norm.sf(np.abs(out["z"]))
        out["ci_lower"] = out["coef"] - crit * out["se"]
        out["ci_upper"] = out["coef"] + crit * out["se"]
        out["inference"] = self.inference
        return out.sort_values(["class", "term"], kind="stable").reset_index(drop=True)

    def _repr_html_(self) -> str:
        return f"<p><b>{self.inference}</b></p>" + self.summary_frame().to_html(
            float_format="%.4g", index=False
        )


_CHUNK_BYTES = 32 * 2**20  # working memory per chunk of stacked scores


def _score_outer(x: np.ndarray, resid: np.ndarray, shift: np.ndarray, chunk: int,
                 chol=None) -> np.ndarray:
    """``sum_n psi_n psi_n'`` with ``psi_n = r_n (x) [1, x_n] - shift`` (stacked, one syrk/chunk).

    With ``chol`` (the Cholesky factor of ``H``) it returns ``sum_n (H^-1 psi_n)(H^-1 psi_n)'``
    instead, i.e. the sandwich ``H^-1 J H^-1`` itself. Chunks are capped at about 32 MB of
    stacked scores whatever ``chunk`` says, so memory is bounded by the ``(Jq)^2`` result; only
    the upper triangle is accumulated (BLAS ``syrk``).
    """
    n, p = x.shape
    q = p + 1
    j = resid.shape[1]
    chunk = max(1, min(int(chunk), _CHUNK_BYTES // (8 * j * q)))
    out = np.zeros((j * q, j * q), order="F")
    for i in range(0, n, chunk):
        xs, rs = x[i : i + chunk], resid[i : i + chunk]
        a = np.empty((xs.shape[0], j, q))
        a[:, :, 0] = rs
        np.multiply(rs[:, :, None], xs[:, None, :], out=a[:, :, 1:])
        a = a.reshape(xs.shape[0], j * q)
        a -= shift[None, :]
        at = a.T if chol is None else cho_solve(chol, a.T, check_finite=False)
        out = dsyrk(1.0, at, beta=1.0, c=out, trans=0, lower=0, overwrite_c=1)
    return symmetrize_upper(out)


def _sandwich(x: np.ndarray, resid: np.ndarray, shift: np.ndarray, chunk: int, chol):
    """``H^-1 J H^-1`` by the cheaper of two exact routes.

    Few rows (``N < 1.9 Jq``): ``sum_n (H^-1 psi_n)(H^-1 psi_n)'``, ``3 N (Jq)^2`` flops and no
    inverse; many rows: ``J`` by ``syrk`` (``N (Jq)^2 / 2``), ``H^-1`` and two products
    (``~4.7 (Jq)^3``).
    """
    jq = chol[0].shape[0]
    if x.shape[0] < 1.9 * jq:
        return _score_outer(x, resid, shift, chunk, chol)
    meat = _score_outer(x, resid, shift, chunk)
    h_inv = inverse_from_cholesky(chol[0])
    cov = h_inv @ meat
    del meat
    cov = cov @ h_inv
    cov += cov.T
    cov *= 0.5
    return cov


class _Ridge:
    """The engine's objective plus ``-lam/2 sum(d b^2)``: what the engine's solvers need."""

    def __init__(self, obj, lam: float, d: np.ndarray):
        self.obj, self.lam, self.d = obj, lam, d
        self.n_params = obj.n_params
        self.llf = np.nan  # unpenalised log-likelihood at the last value_grad point

    def value_grad(self, b):
        llf, g = self.obj.value_grad(b)
        self.llf = llf
        return llf - 0.5 * self.lam * float(np.sum(self.d * b**2)), g - self.lam * self.d * b

    def hvp(self, b, v):
        return self.obj.hvp(b, v) + self.lam * self.d * v

    def fisher(self, b):
        h = self.obj.fisher(b)
        h[np.diag_indices_from(h)] += self.lam * self.d
        return h


def _armijo(pen, b, val, grad, step):
    """Step halving on the penalised log-likelihood; the full step where the predicted gain is
    below rounding (the objective is strictly concave, so the Newton step is safe there)."""
    slope = float(grad @ step)
    if slope <= 1e-13 * max(1.0, abs(val)):
        new = pen.value_grad(b + step)
        return b + step, new[0], new[1]
    t = 1.0
    for _ in range(40):
        new = pen.value_grad(b + t * step)
        if new[0] >= val + 1e-4 * t * slope:
            return b + t * step, new[0], new[1]
        t *= 0.5
    return None


def _ridge_solve(pen, b, tol: float, max_iter: int, precond_factory):
    """Maximise the ridge objective; returns (b, converged, n_iter, Cholesky factor of H or None).

    Above 500 parameters: Newton-CG on products (superlinear forcing) until the step is below
    ``tol``, then one full information matrix ``H`` for a last exact Newton step; its Cholesky
    factor is returned, so ``H^-1`` costs no second matrix (off by that last step, ``<= tol``).
    Otherwise full Newton steps with ``H`` until the step is below ``tol`` (factor not returned:
    the caller rebuilds ``H`` exactly at the estimate, cheap at that size).
    """
    val, grad = pen.value_grad(b)
    n_iter, big = 0, pen.n_params > 500
    if big:
        precond = precond_factory(b)
        gscale = max(1.0, float(np.max(np.abs(grad))))
        while n_iter < max_iter:
            gmax = float(np.max(np.abs(grad)))
            rtol = float(np.clip(min(np.sqrt(gmax / gscale), 1e2 * gmax / gscale), 1e-12, 0.5))
            step = pcg(lambda v, b=b: pen.hvp(b, v), grad, precond, rtol, 200)[0]
            n_iter += 1
            if float(np.max(np.abs(step))) <= tol:
                break
            out = _armijo(pen, b, val, grad, step)
            if out is None:
                break
            b, val, grad = out
    while n_iter < max_iter:
        n_iter += 1
        chol = cho_factor(pen.fisher(b), check_finite=False)
        step = cho_solve(chol, grad, check_finite=False)
        if float(np.max(np.abs(step))) <= tol:
            return b + step, True, n_iter, chol if big else None
        out = _armijo(pen, b, val, grad, step)
        if out is None:
            return b, False, n_iter, None
        b, val, grad = out
    return b, False, n_iter, None


def _ridge_precond(arr: np.ndarray, lam: float, probs: np.ndarray | None, q: int, j: int):
    """``(S (x) G + lam D)^-1`` approximately: ``S^-1 (x) (G + lam / s D_q)^-1``.

    ``G = X1'X1``; ``S`` the mean class covariance at the start (multinomial) or 1/4 (binomial,
    the bound on ``mu (1 - mu)``); ``s`` the mean of ``diag(S)``. A preconditioner only.
    """
    x1 = add_const(arr)
    g = x1.T @ x1
    if probs is None:
        s = np.array([[0.25]])
    else:
        s = np.diag(probs.mean(axis=0)) - probs.T @ probs / probs.shape[0]
    dq = np.r_[0.0, np.ones(q - 1)]
    g_inv = np.linalg.pinv(g + lam / float(np.mean(np.diag(s))) * np.diag(dq), hermitian=True)
    s_inv = np.linalg.inv(s)

    def apply(r):
        return (g_inv @ r.reshape(q, j, order="F") @ s_inv).ravel(order="F")

    return lambda beta: apply


def fit_ridge(
    x,
    y,
    *,
    lam: float = 1.0,
    family: str = "multinomial",
    start=None,
    tol: float = 1e-8,
    max_iter: int = 100,
    chunk_size: int = 4096,
) -> RidgeResult:
    """Ridge-penalised multinomial or binomial logit with sandwich covariance.

    Maximises ``l(b) - lam/2 * sum(slopes^2)`` (intercepts unpenalised) by Newton steps with the
    penalised information ``H = I(b) + lam D``.

    Parameters
    ----------
    x : array-like, shape (n_obs, p)
        Regressors without intercept.
    y : array-like
        Class labels (multinomial; first sorted = baseline) or 0/1 (binomial).
    lam : float
        Penalty strength on the summed log-likelihood scale (> 0).
    family : {"multinomial", "binomial"}
    start, tol, max_iter
        As in :func:`glminterp.engine.fit_multinomial`.
    chunk_size : int
        Rows per chunk for the sums.

    Returns
    -------
    RidgeResult
        Its ``cov`` is the sandwich ``H^-1 J H^-1``, labelled as penalised inference.
    """
    _check_family(family)
    if not lam > 0:
        raise ValueError(f"lam must be positive, got {lam}; use glminterp.engine for lam = 0.")
    arr, terms = _as_design(x)
    q = arr.shape[1] + 1
    if family == "multinomial":
        codes, classes = encode_classes(y)
        k = len(classes)
        j = k - 1
        chunk_size = max(64, min(int(chunk_size), _CHUNK_BYTES // (8 * q * j)))
        obj = MultinomialObjective(array_chunks(arr, codes, None, chunk_size), q, k)
        b = null_start_multinomial(codes, k, q).ravel(order="F") if start is None else (
            np.asarray(start, dtype=np.float64).ravel(order="F"))
        columns = [str(c) for c in classes[1:]]
    else:
        yy = np.asarray(y, dtype=np.float64).ravel()
        if not np.all((yy == 0) | (yy == 1)):
            raise ValueError("y must contain only 0 and 1 for family='binomial'.")
        obj = BinomialObjective(array_chunks(arr, yy, None, chunk_size), q)
        j = 1
        b = np.zeros(q) if start is None else np.asarray(start, dtype=np.float64).ravel()
        columns = ["coef"]
    if b.size != q * j:
        raise ValueError(f"start has {b.size} values; expected {q * j}.")
    d = np.tile(np.r_[0.0, np.ones(q - 1)], j)  # penalise slopes only
    pen = _Ridge(obj, float(lam), d)
    probs = None
    if family == "multinomial":
        probs = multinomial_probs(arr, b.reshape(q, j, order="F"))[0]
    b, converged, n_iter, chol = _ridge_solve(
        pen, b, tol, max_iter, _ridge_precond(arr, float(lam), probs, q, j))
    pen.value_grad(b)
    llf = pen.llf
    if chol is None:  # H exactly at the returned estimate
        chol = cho_factor(pen.fisher(b), check_finite=False)
    # estimating functions psi_n = s_n - lam D b / N  (they sum to zero at the estimate)
    n = arr.shape[0]
    shift = lam * d * b / n
    if family == "multinomial":
        bm = b.reshape(q, j, order="F")
        resid = -multinomial_probs(arr, bm)[0]
        resid[np.flatnonzero(codes > 0), codes[codes > 0] - 1] += 1.0
    else:
        from scipy.special import expit

        resid = (yy - expit(arr @ b[1:] + b[0]))[:, None]
    cov = _sandwich(arr, resid, shift, chunk_size, chol)
    label = (
        f"penalized inference (ridge, lam={lam:g}): estimates shrunk toward 0; sandwich "
        "SEs H^-1 J H^-1 around the shrunken estimate, not bias-corrected"
    )
    return RidgeResult(
        params=pd.DataFrame(b.reshape(q, j, order="F"), index=list(terms), columns=columns),
        cov=cov,
        lam=float(lam),
        family=family,
        llf=float(llf),
        n_iter=n_iter,
        converged=converged,
        inference=label,
    )


@dataclass(frozen=True)
class PCAResult:
    """GLM fitted on the leading principal components of the units.

    Attributes
    ----------
    fit : EngineResult
        The fit on the component scores (terms ``const, PC1..PCk``).
    loadings : DataFrame
        Units x components: unit weights of each component (unit-norm columns).
    explained_variance_ratio : Series
    center : Series
        Unit means subtracted before projecting.
    unit_params : DataFrame
        Coefficients mapped back to units: index = ``const`` + units, columns = classes.
    unit_cov : ndarray
        ``L Cov(g) L'`` for ``unit_params`` flattened in Fortran order (rank k (K - 1)).
    inference : str
    """

    fit: EngineResult
    loadings: pd.DataFrame
    explained_variance_ratio: pd.Series
    center: pd.Series = field(repr=False)
    unit_params: pd.DataFrame = field(repr=False)
    unit_cov: np.ndarray = field(repr=False)
    inference: str = ""

    @property
    def unit_bse(self) -> pd.DataFrame:
        se = np.sqrt(np.clip(np.diag(self.unit_cov), 0, None))
        return pd.DataFrame(
            se.reshape(self.unit_params.shape, order="F"),
            index=self.unit_params.index,
            columns=self.unit_params.columns,
        )

    def top_units(self, n: int = 5) -> pd.DataFrame:
        """For each component, the ``n`` units with the largest absolute loading."""
        rows = []
        for comp in self.loadings.columns:
            col = self.loadings[comp]
            for unit in col.abs().sort_values(ascending=False).index[:n]:
                rows.append((comp, unit, float(col[unit])))
        return pd.DataFrame(rows, columns=["component", "unit", "loading"])


def fit_pca(
    x,
    y,
    *,
    n_components: int,
    family: str = "multinomial",
    scale: bool = False,
    **engine_kwargs,
) -> PCAResult:
    """Fit the logit on the leading principal components of the units.

    Parameters
    ----------
    x : array-like, shape (n_obs, p)
        Units (no intercept).
    y : array-like
    n_components : int
        Number of leading components ``k`` (1 <= k <= p).
    family : {"multinomial", "binomial"}
    scale : bool
        Standardise units before the decomposition (loadings then refer to standardised units;
        the mapping back accounts for it).
    **engine_kwargs
        Passed to :func:`glminterp.engine.fit_multinomial` / ``fit_binomial``.
    """
    _check_family(family)
    arr, terms = _as_design(x)
    p = arr.shape[1]
    if not 1 <= int(n_components) <= p:
        raise ValueError(f"n_components must be between 1 and {p}, got {n_components}.")
    k = int(n_components)
    mean = arr.mean(axis=0)
    sd = arr.std(axis=0) if scale else np.ones(p)
    sd = np.where(sd > 0, sd, 1.0)
    xc = (arr - mean) / sd
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    v = vt[:k].T  # (p, k)
    # sign convention: largest-|loading| unit positive, so loadings are reproducible
    v *= np.sign(v[np.abs(v).argmax(axis=0), np.arange(k)])
    pcs = [f"PC{i + 1}" for i in range(k)]
    scores = pd.DataFrame(xc @ v, columns=pcs)
    fitter = fit_multinomial if family == "multinomial" else fit_binomial
    res = fitter(scores, y, **engine_kwargs)
    g = res.params if res.params.ndim == 2 else res.params[:, None]
    j = g.shape[1]
    # b_units = (V / sd) g_slopes; intercept = g0 - mean' (V / sd) g_slopes
    m = v / sd[:, None]  # (p, k)
    lmap = np.zeros((p + 1, k + 1))
    lmap[0, 0] = 1.0
    lmap[0, 1:] = -mean @ m
    lmap[1:, 1:] = m
    unit_params = lmap @ g
    big = np.kron(np.eye(j), lmap)  # Fortran vec: class-major blocks
    unit_cov = big @ res.cov @ big.T
    cols = [str(c) for c in res.classes[1:]] if family == "multinomial" else ["coef"]
    var = s**2
    return PCAResult(
        fit=res,
        loadings=pd.DataFrame(v, index=list(terms[1:]), columns=pcs),
        explained_variance_ratio=pd.Series(var[:k] / var.sum(), index=pcs),
        center=pd.Series(mean, index=list(terms[1:])),
        unit_params=pd.DataFrame(unit_params, index=list(terms), columns=cols),
        unit_cov=unit_cov,
        inference=(
            f"reduced-rank inference ({k} principal components): unit coefficients are a "
            f"linear map of {k} component coefficients; their covariance has rank {k * j}"
        ),
    )
