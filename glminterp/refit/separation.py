"""Detection of (quasi-)complete separation, where the maximum-likelihood estimate does not exist.

Under separation the log-likelihood keeps increasing along a direction of the coefficients, so
the MLE is infinite. statsmodels does not stop there: ``MNLogit`` returns NaN parameters with
``converged=True`` and GLM Binomial returns standard errors of order 1e5 with only a warning.
This module checks for it first, with the linear program of Konis (2007) as in R's
``detectseparation``, solved by HiGHS (:func:`scipy.optimize.linprog`).

Binomial, ``s_n = 2 y_n - 1``::

    max_b  sum_n s_n x_n'b   subject to  s_n x_n'b >= 0 for all n,  -1 <= b <= 1

Multinomial (reference parametrization, ``d_0 = 0``)::

    max_D  sum_n sum_{k != y_n} x_n'(d_{y_n} - d_k)
    subject to  x_n'(d_{y_n} - d_k) >= 0 for all n and k != y_n,  -1 <= D <= 1

A positive optimum is a direction along which no observation's fit gets worse and at least one's
improves: (quasi-)complete separation (Albert & Anderson 1984). The optimum is zero otherwise,
provided the design has full column rank (checked before, see :mod:`glminterp.refit.diagnostics`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sps
from scipy.optimize import linprog

# Columns are scaled to max |x| = 1 before solving, so the box -1..1 is comparable across units.
# HiGHS returns exactly 0 (or ~1e-12) for overlapping data; separated real data give values of
# order N. A margin is "positive" above _MARGIN_TOL; the optimum must exceed _OBJ_TOL per row.
_MARGIN_TOL = 1e-7
_OBJ_TOL = 1e-7
_COEF_TOL = 1e-6
# A constraint left out of the LP is added when the solution violates it by more than this.
_VIOLATION_TOL = 1e-9
# Below this many rows the binomial LP is solved whole.
_MIN_SUBSET = 500
# The full multinomial LP is very degenerate on overlapping data (optimum 0, at D = 0, with
# thousands of active constraints): HiGHS' interior point method (with its crossover to a
# vertex) solves it ~7x faster than its dual simplex (N = 2,000, p = 64, K = 10: 18 s, where
# the simplex had not finished in 200 s).
_FULL_LP_METHOD = "highs-ipm"

log = logging.getLogger(__name__)


class SeparationError(ValueError):
    """The data are (quasi-)completely separated: the maximum-likelihood estimate does not exist.

    Attributes
    ----------
    classes : tuple of str
        Classes whose rows are perfectly predicted along the separating direction.
    n_units : int
        Number of units (regressors other than the intercept) the separating direction uses.
    units : tuple of str
        Those units, largest weight in the direction first.
    checks : list of SeparationCheck
        The underlying checks.
    """

    def __init__(self, message: str, *, classes=(), n_units: int = 0, units=(), checks=()):
        super().__init__(message)
        self.classes = tuple(classes)
        self.n_units = int(n_units)
        self.units = tuple(units)
        self.checks = list(checks)


@dataclass(frozen=True)
class SeparationCheck:
    """Outcome of one separation linear program.

    Attributes
    ----------
    separated : bool
    objective : float
        Optimum of the LP (0 when the MLE exists).
    classes : tuple of str
        Classes with at least one row strictly separated along the direction.
    units : tuple of str
        Units (not the intercept) with a nonzero component in the direction, largest first.
    n_rows_separated : int
        Rows whose margin is strictly positive.
    direction : ndarray
        The separating direction in the original (unscaled) units, ``(q,)`` for binomial or
        ``(q, K - 1)`` (reference parametrization) for multinomial; zeros if not separated.
    label : str
        What was checked (e.g. ``"multinomial"`` or ``"binomial: 3"``).
    method : {"lp", "fit", "dual"}
        ``"lp"``: this linear program; ``"fit"``: the maximum-likelihood fit reached a clean
        optimum, which proves overlap (Albert & Anderson 1984), so no LP was run; ``"dual"``:
        the fit was not clean, but its fitted probabilities are a dual certificate bounding
        the LP's optimum below its separation threshold (:func:`lp_bound_multinomial`),
        so the LP's answer (no separation) is known without running it.
    bound : float or None
        With ``method="dual"``: the certified upper bound on the LP's optimum.
    """

    separated: bool
    objective: float
    classes: tuple[str, ...]
    units: tuple[str, ...]
    n_rows_separated: int
    direction: np.ndarray = field(repr=False)
    label: str = ""
    method: str = "lp"
    bound: float | None = None

    def to_dict(self) -> dict:
        """JSON-serialisable summary (without the direction)."""
        out = {
            "label": self.label,
            "separated": bool(self.separated),
            "objective": float(self.objective),
            "classes": list(self.classes),
            "units": list(self.units),
            "n_rows_separated": int(self.n_rows_separated),
            "method": self.method,
        }
        if self.bound is not None:
            out["lp_bound"] = float(self.bound)
        return out


def _note(progress: Callable[[str], None] | None, msg: str, *args) -> None:
    """Log one step of the check, and hand it to a progress display if there is one."""
    log.info(msg, *args)
    if progress is not None:
        progress(msg % args)


def _scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.abs(x).max(axis=0)
    s[s == 0] = 1.0
    return x / s, s


def _solve(c: np.ndarray, a_ub, n_vars: int, method: str = "highs"):
    res = linprog(
        c,
        A_ub=a_ub,
        b_ub=np.zeros(a_ub.shape[0]),
        bounds=[(-1.0, 1.0)] * n_vars,
        method=method,
    )
    if res.status != 0:
        raise RuntimeError(f"The separation linear program failed: {res.message}")
    return res


def _units_of(direction: np.ndarray, terms: Sequence[str]) -> tuple[str, ...]:
    """Non-intercept terms with a nonzero component, largest absolute component first."""
    mag = np.abs(direction).reshape(direction.shape[0], -1).max(axis=1)
    idx = [i for i in np.argsort(-mag, kind="stable") if i > 0 and mag[i] > _COEF_TOL]
    return tuple(terms[i] for i in idx)


def check_binomial(
    x: np.ndarray, y: np.ndarray, *, terms: Sequence[str], label: str = "binomial",
    classes: tuple[str, str] = ("0", "1"), progress: Callable[[str], None] | None = None,
) -> SeparationCheck:
    """Konis' LP for a binomial design.

    Parameters
    ----------
    x : ndarray, shape (N, q)
        Design matrix including the intercept column (column 0).
    y : ndarray, shape (N,)
        0/1 responses.
    terms : sequence of str
        Names of the ``q`` columns (``terms[0]`` the intercept).
    label : str
        Recorded in the result.
    classes : (str, str)
        Names of the outcomes 0 and 1, used to say which side is separated.
    progress : callable, optional
        Called with a one-line description after each phase (e.g. to update a progress bar).

    Returns
    -------
    SeparationCheck
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"x must be (N, q) and y (N,); got {x.shape} and {y.shape}.")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y must contain only 0 and 1 for the binomial separation check.")
    xs, scale = _scale(x)
    sx = (2.0 * y - 1.0)[:, None] * xs
    t0 = time.perf_counter()
    b, n_lp, n_rows = _binomial_lp(sx)
    _note(progress, "separation LP (%s): %d LPs on at most %d of %d rows, %.2f s", label, n_lp,
          n_rows, x.shape[0], time.perf_counter() - t0)
    margins = sx @ b
    obj = float(margins.sum())
    pos = margins > _MARGIN_TOL
    separated = obj > _OBJ_TOL * max(1, x.shape[0]) and bool(pos.any())
    direction = b / scale if separated else np.zeros(x.shape[1])
    sides = sorted({int(v) for v in y[pos]}) if separated else []
    return SeparationCheck(
        separated=separated,
        objective=obj if separated else 0.0,
        classes=tuple(classes[s] for s in sides),
        units=_units_of(b, terms) if separated else (),
        n_rows_separated=int(pos.sum()) if separated else 0,
        direction=direction,
        label=label,
    )


