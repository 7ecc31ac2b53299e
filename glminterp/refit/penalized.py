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

from glminterp.engine import (
    BinomialObjective,
    EngineResult,
    MultinomialObjective,
    _as_design,
    array_chunks,
    encode_classes,
    fit_binomial,
    fit_multinomial,
    multinomial_probs,
    null_start_multinomial,
)

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


def _score_outer(x: np.ndarray, resid: np.ndarray, shift: np.ndarray, chunk: int) -> np.ndarray:
    """``sum_n psi_n psi_n'`` with ``psi_n = r_n (x) [1, x_n] - shift`` (stacked, one GEMM/chunk)."""
    n, p = x.shape
    q = p + 1
    j = resid.shape[1]
    out = np.zeros((j * q, j * q))
    for i in range(0, n, chunk):
        xs, rs = x[i : i + chunk], resid[i : i + chunk]
        a = np.empty((xs.shape[0], j, q))
        a[:, :, 0] = rs
        np.multiply(rs[:, :, None], xs[:, None, :], out=a[:, :, 1:])
        a = a.reshape(xs.shape[0], j * q) - shift[None, :]
        out += a.T @ a
    return out


def _penalized_newton(value_grad, fisher, b, tol: float, max_iter: int):
    """Newton with Armijo step halving on a concave penalized objective.

    Converged when the Newton step is below ``tol``, or when no step can raise the objective at
    machine precision while the step is already below ``sqrt(tol)`` (rounding-level optimum).
    """
    pval, grad, llf = value_grad(b)
    converged, n_iter = False, 0
    while n_iter < max_iter:
        n_iter += 1
        step = cho_solve(cho_factor(fisher(b), check_finite=False), grad, check_finite=False)
        size = float(np.max(np.abs(step)))
        if size <= tol:
            b = b + step
            pval, grad, llf = value_grad(b)
            converged = True
            break
        t, accepted = 1.0, None
        for _ in range(40):
            cand = value_grad(b + t * step)
            if cand[0] >= pval + 1e-4 * t * float(grad @ step):
                accepted = cand
                break
            t *= 0.5
        stalled = accepted is None or accepted[0] - pval <= 1e-15 * max(1.0, abs(pval))
        if stalled and size <= np.sqrt(tol):  # rounding-level optimum: no ascent is possible
            converged = True
            break
        if accepted is None:  # no ascent at machine precision far from the optimum: give up
            break
        b = b + t * step
        pval, grad, llf = accepted
    return b, llf, converged, n_iter


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
        obj = MultinomialObjective(array_chunks(arr, codes, None, chunk_size), q, k)
        j = k - 1
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

    def pen_value_grad(beta):
        llf, g = obj.value_grad(beta)
        return llf - 0.5 * lam * float(np.sum(d * beta**2)), g - lam * d * beta, llf

    def pen_fisher(beta):
        h = obj.fisher(beta)
        h[np.diag_indices_from(h)] += lam * d
        return h

    b, llf, converged, n_iter = _penalized_newton(pen_value_grad, pen_fisher, b, tol, max_iter)
    h = obj.fisher(b)
    h[np.diag_indices_from(h)] += lam * d
    h_inv = np.linalg.inv(h)
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
    meat = _score_outer(arr, resid, shift, chunk_size)
    cov = h_inv @ meat @ h_inv
    cov = (cov + cov.T) / 2
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
