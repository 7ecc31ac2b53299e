"""Refit on a class subset: the conditional multinomial logit of the rows whose class is in S.

For a class set ``S``, ``P(y = k | y in S, x) = exp(w_k'x) / sum_{j in S} exp(w_j'x)``: the
rows with ``y in S`` follow a multinomial logit over ``S`` with the *same* coefficients ``w``
(a conditional likelihood). Refitting it gives valid, full inference on the contrasts
``w_k - w_j`` within ``S`` in ``(p + 1)(|S| - 1)`` parameters, e.g. between the classes a
network confuses, where the full model's ``(p + 1)(K - 1)`` parameters (K = 1000) have no
storable covariance. It uses fewer rows than the full likelihood, so it is less efficient
(larger SEs) for the same contrasts, and it says nothing about classes outside ``S``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from glminterp import engine as E

__all__ = ["ClassSubsetResult", "fit_class_subset"]


@dataclass(frozen=True)
class ClassSubsetResult:
    """Conditional multinomial-logit fit on the rows of a class subset.

    Attributes
    ----------
    fit : EngineResult
        The engine's fit on the subset (``classes`` = the subset, first = baseline).
    classes : tuple
        The subset, baseline first.
    terms : tuple of str
    n_obs : int
        Rows used (those whose class is in the subset).
    n_obs_total : int
        Rows offered.
    """

    fit: E.EngineResult
    classes: tuple
    terms: tuple[str, ...]
    n_obs: int
    n_obs_total: int

    @property
    def params(self) -> np.ndarray:
        return self.fit.params

    @property
    def cov(self) -> np.ndarray:
        return self.fit.cov

    @property
    def bse(self) -> np.ndarray:
        return self.fit.bse

    @property
    def llf(self) -> float:
        return self.fit.llf

    @property
    def convergence(self) -> dict:
        f = self.fit
        return {"converged": f.converged, "n_iter": f.n_iter, "n_hvp": f.n_hvp,
                "n_fisher": f.n_fisher, "grad_norm": f.grad_norm, "seconds": f.seconds}

    def _vec(self, a, b) -> np.ndarray:
        """Selector of ``w_a - w_b`` for every term: ``(q, n_params)``."""
        q, j = len(self.terms), len(self.classes) - 1
        out = np.zeros((q, q * j))
        for cls, sign in ((a, 1.0), (b, -1.0)):
            if cls not in self.classes:
                raise ValueError(f"class {cls!r} is not in the subset {list(self.classes)}.")
            k = self.classes.index(cls)
            if k:
                out[:, (k - 1) * q : k * q] += sign * np.eye(q)
        return out

    def contrast(self, a, b) -> pd.DataFrame:
        """``w_a - w_b`` per term: estimate, SE, z, p (Wald, conditional likelihood)."""
        c = self._vec(a, b)
        est = c @ self.params.ravel(order="F")
        se = np.sqrt(np.einsum("ij,jk,ik->i", c, self.cov, c))
        z = est / se
        return pd.DataFrame({"estimate": est, "se": se, "z": z, "p": 2 * stats.norm.sf(np.abs(z))},
                            index=pd.Index(self.terms, name="term"))

    def wald_test(self, a, b, terms: Sequence[str] | None = None) -> dict:
        """Joint Wald test that ``w_a = w_b`` on ``terms`` (default: all but the intercept)."""
        names = [t for t in self.terms if t != "const"] if terms is None else list(terms)
        rows = [self.terms.index(t) for t in names]
        c = self._vec(a, b)[rows]
        d = c @ self.params.ravel(order="F")
        stat = float(d @ np.linalg.solve(c @ self.cov @ c.T, d))
        return {"statistic": stat, "df": len(rows), "p": float(stats.chi2.sf(stat, len(rows)))}

    @cached_property
    def pairwise(self) -> pd.DataFrame:
        """Joint Wald test of every pair of subset classes (all units)."""
        out = [{"class_a": a, "class_b": b, **self.wald_test(a, b)}
               for a, b in combinations(self.classes, 2)]
        return pd.DataFrame(out)


def fit_class_subset(
    x,
    y,
    classes: Sequence,
    *,
    baseline=None,
    detect_separation: bool = True,
    **engine_kwds,
) -> ClassSubsetResult:
    """Refit the multinomial logit on the rows whose class is in ``classes``.

    Parameters
    ----------
    x : array-like, shape (n_obs, p)
        Regressors without an intercept column (a DataFrame keeps its unit names).
    y : array-like, shape (n_obs,)
    classes : sequence
        At least two distinct labels present in ``y``.
    baseline : optional
        Baseline class of the subset (default: the first sorted one).
    detect_separation : bool
        Stop early with :class:`~glminterp.refit.separation.SeparationError` on separated data.
    **engine_kwds
        Passed to :func:`glminterp.engine.fit_multinomial` (``method``, ``tol``,
        ``max_memory``...).

    Returns
    -------
    ClassSubsetResult
    """
    yy = np.asarray(y)
    subset = list(dict.fromkeys(classes))
    if len(subset) < 2:
        raise ValueError("classes must name at least two distinct classes.")
    present = set(np.unique(yy).tolist())
    missing = [c for c in subset if c not in present]
    if missing:
        raise ValueError(f"classes {missing} do not occur in y.")
    keep = np.isin(yy, subset)
    xs = x.loc[keep] if isinstance(x, pd.DataFrame) else np.asarray(x)[keep]
    ys = yy[keep]
    order = sorted(subset)
    if baseline is not None:
        if baseline not in subset:
            raise ValueError(f"baseline {baseline!r} is not in classes.")
        order = [baseline] + [c for c in order if c != baseline]
    # the engine takes the first sorted label as baseline: recode in the wanted order
    if baseline is None:
        codes = ys
    else:
        pos = {c: i for i, c in enumerate(order)}
        codes = np.array([pos[v] for v in ys.tolist()])
    fit = E.fit_multinomial(xs, codes, detect_separation=detect_separation, **engine_kwds)
    return ClassSubsetResult(fit=fit, classes=tuple(order), terms=fit.terms,
                             n_obs=int(keep.sum()), n_obs_total=int(len(yy)))


def _subset_order(model, classes, baseline) -> list[str]:
    """The subset's class names, baseline first, then in the head's order."""
    names = [str(c) for c in model.all_classes]
    if classes is None or isinstance(classes, (str, bytes)) or len(list(classes)) < 2:
        raise ValueError(
            f"method='class_subset' needs classes=[...] naming at least two of the head's "
            f"classes (e.g. {names[:3]}); got classes={classes!r}."
        )
    subset = list(dict.fromkeys(str(c) for c in classes))
    unknown = [c for c in subset if c not in names]
    if unknown:
        raise ValueError(f"classes {unknown} are not classes of the head (e.g. {names[:5]}).")
    if len(subset) < 2:
        raise ValueError("classes must name at least two distinct classes.")
    order = [c for c in names if c in subset]
    if baseline is not None:
        if str(baseline) not in subset:
            raise ValueError(f"baseline={baseline!r} is not in classes={subset}.")
        order = [str(baseline)] + [c for c in order if c != str(baseline)]
    return order


def subset_model(model, classes, baseline=None):
    """The conditional model on the rows of a class subset, as an ``OutputLayerGLM``.

    Rows whose class is in ``classes`` follow a softmax over those classes with the same
    coefficients (module docstring), so the subset design is checked like any refit design
    (units constant on the subset rows dropped and folded, conditioning, events per
    parameter), and the network's head restricted to the subset stays comparable.

    Parameters
    ----------
    model : OutputLayerGLM
        A multinomial model (softmax head).
    classes : sequence
        At least two of the head's classes.
    baseline : optional
        The subset's baseline (default: the first of ``classes`` in the head's order).
    """
    from dataclasses import replace

    from glminterp.refit.model import OutputLayerGLM

    if model.family != "multinomial":
        raise ValueError(f"method='class_subset' refits a softmax head's multinomial model; this "
                         f"model is family={model.family!r}.")
    order = _subset_order(model, classes, baseline)
    names = [str(c) for c in model.all_classes]
    pos = [names.index(c) for c in order]
    recode = np.full(len(names), -1)
    recode[pos] = np.arange(len(pos))
    codes = recode[model.y]
    keep = codes >= 0
    counts = np.bincount(codes[keep], minlength=len(pos))
    if np.any(counts == 0):
        empty = [order[i] for i in np.flatnonzero(counts == 0)]
        raise ValueError(f"classes {empty} have no rows in the refit split; drop them from classes.")
    sub = OutputLayerGLM()
    net = model.network
    sub.head = replace(model.head, weight=net[1:, pos].T.copy(), bias=net[0, pos].copy(),
                       classes=tuple(order))
    sub.split, sub.family = model.split, "multinomial"
    sub.obs = model.obs.iloc[np.flatnonzero(keep)]
    sub.y = codes[keep]
    rows = set(sub.obs.index)
    sub.overlap = [i for i in model.overlap if i in rows]
    if sub.overlap:
        sub._warn(f"REFIT USES TRAINING ROWS: {len(sub.overlap)} of the {int(keep.sum())} subset "
                  "rows were used to train the network; its standard errors are not valid.")
    sub._check_units(model.features.iloc[np.flatnonzero(keep)], True, "drop")
    sub._check_conditioning()
    sub._fold_network()
    sub.n_obs_total = model.n_obs
    sub.row_mask = keep
    return sub