def check_multinomial(
    x: np.ndarray, y: np.ndarray, *, terms: Sequence[str], classes: Sequence[str],
    progress: Callable[[str], None] | None = None,
) -> SeparationCheck:
    """Konis' LP for a multinomial design (reference parametrization, class 0 baseline).

    Two exact phases, each logged (:mod:`logging`, logger ``glminterp.refit.separation``):

    1. One-vs-rest: a binomial LP per class (``N`` constraints, ``q`` variables). A class that is
       separated from the rest gives a feasible multinomial direction with a positive objective
       (``d_k = b``, or ``d_j = -b`` for every ``j`` when ``k`` is the baseline), which proves
       separation. Accurate heads are usually separated this way.
    2. Otherwise the full LP, by constraint generation: the LP on a subset of the
       ``N (K - 1)`` constraints (the objective always sums all of them) is a relaxation; the
       constraints its solution violates are added and it is solved again. A solution that
       violates none is optimal for the full LP, so the answer is the full LP's, with LPs a
       fraction of its size.

    Parameters
    ----------
    x : ndarray, shape (N, q)
        Design matrix including the intercept column (column 0).
    y : ndarray of int, shape (N,)
        Class indices ``0..K-1``.
    terms : sequence of str
        Names of the ``q`` columns.
    classes : sequence of str
        The ``K`` class names.
    progress : callable, optional
        Called with a one-line description after every LP (e.g. to update a progress bar).

    Returns
    -------
    SeparationCheck
        ``direction`` has shape ``(q, K - 1)``; ``classes`` lists the classes that have rows
        with a strictly positive margin.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y).astype(np.int64)
    k = len(classes)
    n, q = x.shape
    if y.shape != (n,) or y.min() < 0 or y.max() >= k:
        raise ValueError(f"y must hold class indices 0..{k - 1}, one per row of x.")
    xs, scale = _scale(x)
    t0 = time.perf_counter()
    d = _one_vs_rest(xs, y, k, progress)
    _note(progress, "separation LP, one-vs-rest phase (%d classes): %s in %.2f s", k,
          "separated" if d is not None else "no class separated", time.perf_counter() - t0)
    if d is None:
        t0 = time.perf_counter()
        d, n_lp, n_rows = _full_lp(xs, y, k, progress)
        _note(progress, "separation LP, full phase: %d LPs, %d of %d constraints, %.2f s",
              n_lp, n_rows, n * (k - 1), time.perf_counter() - t0)
    return _multinomial_result(xs, y, d, scale, terms, classes)


def _margins(xs: np.ndarray, y: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``(N, K)`` margins ``x_n'(d_{y_n} - d_k)`` (zero at ``k = y_n``), ``d`` is ``(q, K-1)``."""
    s = np.column_stack([np.zeros(xs.shape[0]), xs @ d])
    return s[np.arange(xs.shape[0]), y][:, None] - s


def _one_vs_rest(xs: np.ndarray, y: np.ndarray, k: int, progress=None) -> np.ndarray | None:
    """A multinomial separating direction from a class separated from the rest, or None."""
    n, q = xs.shape
    for j in range(k):
        sx = np.where(y == j, 1.0, -1.0)[:, None] * xs
        b, _, _ = _binomial_lp(sx)
        m = sx @ b
        _note(progress, "separation LP, one-vs-rest phase: class %d of %d %s", j + 1, k,
              "separated" if m.sum() > _OBJ_TOL * max(1, n) else "overlaps")
        if m.sum() > _OBJ_TOL * max(1, n) and (m > _MARGIN_TOL).any():
            d = np.zeros((q, k - 1))
            if j == 0:
                d[:] = -b[:, None]
            else:
                d[:, j - 1] = b
            return d
    return None


def _binomial_lp(sx: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Konis' binomial LP on rows ``s_n x_n`` by row generation; (direction, LPs, rows).

    The LP on a subset of rows, with the objective summed over all rows, is a relaxation;
    rows its solution violates are added until none is, and then the solution is optimal for
    the LP on every row. The start is the rows least well fitted by a least-squares direction.
    """
    n, q = sx.shape
    c = -sx.sum(axis=0)
    if n <= _MIN_SUBSET:
        return _solve(c, -sx, q).x, 1, n
    # least-squares direction of the signs: x b ~ s, i.e. the rows' margins sx b ~ 1
    b_ls = np.linalg.lstsq(sx, np.ones(n), rcond=None)[0]
    have = np.zeros(n, dtype=bool)
    have[np.argsort(sx @ b_ls, kind="stable")[: max(_MIN_SUBSET, 4 * q)]] = True
    n_lp = 0
    while True:
        b = _solve(c, -sx[have], q).x
        n_lp += 1
        new = (sx @ b < -_VIOLATION_TOL) & ~have
        if not new.any():
            return b, n_lp, int(have.sum())
        have |= new


def _constraints(xs: np.ndarray, y: np.ndarray, obs: np.ndarray, other: np.ndarray, k: int):
    """Sparse rows ``x_n'(d_{y_n} - d_k)`` over vec(D) (class-major, ``d_0`` dropped)."""
    q = xs.shape[1]
    rows = np.arange(obs.size)
    parts_r, parts_c, parts_v = [], [], []
    for sign, cls in ((1.0, y[obs]), (-1.0, other)):
        m = cls > 0
        parts_r.append(np.repeat(rows[m], q))
        parts_c.append((((cls[m] - 1) * q)[:, None] + np.arange(q)[None, :]).ravel())
        parts_v.append((sign * xs[obs[m]]).ravel())
    return sps.csr_matrix(
        (np.concatenate(parts_v), (np.concatenate(parts_r), np.concatenate(parts_c))),
        shape=(obs.size, q * (k - 1)),
    )


def _full_lp(xs: np.ndarray, y: np.ndarray, k: int, progress=None) -> tuple[np.ndarray, int, int]:
    """Konis' multinomial LP by constraint generation; (direction (q, K-1), LPs, constraints)."""
    n, q = xs.shape
    # Objective: sum over n, k != y_n of x_n'(d_{y_n} - d_k) = sum_j d_j'(K S_j - S), S_j the
    # column sums over class j; exact, whatever subset of constraints is in the LP.
    sj = np.stack([xs[y == j].sum(axis=0) for j in range(k)])
    c = -(k * sj - sj.sum(axis=0))[1:].ravel()
    # Start: each row against its strongest rival under a least-squares score.
    onehot = np.eye(k)[y]
    score = xs @ np.linalg.lstsq(xs, onehot - onehot.mean(axis=0), rcond=None)[0]
    score[np.arange(n), y] = -np.inf
    have = np.zeros((n, k), dtype=bool)
    have[np.arange(n), score.argmax(axis=1)] = True
    n_lp = 0
    while True:
        obs, other = np.nonzero(have)
        _note(progress, "separation LP, full phase: LP %d on %d constraints x %d variables",
              n_lp + 1, obs.size, q * (k - 1))
        res = _solve(c, -_constraints(xs, y, obs, other, k), q * (k - 1), _FULL_LP_METHOD)
        n_lp += 1
        d = res.x.reshape(k - 1, q).T
        marg = _margins(xs, y, d)
        marg[have] = np.inf
        marg[np.arange(n), y] = np.inf
        worst = marg.argmin(axis=1)
        new = marg[np.arange(n), worst] < -_VIOLATION_TOL
        _note(progress, "separation LP, full phase: LP %d solved, %d rows violate it", n_lp,
              int(new.sum()))
        if not new.any():
            return d, n_lp, int(obs.size)
        have[np.nonzero(new)[0], worst[new]] = True


def _multinomial_result(xs, y, d, scale, terms, classes) -> SeparationCheck:
    n, q = xs.shape
    k = len(classes)
    marg = _margins(xs, y, d)
    marg[np.arange(n), y] = 0.0
    obj = float(marg.sum())
    pos = marg > _MARGIN_TOL
    separated = obj > _OBJ_TOL * max(1, n) and bool(pos.any())
    if not separated:
        return SeparationCheck(False, 0.0, (), (), 0, np.zeros((q, k - 1)), "multinomial")
    sep_rows = np.nonzero(pos.any(axis=1))[0]
    sep_classes = sorted(set(y[sep_rows].tolist()))
    return SeparationCheck(
        separated=True,
        objective=obj,
        classes=tuple(classes[c] for c in sep_classes),
        units=_units_of(d, terms),
        n_rows_separated=int(sep_rows.size),
        direction=d / scale[:, None],
        label="multinomial",
    )


# A dual certificate decides "no separation" when its rigorous bound on the LP's optimum is
# below the LP's own threshold (_OBJ_TOL per row): the exact LP's answer is then "no
# separation". (HiGHS solves the LP only to its tolerances, ~1e-7 per constraint, so the
# certificate is the more exact of the two.)
_CERTIFY_FRACTION = 1.0


def _certified_bound(xs: np.ndarray, w: np.ndarray, lam_min: float) -> float:
    """``(||xs' w||_1 + rounding allowance) / lam_min``, the sum in extended precision.

    The allowance is the worst-case rounding of the sums (``gamma_N`` times the sum of
    ``|terms|``, Higham 2002 section 3.1) at the precision used, so the bound is rigorous.
    """
    if not (np.isfinite(lam_min) and lam_min > 0):
        return float("inf")
    ld = np.longdouble
    r = xs.astype(ld).T @ w.astype(ld)
    n = xs.shape[0]
    gamma = 2.0 * (n + w.shape[-1] if w.ndim > 1 else n + 1) * float(np.finfo(ld).eps)
    terms = float((np.abs(xs).T @ np.abs(w)).sum()) * (1.0 + 1e-10)
    return (float(np.abs(r).sum()) + gamma * terms) / lam_min


def lp_bound_multinomial(x: np.ndarray, y: np.ndarray, probs: np.ndarray) -> float:
    """A rigorous upper bound on the optimum of :func:`check_multinomial`'s LP, from a fit.

    For any weights ``lam_nk > 0`` (``k != y_n``) and any feasible ``D`` of the LP (margins
    ``m_nk = x_n'(d_{y_n} - d_k) >= 0``, ``-1 <= D <= 1``)::

        lam_min * sum m_nk  <=  sum lam_nk m_nk  =  <A' lam, D>  <=  ||A' lam||_1

    (``A`` the LP's constraint rows), so the optimum is at most ``||A' lam||_1 / lam_min``
    (LP duality; Stiemke's lemma in the limit). With the fitted probabilities as weights,
    ``A' lam`` is the score of the fit (in the LP's scaled units): a fit with a vanishing
    score and no vanishing probability bounds the optimum near 0, far below the threshold at
    which the LP reports separation; near separation some probability vanishes and the bound
    is useless (the LP is run instead).

    Parameters
    ----------
    x : ndarray, shape (N, q)
        Design with the intercept column.
    y : ndarray of int, shape (N,)
        Class indices.
    probs : ndarray, shape (N, K)
        Fitted probabilities of every class (class 0 first).
    """
    xs, _ = _scale(np.asarray(x, dtype=np.float64))
    n = xs.shape[0]
    lam = np.array(probs, dtype=np.float64)
    rows = np.arange(n)
    lam[rows, y] = np.inf
    lam_min = float(lam.min())
    lam[rows, y] = 0.0
    # coefficient of d_j in sum_k lam_nk m_nk: sum_k lam_nk for j = y_n, -lam_nj otherwise
    w = -lam.astype(np.longdouble)
    w[rows, y] = lam.astype(np.longdouble).sum(axis=1)
    return _certified_bound(xs, w[:, 1:], lam_min)


def lp_bound_binomial(x: np.ndarray, y: np.ndarray, mu: np.ndarray) -> float:
    """The bound of :func:`lp_bound_multinomial` for :func:`check_binomial`'s LP.

    The weights are the fitted probabilities of the other outcome, ``|y_n - mu_n|``.
    """
    xs, _ = _scale(np.asarray(x, dtype=np.float64))
    y = np.asarray(y, dtype=np.float64)
    lam = np.where(y > 0.5, 1.0 - np.asarray(mu, dtype=np.float64), mu)
    return _certified_bound(xs, (2.0 * y - 1.0) * lam, float(lam.min()))


def certifies_overlap(bound: float, n_rows: int) -> bool:
    """True if a rigorous LP bound is below the optimum at which the LP reports separation."""
    return bool(bound <= _CERTIFY_FRACTION * _OBJ_TOL * max(1, n_rows))


def advice(split, family: str) -> str:
    """What to do about separation, from where the user is (split, family)."""
    parts = []
    if split != "refit":
        parts.append("refit on held-out rows (split='refit'): training rows are usually separated")
    if family in ("binomial", "ovr"):
        parts.append("remedy='firth' keeps this model and gives finite bias-reduced estimates "
                     "with penalized likelihood-ratio tests and profile intervals")
    elif family == "multinomial":
        parts.append("remedy='firth' keeps this softmax model and gives finite bias-reduced "
                     "estimates (multinomial mean bias reduction, brglm2 brmultinom) with Wald "
                     "inference")
        parts.append("family='ovr' with remedy='firth' fits one bias-reduced binomial model per "
                     "class (one-vs-rest: a different model from the softmax head)")
    parts += [
        "remedy='ridge' keeps the model but shrinks every coefficient toward 0 (penalized "
        "inference, sandwich covariance)",
        "remedy='pca' fits the model on the leading principal components of the units "
        "(reduced-rank inference on unit contrasts)",
        "fewer units, or on_separation='warn' to fit anyway and inspect the (meaningless) "
        "estimates",
    ]
    return "What to do: " + "; ".join(parts) + "."


def raise_if_separated(
    checks: Sequence[SeparationCheck], n_units: int, advice: str | None = None
) -> None:
    """Raise :class:`SeparationError` describing every separated check.

    Parameters
    ----------
    checks : sequence of SeparationCheck
    n_units : int
        Number of units in the design, for the message.
    """
    bad = [c for c in checks if c.separated]
    if not bad:
        return
    classes = sorted({cl for c in bad for cl in c.classes}, key=str)
    units = []
    for c in bad:
        units.extend(u for u in c.units if u not in units)
    parts = [
        f"{c.label}: classes {list(c.classes)} separated on {c.n_rows_separated} rows by a "
        f"direction using {len(c.units)} of {n_units} units (largest: {list(c.units[:5])})"
        for c in bad
    ]
    raise SeparationError(
        "The data are (quasi-)completely separated, so the maximum-likelihood estimate does not "
        "exist (coefficients diverge; statsmodels would return NaN or huge standard errors). "
        + "; ".join(parts)
        + ". "
        + (advice or "Refit on held-out rows (split='refit'), use fewer units, or pass "
           "on_separation='warn' to fit anyway and inspect the (meaningless) estimates."),
        classes=classes,
        n_units=len(units),
        units=units,
        checks=bad,
    )
