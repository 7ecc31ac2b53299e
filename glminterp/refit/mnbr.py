"""Mean bias reduction for the baseline-category (multinomial) logit: finite under separation.

The estimator is Kosmidis & Firth (2011, Biometrika 98(3)), R ``brglm2::brmultinom(type =
"AS_mean")``: the root of the mean bias-reducing adjusted score ``U(b) + A(b)``. For the
multinomial logit (a canonical exponential family) this is the maximiser of the penalised
log-likelihood ``l*(b) = l(b) + 1/2 log det I(b)`` (Jeffreys prior); with K = 2 it is binomial
Firth (:mod:`glminterp.firth`).

The adjustment, derived for the stacked Fisher information ``I = sum_n D_n (x) x_n x_n'`` with
``D_n = diag(p_n) - p_n p_n'`` (classes 1..K-1), is ``A = 1/2 X1' (h - P H)``: with
``V_n[j, l] = x_n' (I^-1)_{jl} x_n`` (a ``(K-1) x (K-1)`` matrix per row) and ``e_0 = 0``,

    h_nk = p_nk (e_k - p_n)' V_n (e_k - p_n),   k = 0..K-1,     H_n = sum_k h_nk,

which is ``1/2 tr(I^-1 dI/db)`` by the chain rule through ``eta`` (``sum_n H_n = dim b``, the
multinomial analogue of Firth's hat values). So ``U + A`` is the ordinary score of a multinomial
with *pseudo-counts* ``y_nk + h_nk / 2`` and totals ``1 + H_n / 2`` (all counts positive: no
separation), Kosmidis & Firth's pseudo-data representation. Each iteration here

1. at the current ``b``: builds ``I`` (the engine's block build, one ``syrk`` per symmetric class
   pair), its Cholesky factor (``log det I`` for ``l*``), ``I^-1`` and ``V_n`` (one triangular
   product per symmetric class pair, :mod:`glminterp.refit.mnbr_hats`: the flops of one more
   information matrix), hence ``h`` and the exact gradient ``U + A``;
2. stops when the Fisher-metric step ``I^-1 (U + A)`` is below ``tol`` (brglm2's criterion);
3. else maximises the pseudo-data log-likelihood with ``h`` held fixed (concave, finite) by
   Newton-CG on Fisher-vector products, preconditioned by the Cholesky factor of step 1, and
   moves toward that maximiser with step halving on ``l*`` (an ascent direction of ``l*``).

Step 3's inner solves are cheap (products, not matrices); near the optimum the direction is the
plain Fisher-metric step, extrapolated by Anderson acceleration over the last steps. A start with
zero slopes (the default) has ``I = D_0 (x) X1'X1``: step 1 is then computed from the Kronecker
structure at the cost of one Gram matrix.

Cost and convergence: one evaluation is the information (``J(J+1)/2 N q^2`` flops, ``q = p + 1``,
``J = K - 1``), its Cholesky factor and inverse (``dim^3``) and the leverage blocks (``J(J+1)/2
N q^2`` again): about twice the MLE fit's own information and triangular inverse. Measured at
N=10k, p=256, K=10 (one BLAS thread, CPU seconds on a shared machine): float64 information
1.07, Cholesky 0.13, inverse 0.45, hat values 0.81 (2.5 s); float32 (centred design,
:mod:`glminterp.refit.mnbr_single`) information 0.46-0.70, Cholesky 0.07-0.36, inverse
0.19-0.32, hat values 0.40 (1.2-1.8 s). From a maximum-likelihood start the first adjusted
score takes the MLE's own information (float64 factor: ``log det``, steps) and covariance
(float32 hat values), the evaluations while far run in float32 (``precision``), and the last,
which decides convergence and gives the standard errors, in float64, hat values included:
float32 hat values move the Fisher step by up to 8e-9 at the estimate (measured there, against
float64), the size of ``tol``. On that benchmark the mixed and the all-float64 iterations
both take 8 evaluations and agree to 5e-10 in the coefficients (2e-7 relative) and 3e-9
relative in the standard errors. The Fisher metric omits the penalty's curvature, so that
iteration converges linearly, at a rate that grows with ``dim(b) / N`` and with separation
(measured: ~0.1 on overlapping data at dim/N = 0.1, 0.85-0.98 on separated data). The map
``b -> b + I^-1 (U + A)`` has Jacobian ``I^-1 H`` (``H`` the Hessian of ``1/2 log det I``);
computed exactly at N=1000, p=25, K=10 (the benchmark's dim/N) its eigenvalues spread over
[-0.16, 0.08], 117 of 234 above 0.05 in modulus (no small subspace to extrapolate in), and the
part that a frozen ``I^-1`` leaves out (the pair term of :mod:`glminterp.refit.mnbr_hessian`)
alone spans [-0.23, 0]. Anderson acceleration gains about two evaluations over the plain
iteration (measured from the MLE at N=2000-3000, p=51-76, K=10: 7-8 evaluations to 1e-8
against 9-10; memory 2-12 makes no difference). Where the
exact Hessian of ``l*`` (:mod:`glminterp.refit.mnbr_hessian`, ``O((N K)^2 dim)``: it couples all
pairs of rows) is affordable, ``method="auto"`` switches to a damped Newton iteration once the
Fisher step is below 0.1 (quadratic convergence: 2-3 steps to ``tol``), and ``method="newton"``
runs Newton from the start (12-27 steps on the separated cases measured). Under separation
``l*`` can have several local maxima (found on simulated separated data: Hessian negative
definite at each, penalized log-likelihoods 11.09 / 11.12 / 11.38); the Fisher-metric iteration
while far follows a path like brglm2's quasi-Fisher iteration, so ``"auto"`` stays in the basin
that iteration picks; ``"newton"`` from the null start agrees on the R fixtures but may reach
another local maximum elsewhere.

Standard errors are ``sqrt(diag(I(b)^-1))`` at the estimate (brglm2's). Layout as
:mod:`glminterp.engine` and statsmodels: ``params`` is ``(p + 1, K - 1)``, intercept first, class
0 the baseline, ``cov`` in Fortran (class-major) order.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve

from glminterp.engine import (
    FisherSingularError,
    add_const,
    inverse_from_cholesky,
    multinomial_fisher,
    multinomial_probs,
    null_start_multinomial,
)
from glminterp.head import reference_to_sum_to_zero_map
from glminterp.refit.mnbr_hats import leverage_blocks, pair_triangles
from glminterp.refit.mnbr_hessian import hessian_flops, penalized_hessian
from glminterp.refit.mnbr_single import SingleDesign, inverse32, solve32
from glminterp.refit.parametrize import sum_to_zero_cov

TYPES: tuple[str, ...] = ("AS_mean",)
_CHUNK_BYTES = 16 * 2**20
_TINY = 1e-200
# method="auto": exact-Hessian Newton while one Hessian costs at most NEWTON_FLOPS (~0.1 s), or
# at most NEWTON_RATIO adjusted scores (Newton takes ~10-30 steps, the Fisher metric 100s)
NEWTON_FLOPS = 2e9
NEWTON_RATIO = 50.0
# precision="auto": float32 evaluations while far, where one evaluation costs over SINGLE_FLOPS
SINGLE_FLOPS = 2e9
_SINGLE_NOISE = 1e-5  # float32 logdet rounding per parameter (l* comparisons)
# float32 -> float64 once the Fisher step is below _SWITCH * tol, or stops shrinking below 1e-3
# (the float32 rounding floor: about 1e-8 measured at N=10k, p=256, K=10 after centring)
_SWITCH = 10.0


# ============================================================================ row-wise pieces
def _lin(x: np.ndarray, beta: np.ndarray) -> np.ndarray:
    return x @ beta[1:] + beta[0]


def _tlin(x: np.ndarray, r: np.ndarray) -> np.ndarray:
    return np.vstack([r.sum(axis=0, keepdims=True), x.T @ r])


def hat_quantities_chunk(x: np.ndarray, probs: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """Multinomial hat values ``h_nk`` (k = 0..K-1) of one chunk of rows.

    Parameters
    ----------
    x : ndarray, shape (n, p)
        Design without intercept.
    probs : ndarray, shape (n, J)
        Probabilities of classes 1..J (J = K - 1).
    inv : ndarray, shape (J q, J q)
        Inverse Fisher information (q = p + 1), Fortran (class-major) order.

    Returns
    -------
    ndarray, shape (n, K)
        ``h_nk = p_nk (e_k - p_n)' V_n (e_k - p_n)`` with ``V_n[j, l] = x1_n' inv_jl x1_n``.
    """
    return _hats_x1(add_const(x), probs, inv)


def _hats_x1(x1: np.ndarray, probs: np.ndarray, inv: np.ndarray,
             triangles: list | None = None) -> np.ndarray:
    """:func:`hat_quantities_chunk` from ``x1 = [1, x]``; ``V`` in the precision of ``inv``
    (symmetric class pairs by triangular products, :mod:`glminterp.refit.mnbr_hats`)."""
    return hats_from_blocks(leverage_blocks(x1, inv, probs.shape[1], triangles), probs)


def hats_from_blocks(v: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Hat values ``h_nk = p_nk (e_k - p_n)' V_n (e_k - p_n)`` from the blocks ``V_n``."""
    n, j = probs.shape
    v = v.astype(np.float64, copy=False)
    vp = np.einsum("nkl,nl->nk", v, probs)
    pvp = np.einsum("nk,nk->n", vp, probs)
    out = np.empty((n, j + 1))
    out[:, 0] = (1.0 - probs.sum(axis=1)) * pvp
    out[:, 1:] = probs * (np.einsum("nkk->nk", v) - 2.0 * vp + pvp[:, None])
    return np.maximum(out, 0.0)  # rounding can leave -1e-17 where p_nk underflows


def _loglike(x: np.ndarray, ystar: np.ndarray, tot: np.ndarray | None, beta: np.ndarray):
    """``sum_n [sum_k ystar_nk eta_nk - tot_n lse_n]``, its gradient and the probabilities.

    ``ystar`` holds classes 1..J (one-hot responses, or pseudo-counts); ``tot = None`` means 1.
    """
    probs, lse = multinomial_probs(x, beta)
    # Probabilities below 1e-200 (far-separated rows) are 0 to rounding in every sum here, and
    # as subnormal numbers downstream they slow LAPACK's Cholesky and inverse a hundredfold.
    probs[probs < _TINY] = 0.0
    eta = _lin(x, beta)
    val = float(np.sum(ystar * eta) - (np.sum(lse) if tot is None else tot @ lse))
    resid = ystar - (probs if tot is None else probs * tot[:, None])
    return val, _tlin(x, resid), probs


def _hvp(x: np.ndarray, probs: np.ndarray, tot: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Fisher-vector product of the pseudo-data log-likelihood (weights ``tot``)."""
    u = probs * _lin(x, v)
    u -= probs * u.sum(axis=1, keepdims=True)
    return _tlin(x, u * tot[:, None])


# ============================================================================ one evaluation
@dataclass
class _Point:
    """Everything step 1 needs at one ``beta``; ``solve`` applies ``I^-1``."""

    beta: np.ndarray
    probs: np.ndarray
    llf: float
    score: np.ndarray
    logdet: float
    chol: tuple | None = None  # general point: Cholesky of I
    fisher: np.ndarray | None = None
    kron: tuple | None = None  # zero-slope point: (D0^-1, G^-1, leverages)
    inverse: np.ndarray | None = field(default=None, repr=False)
    single: SingleDesign | None = None  # float32 point: chol, inverse in centred coordinates
    noise: float = 0.0  # rounding of logdet (float32 points)

    @property
    def pll(self) -> float:
        return self.llf + 0.5 * self.logdet

    def solve(self, r: np.ndarray) -> np.ndarray:
        if self.kron is not None:
            d_inv, g_inv, _ = self.kron
            return g_inv @ r @ d_inv
        q, j = r.shape
        if self.single is not None and self.chol[0].dtype == np.float32:
            rc = self.single.center_score(r).ravel(order="F")
            sc = solve32(self.chol[0], rc)
            return self.single.uncenter_step(sc.reshape(q, j, order="F"))
        return cho_solve(self.chol, r.ravel(order="F"), check_finite=False).reshape(
            q, j, order="F")

    def inverse_fisher(self) -> np.ndarray:
        if self.single is not None:
            raise RuntimeError("a float32 point has no float64 inverse information")
        if self.inverse is None:
            if self.kron is not None:
                d_inv, g_inv, _ = self.kron
                self.inverse = np.kron(d_inv, g_inv)
            else:
                self.inverse = inverse_from_cholesky(self.chol[0])
        return self.inverse

    def fisher_matrix(self) -> np.ndarray:
        if self.single is not None:
            raise RuntimeError("a float32 point has no float64 information")
        if self.fisher is None:  # zero-slope point: rebuild from the Kronecker factors
            d_inv, g_inv, _ = self.kron
            self.fisher = np.kron(np.linalg.inv(d_inv), np.linalg.inv(g_inv))
        return self.fisher

    def hats(self, x: np.ndarray, chunk: int) -> np.ndarray:
        """``h`` (N x K) at this point."""
        if self.kron is not None:  # V_n = D0^-1 * leverage_n
            d_inv, _, lev = self.kron
            p = self.probs[0]
            e = np.vstack([np.zeros_like(p), np.eye(len(p))]) - p  # rows e_k - p
            quad = np.einsum("kj,jl,kl->k", e, d_inv, e)
            pk = np.r_[1.0 - p.sum(), p]
            return lev[:, None] * (pk * quad)[None, :]
        if self.single is not None:  # centred float32 design (the same leverages)
            x1, inv = self.single.x1c, self.inverse
        else:
            x1, inv = None, self.inverse_fisher()
        tri = pair_triangles(inv, inv.shape[0] // self.probs.shape[1], self.probs.shape[1])
        rows = max(chunk, 1024)
        return np.vstack([
            _hats_x1(add_const(x[i : i + rows]) if x1 is None else x1[i : i + rows],
                     self.probs[i : i + rows], inv, tri)
            for i in range(0, x.shape[0], rows)
        ])


def _singular(err: Exception) -> FisherSingularError:
    return FisherSingularError(
        "The Fisher information is not positive definite: the design is rank deficient "
        "(collinear or constant units). Bias reduction cures separation, not collinearity: drop "
        "dependent units first."
    )


def _evaluate(x, onehot, beta, chunk, fisher: np.ndarray | None = None) -> _Point:
    """General point: log-likelihood, score, information (unless given) and its Cholesky."""
    llf, score, probs = _loglike(x, onehot, None, beta)
    if fisher is None:  # the engine's block build (symmetric blocks, no cancellation)
        fisher = multinomial_fisher([(x, probs)])
    try:
        chol = cho_factor(fisher, lower=False, check_finite=False)
    except LinAlgError as err:
        raise _singular(err) from err
    logdet = 2.0 * float(np.sum(np.log(np.diag(chol[0]))))
    return _Point(beta, probs, llf, score, logdet, chol=chol, fisher=fisher)


def _evaluate_single(design: SingleDesign, x, onehot, beta, chunk, fisher=None) -> _Point:
    """A float32 point (see :mod:`glminterp.refit.mnbr_single`); ``fisher``: a given float64
    information at ``beta`` (e.g. the MLE's), then not rebuilt."""
    llf, score, probs = _loglike(x, onehot, None, beta)
    f32 = (design.fisher(probs, chunk) if fisher is None
           else design.center_fisher(fisher).astype(np.float32, order="F"))
    try:
        c = cho_factor(f32, lower=False, overwrite_a=True, check_finite=False)[0]
        d = np.diag(c).astype(np.float64)
        if not np.all(d > 0):
            raise LinAlgError("float32 Cholesky factor with a zero pivot")
        inv = inverse32(c)  # upper triangle: all the hat values read
    except LinAlgError:  # float32 too coarse here: this point in float64
        return _evaluate(x, onehot, beta, chunk, fisher=fisher)
    logdet = 2.0 * float(np.sum(np.log(d)))
    return _Point(beta, probs, llf, score, logdet, chol=(c, False), inverse=inv,
                  single=design, noise=_SINGLE_NOISE * beta.size)


def _point(x, onehot, beta, chunk, trace: dict) -> _Point:
    """A new point, in float32 while ``trace["single"]`` holds the design, else float64."""
    trace["n_fisher"] += 1
    if trace.get("single") is not None:
        pt = _evaluate_single(trace["single"], x, onehot, beta, chunk)
        trace["n_single"] += pt.single is not None
        return pt
    return _evaluate(x, onehot, beta, chunk)


def _floor(*pts: _Point) -> float:
    """Tolerance of a comparison of ``l*`` values: rounding at the optimum, float32 logdets."""
    return max([1e-12 * max(1.0, abs(pts[0].pll))] + [p.noise for p in pts])


def _evaluate_zero_slopes(x, onehot, beta) -> _Point:
    """Zero slopes: every row has the same ``p``, so ``I = D0 (x) G`` with ``G = X1'X1``."""
    llf, score, probs = _loglike(x, onehot, None, beta)
    p = probs[0]
    d0 = np.diag(p) - np.outer(p, p)
    x1 = add_const(x)
    g = x1.T @ x1
    try:
        cg = cho_factor(g, lower=False, check_finite=False)
        cd = cho_factor(d0, lower=False, check_finite=False)
    except LinAlgError as err:
        raise _singular(err) from err
    g_inv = inverse_from_cholesky(cg[0].copy())
    d_inv = inverse_from_cholesky(cd[0].copy())
    lev = np.einsum("ni,ij,nj->n", x1, g_inv, x1)
    q, j = beta.shape
    logdet = 2.0 * (j * np.sum(np.log(np.diag(cg[0]))) + q * np.sum(np.log(np.diag(cd[0]))))
    return _Point(beta, probs, llf, score, float(logdet), kron=(d_inv, g_inv, lev))


# ============================================================================ inner solve
def pcg(matvec, b, precond, rtol: float, max_iter: int) -> tuple[np.ndarray, int]:
    """Preconditioned conjugate gradients for ``M z = b`` (``b`` any array shape); (z, iterations)."""
    z = np.zeros_like(b)
    r = b.copy()
    s = precond(r)
    d = s.copy()
    rs = float(np.sum(r * s))
    bnorm = float(np.sqrt(np.sum(b * b)))
    for it in range(1, max_iter + 1):
        md = matvec(d)
        alpha = rs / float(np.sum(d * md))
        z += alpha * d
        r -= alpha * md
        if float(np.sqrt(np.sum(r * r))) <= rtol * bnorm:
            return z, it
        s = precond(r)
        rs_new = float(np.sum(r * s))
        d = s + (rs_new / rs) * d
        rs = rs_new
    return z, max_iter


def _pseudo_data_optimum(x, ystar, tot, beta, precond, tol, trace: dict) -> np.ndarray:
    """Maximiser of the pseudo-data log-likelihood (``h`` fixed): Newton-CG, Armijo halving."""
    val, grad, probs = _loglike(x, ystar, tot, beta)
    for _ in range(50):
        gmax = float(np.max(np.abs(grad)))
        step, n_cg = pcg(lambda v, p=probs: _hvp(x, p, tot, v), grad, precond,
                          min(1e-2, max(1e-10, gmax * 1e-4)), 200)
        trace["n_hvp"] += n_cg
        if float(np.max(np.abs(step))) <= tol:
            return beta + step
        slope, t = float(np.sum(grad * step)), 1.0
        for _ in range(40):
            cand = _loglike(x, ystar, tot, beta + t * step)
            if cand[0] >= val + 1e-4 * t * slope:
                break
            t *= 0.5
        else:
            return beta
        beta = beta + t * step
        val, grad, probs = cand
    return beta


# ============================================================================ outer loop
def _adjusted_score(x: np.ndarray, pt: _Point, h: np.ndarray) -> np.ndarray:
    """``U + A`` with ``A = 1/2 X1' (h - P H)`` (classes 1..J)."""
    tot_h = h.sum(axis=1)
    return pt.score + 0.5 * _tlin(x, h[:, 1:] - pt.probs * tot_h[:, None])


def _move(x, onehot, pt: _Point, target: np.ndarray, chunk: int, trace: dict) -> _Point | None:
    """Step halving on ``l*`` from ``pt`` toward ``target``; None if no ascent is found."""
    step = target - pt.beta
    t = 1.0
    for _ in range(30):
        try:
            cand = _point(x, onehot, pt.beta + t * step, chunk, trace)
            if np.isfinite(cand.pll) and cand.pll >= pt.pll - _floor(pt, cand):
                return cand
        except FisherSingularError:
            pass  # overflowing step: probabilities saturate; shorten
        t *= 0.5
    return None


_FAR = 0.1  # Fisher-metric steps above this are taken by the pseudo-data solve (globalisation)
_DEPTH = 5  # Anderson acceleration: secant pairs kept
_MIN_HIST = 2  # points before the first extrapolation


def _direction(x, onehot, pt: _Point, h, step, smax, tol, trace) -> np.ndarray:
    """Far away, the maximiser of the pseudo-data likelihood; close by, the Fisher step."""
    if smax <= _FAR:
        return step
    ystar = onehot + 0.5 * h[:, 1:]
    tot = 1.0 + 0.5 * h.sum(axis=1)
    inner_tol = max(0.1 * tol, 1e-3 * smax)
    return _pseudo_data_optimum(x, ystar, tot, pt.beta, pt.solve, inner_tol, trace) - pt.beta


def _anderson(hist: list, beta: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Anderson (type II) extrapolation of the fixed-point map ``b -> b + f(b)``."""
    if len(hist) < 2:
        return beta + f
    b = np.array([h[0].ravel() for h in hist])
    g = np.array([h[1].ravel() for h in hist])
    db, dg = np.diff(b, axis=0).T, np.diff(g, axis=0).T
    gamma = np.linalg.lstsq(dg, f.ravel(), rcond=None)[0]
    return beta + f - ((db + dg) @ gamma).reshape(beta.shape)


def _examine(x, pt: _Point, tol: float, max_iter: int, chunk: int, trace: dict):
    """The adjusted score and Fisher-metric step at ``pt``, traced; ``done`` is the verdict.

    Returns ``(hat values, adjusted score, step, max |step|, done)`` with ``done`` True when the
    step is below ``tol``, False when ``max_iter`` is spent, None to go on iterating.
    """
    h = pt.hats(x, chunk)
    grad = _adjusted_score(x, pt, h)
    step = pt.solve(grad)
    smax = float(np.max(np.abs(step)))
    trace["history"].append((pt.pll, smax, float(np.max(np.abs(grad)))))
    if pt.single is not None:  # never stop at a float32 point; switch when close or stalled
        prev = trace.get("last_single")
        if smax <= _SWITCH * tol or (prev is not None and smax >= prev and smax < 1e-3):
            trace["single"] = None
        trace["last_single"] = smax
        return h, grad, step, smax, (False if trace["n_iter"] >= max_iter else None)
    if smax <= tol:
        return h, grad, step, smax, True
    if trace["n_iter"] >= max_iter:
        return h, grad, step, smax, False
    return h, grad, step, smax, None


def _iterate(x, onehot, pt: _Point, tol: float, max_iter: int, chunk: int, trace: dict,
             polish: bool = False):
    """Outer iterations; returns (final point, its Fisher-metric step, adjusted score, converged).

    The Fisher-metric iteration converges linearly at a rate of about dim(b) / N (the penalty's
    curvature is not in the metric); Anderson acceleration over the last steps shortens it.
    Every move must not lower ``l*`` (else it falls back to step halving along ``f``).
    """
    hist: list = []
    while True:
        h, grad, step, smax, done = _examine(x, pt, tol, max_iter, chunk, trace)
        if done is not None:
            return pt, step, grad, done
        if polish and smax <= _FAR:  # near: Newton's quadratic convergence, in the same basin
            trace["polished_at"] = trace["n_iter"]
            if pt.single is not None:  # Newton's Hessian needs the float64 information
                trace["single"] = None
                pt = _point(x, onehot, pt.beta, chunk, trace)
            return _newton_iterate(x, onehot, pt, tol, max_iter, chunk, trace)
        trace["n_iter"] += 1
        f = _direction(x, onehot, pt, h, step, smax, tol, trace)
        hist = [] if smax > _FAR else [*hist, (pt.beta, f)][-(_DEPTH + 1):]
        new = None
        if len(hist) >= _MIN_HIST:
            try:
                new = _point(x, onehot, _anderson(hist, pt.beta, f), chunk, trace)
            except FisherSingularError:
                new = None
            if new is not None and not new.pll >= pt.pll - _floor(pt, new):
                new, hist = None, []
        if new is None:
            new = _move(x, onehot, pt, pt.beta + f, chunk, trace)
        if new is None:  # no ascent left at rounding level
            return pt, step, grad, smax <= 1e-6
        pt = new


def _newton_iterate(x, onehot, pt: _Point, tol: float, max_iter: int, chunk: int, trace: dict):
    """Damped Newton on ``l*`` with its exact Hessian; returns as :func:`_iterate`.

    Quadratic near the optimum. Each step solves ``(-H + mu I) d = U + A`` (Levenberg shift in
    the Fisher metric, ``mu = 0`` where ``-H`` is positive definite) and is accepted by an
    Armijo test on ``l*`` (monotone ascent), so it converges from any start.
    """
    mu = 0.0
    while True:
        _, grad, step, smax, done = _examine(x, pt, tol, max_iter, chunk, trace)
        if done is not None:
            return pt, step, grad, done
        trace["n_iter"] += 1
        new, mu = _newton_move(x, onehot, pt, grad, mu, chunk, trace)
        if new is None:  # no ascent left at rounding level
            return pt, step, grad, smax <= 1e-6
        pt = new


def _newton_move(x, onehot, pt: _Point, grad, mu: float, chunk: int, trace: dict):
    """One accepted Newton step from ``pt`` (a new point and the next shift), or ``(None, mu)``."""
    fisher = pt.fisher_matrix()
    hess = penalized_hessian(x, pt.probs, fisher, pt.inverse_fisher())
    trace["n_hessian"] += 1
    g = grad.ravel(order="F")
    floor = 1e-12 * max(1.0, abs(pt.pll))  # l* is flat to rounding at the optimum
    for _ in range(14):
        try:
            c = cho_factor(mu * fisher - hess, lower=False, check_finite=False)
        except LinAlgError:  # -H not positive definite here: shift toward the Fisher step
            mu = max(10.0 * mu, 1e-3)
            continue
        d = cho_solve(c, g, check_finite=False).reshape(pt.beta.shape, order="F")
        slope, t = float(g @ d.ravel(order="F")), 1.0
        for _ in range(6):
            try:
                cand = _evaluate(x, onehot, pt.beta + t * d, chunk)
                trace["n_fisher"] += 1
                if np.isfinite(cand.pll) and cand.pll >= pt.pll + 1e-4 * t * slope - floor:
                    return cand, (0.0 if mu < 1e-2 else 0.1 * mu)
            except FisherSingularError:
                pass  # overflowing step: probabilities saturate; shorten
            t *= 0.5
        mu = max(10.0 * mu, 1e-3)
    return None, mu


# ============================================================================ results
@dataclass(frozen=True)
class MultinomialBRResult:
    """Mean bias-reduced multinomial logit fit (brglm2 ``brmultinom(type = "AS_mean")``).

    Attributes
    ----------
    params : ndarray, shape (p + 1, K - 1)
        Reference parametrization (class 0 the baseline), intercept in row 0.
    cov : ndarray, shape ((p + 1)(K - 1), (p + 1)(K - 1))
        Inverse Fisher information at the estimate, ``params`` flattened in Fortran order.
    fisher : ndarray
        The Fisher information ``cov`` inverts.
    pll : float
        Penalised log-likelihood ``l + 1/2 log det I`` at ``params``.
    llf : float
        Log-likelihood at ``params``.
    converged : bool
    n_iter : int
        Outer iterations (each: one information matrix, its inverse and the hat quantities).
    step_norm : float
        Largest component of the last Fisher-metric step ``I^-1 (U + A)`` (criterion: ``<= tol``).
    score_norm : float
        Largest component of the adjusted score ``U + A`` there.
    history : tuple of (pll, step_norm, score_norm)
        One entry per outer evaluation.
    n_fisher, n_hvp : int
        Information matrices built and Fisher-vector products used.
    method : str
        ``"newton"`` (exact Hessian), ``"fisher"`` (Fisher metric, accelerated) or
        ``"fisher+newton"`` (Fisher metric while far, then Newton).
    n_hessian : int
        Exact Hessians computed (``method="newton"``).
    n_single : int
        Evaluations in float32 (``precision="mixed"``), included in ``n_fisher``.
    tol : float
    type : str
        ``"AS_mean"``.
    n_obs, n_classes : int
    seconds : float

    Notes
    -----
    ``cov``, ``fisher`` and the ``log det`` in ``pll`` are evaluated at the last iterate;
    ``params`` add its final step (largest component ``step_norm <= tol``), as in
    :class:`glminterp.engine.EngineResult`.
    """

    params: np.ndarray
    cov: np.ndarray = field(repr=False)
    fisher: np.ndarray = field(repr=False)
    pll: float
    llf: float
    converged: bool
    n_iter: int
    step_norm: float
    score_norm: float
    history: tuple = field(repr=False)
    n_fisher: int
    n_hvp: int
    tol: float
    type: str
    n_obs: int
    n_classes: int
    seconds: float
    method: str = "fisher"
    n_hessian: int = 0
    n_single: int = 0

    def __post_init__(self):
        for a in (self.params, self.cov, self.fisher):
            a.flags.writeable = False

    @property
    def bse(self) -> np.ndarray:
        """Wald standard errors ``sqrt(diag(I^-1))``, shape of ``params``."""
        return np.sqrt(np.diag(self.cov)).reshape(self.params.shape, order="F")

    def params_sum_to_zero(self) -> np.ndarray:
        """Centred coefficients ``(p + 1, K)``: ``gamma[:, k] = w_k - mean_j w_j``."""
        return self.params @ reference_to_sum_to_zero_map(self.n_classes).T

    def cov_sum_to_zero(self) -> np.ndarray:
        """Covariance of ``params_sum_to_zero()`` flattened in Fortran order (rank ``(p+1)(K-1)``)."""
        return sum_to_zero_cov(self.cov, self.n_classes, self.params.shape[0])

    def bse_sum_to_zero(self) -> np.ndarray:
        """Standard errors of the centred coefficients, shape ``(p + 1, K)``."""
        se = np.sqrt(np.clip(np.diag(self.cov_sum_to_zero()), 0.0, None))
        return se.reshape((self.params.shape[0], self.n_classes), order="F")


# ============================================================================ public entry
def _check_inputs(x, codes, n_classes, start, tol, max_iter, type):
    if type not in TYPES:
        raise ValueError(f"type={type!r} is not available; use one of {TYPES}.")
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"x must be 2-D (n_obs, n_units); got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError("x contains NaN or infinite values; drop or impute those rows first.")
    k = int(n_classes)
    if k < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}.")
    c = np.asarray(codes)
    if c.ndim != 1 or c.shape[0] != arr.shape[0]:
        raise ValueError(f"codes must be 1-D with one entry per row of x ({arr.shape[0]}); "
                         f"got shape {c.shape}.")
    if not np.issubdtype(c.dtype, np.integer) or c.min() < 0 or c.max() >= k:
        raise ValueError(f"codes must be integers in 0..{k - 1} (0 = baseline); encode labels "
                         "with glminterp.engine.encode_classes.")
    if not (tol > 0 and int(max_iter) >= 1):
        raise ValueError(f"tol must be > 0 and max_iter >= 1; got tol={tol}, max_iter={max_iter}.")
    q = arr.shape[1] + 1
    if start is None:
        b0 = null_start_multinomial(c.astype(np.int64), k, q)
    else:
        b0 = np.asarray(start, dtype=np.float64)
        if b0.size != q * (k - 1) or not np.all(np.isfinite(b0)):
            raise ValueError(f"start must hold (p+1)*(K-1) = {q * (k - 1)} finite values; "
                             f"got {b0.size}.")
        b0 = b0.reshape(q, k - 1, order="F").copy()
    return np.ascontiguousarray(arr), c.astype(np.int64), k, b0


def fit_multinomial_br(
    x,
    codes,
    n_classes: int,
    *,
    start=None,
    tol: float = 1e-8,
    max_iter: int = 100,
    chunk_size: int | None = None,
    type: str = "AS_mean",
    method: str = "auto",
    start_fisher=None,
    start_cov=None,
    precision: str = "auto",
) -> MultinomialBRResult:
    """Mean bias-reduced baseline-category logit (Kosmidis & Firth 2011; brglm2 AS_mean).

    Parameters
    ----------
    x : array-like, shape (n_obs, p)
        Regressors without an intercept column (one is added as the first term).
    codes : array-like of int, shape (n_obs,)
        Class codes ``0..K-1``; 0 is the baseline (see
        :func:`glminterp.engine.encode_classes`).
    n_classes : int
        ``K``.
    start : array-like, optional
        ``(p + 1, K - 1)`` or flattened in Fortran order. Default: the intercept-only fit,
        where the first iteration is computed from the Kronecker structure (cheap).
    tol : float
        Converged when the Fisher-metric step ``I^-1 (U + A)`` has every component below ``tol``.
    max_iter : int
        Outer iterations.
    chunk_size : int, optional
        Rows per chunk for the information matrix and hat quantities (default: ~16 MB).
    type : {"AS_mean"}
        Mean bias reduction (the only type implemented).
    method : {"auto", "newton", "fisher"}
        ``"newton"``: damped Newton with the exact Hessian of ``l*`` (quadratic convergence; one
        Hessian costs ``O((N K)^2 dim)``, see :mod:`glminterp.refit.mnbr_hessian`). ``"fisher"``:
        the Fisher-metric iteration with acceleration (linear convergence, cheap steps).
        ``"auto"``: the Fisher-metric iteration while far (it picks the same local maximum
        as brglm2's quasi-Fisher iteration; ``l*`` can have several under separation), then
        Newton once the Fisher step is below 0.1, where one Hessian costs at most
        ``NEWTON_FLOPS`` or ``NEWTON_RATIO`` adjusted-score evaluations (``method`` of the
        result: ``"fisher+newton"``); else the Fisher-metric iteration throughout.
    start_fisher : ndarray, optional
        The Fisher information at ``start`` (e.g. the maximum-likelihood fit's), which then is
        not rebuilt.
    start_cov : ndarray, optional
        Its inverse (the maximum-likelihood covariance), used with ``start_fisher`` for the
        first adjusted score instead of inverting again.
    precision : {"auto", "double", "mixed"}
        ``"mixed"``: the information matrices and hat values of the iterations far from the
        estimate in float32 (about twice as fast; see :mod:`glminterp.refit.mnbr_single`),
        then float64 from the point where the Fisher step falls below ``10 tol`` or stops
        shrinking (the float32 rounding floor), so the stopping test, the estimate and its
        standard errors are float64 (equal to ``"double"``'s to the tolerance). ``"auto"``:
        ``"mixed"`` for the Fisher-metric iteration from a maximum-likelihood start (with
        ``start_fisher``) where one evaluation costs over ``SINGLE_FLOPS``, else ``"double"``.
        Newton's iteration is always float64.

    Returns
    -------
    MultinomialBRResult
        Finite estimates under complete and quasi-complete separation.

    Raises
    ------
    FisherSingularError
        If the information matrix is singular (collinear or constant units).
    """
    t0 = time.perf_counter()
    arr, c, k, b0 = _check_inputs(x, codes, n_classes, start, tol, max_iter, type)
    method = _choose_method(method, arr.shape[0], k, b0.size)
    q, j = b0.shape
    chunk = (max(64, _CHUNK_BYTES // (8 * q * j)) if chunk_size is None
             else max(1, int(chunk_size)))
    onehot = np.zeros((arr.shape[0], j))
    pos = c > 0
    onehot[np.flatnonzero(pos), c[pos] - 1] = 1.0
    trace = {"n_iter": 0, "n_fisher": 0, "n_hvp": 0, "n_hessian": 0, "n_single": 0,
             "history": [],
             "single": _choose_precision(precision, method, arr, k,
                                         from_mle=start_fisher is not None)}
    pt = _first_point(arr, onehot, b0, chunk, trace, start_fisher, start_cov)
    pt, step, grad, ok = _run(method, arr, onehot, pt, float(tol), int(max_iter), chunk, trace)
    if (start_fisher is not None and trace["n_iter"] == 0) or pt.single is not None:
        trace["single"] = None  # judged on a given information, or stopped in float32
        pt = _point(arr, onehot, pt.beta, chunk, trace)
        pt, step, grad, ok = _run(method, arr, onehot, pt, float(tol), int(max_iter), chunk,
                                  trace)
    if method == "fisher+newton" and "polished_at" not in trace:
        method = "fisher"
    params = pt.beta + step
    llf = _loglike(arr, onehot, None, params)[0]
    if not ok:
        warnings.warn(
            f"multinomial bias reduction did not converge in {trace['n_iter']} iterations "
            f"(last step {np.max(np.abs(step)):.3g} > tol={tol:g}).",
            RuntimeWarning, stacklevel=2)
    return MultinomialBRResult(
        params=params, cov=pt.inverse_fisher(), fisher=pt.fisher_matrix(),
        pll=float(llf + 0.5 * pt.logdet), llf=float(llf), converged=bool(ok),
        n_iter=trace["n_iter"], step_norm=float(np.max(np.abs(step))),
        score_norm=float(np.max(np.abs(grad))), history=tuple(trace["history"]),
        n_fisher=trace["n_fisher"], n_hvp=trace["n_hvp"], tol=float(tol), type=type,
        n_obs=arr.shape[0], n_classes=k, seconds=time.perf_counter() - t0, method=method,
        n_hessian=trace["n_hessian"], n_single=trace["n_single"])


def _first_point(x, onehot, b0, chunk, trace, start_fisher, start_cov) -> _Point:
    """The start: from a given information (and inverse), the Kronecker structure, or built."""
    if start_fisher is None:
        if np.all(b0[1:] == 0.0):
            return _evaluate_zero_slopes(x, onehot, b0)
        return _point(x, onehot, b0, chunk, trace)
    fisher = _checked_fisher(start_fisher, b0.size)
    cov = None if start_cov is None else _checked_fisher(start_cov, b0.size, "start_cov")
    if trace["single"] is not None and cov is None:
        pt = _evaluate_single(trace["single"], x, onehot, b0, chunk, fisher=fisher)
        trace["n_single"] += pt.single is not None
        return pt
    pt = _evaluate(x, onehot, b0, chunk, fisher=fisher)  # float64 factor: logdet, steps
    if trace["single"] is None:
        pt.inverse = cov
        return pt
    # float32 hat values from the given covariance (no centred information to factor)
    pt.single, pt.inverse = trace["single"], trace["single"].center_cov(cov).astype(np.float32)
    trace["n_single"] += 1
    return pt


PRECISIONS: tuple[str, ...] = ("auto", "double", "mixed")


def _choose_precision(precision: str, method: str, x: np.ndarray, n_classes: int,
                      from_mle: bool) -> SingleDesign | None:
    """The float32 design for ``"mixed"`` (None: float64 throughout).

    ``"auto"`` takes float32 only from a maximum-likelihood start (``from_mle``: overlap is
    proved there); from the null start under separation ``l*`` can have several maxima, and
    the float64 path is the one the R fixtures pin to brglm2's.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not available; use one of {PRECISIONS}.")
    if precision == "double" or method == "newton" or (
            precision == "auto" and (method != "fisher" or not from_mle
                                     or not _single_pays(x.shape[0], x.shape[1], n_classes))):
        return None
    return SingleDesign(x, n_classes)


def _single_pays(n_obs: int, n_units: int, n_classes: int) -> bool:
    """True where one evaluation (information and hat values, ``2 N dim^2``) is costly."""
    dim = (n_units + 1) * (n_classes - 1)
    return 2.0 * n_obs * dim * dim > SINGLE_FLOPS


METHODS: tuple[str, ...] = ("auto", "newton", "fisher")


def _run(method, x, onehot, pt, tol, max_iter, chunk, trace):
    if method == "newton":
        return _newton_iterate(x, onehot, pt, tol, max_iter, chunk, trace)
    return _iterate(x, onehot, pt, tol, max_iter, chunk, trace,
                    polish=method == "fisher+newton")


def _choose_method(method: str, n_obs: int, n_classes: int, dim: int) -> str:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not available; use one of {METHODS}.")
    if method != "auto":
        return method
    hess = hessian_flops(n_obs, n_classes, dim)
    score = 2.0 * n_obs * dim * dim + float(dim) ** 3  # information, its inverse, hat values
    return "fisher+newton" if hess <= max(NEWTON_FLOPS, NEWTON_RATIO * score) else "fisher"


def _checked_fisher(fisher, dim: int, name: str = "start_fisher") -> np.ndarray:
    """A read-only Fortran-ordered view where possible (the matrix is symmetric: a C-ordered
    one is used transposed), else a copy."""
    f = np.asarray(fisher, dtype=np.float64)
    if f.shape != (dim, dim) or not np.all(np.isfinite(f)):
        what = "Fisher information" if name == "start_fisher" else "inverse Fisher information"
        raise ValueError(f"{name} must be the finite ({dim}, {dim}) {what} at start; got "
                         f"shape {f.shape}.")
    f = f.T if f.flags.c_contiguous and not f.flags.f_contiguous else np.asfortranarray(f)
    f = f.view()
    f.flags.writeable = False
    return f


def penalized_loglik(x, codes, n_classes: int, beta) -> tuple[float, float]:
    """``(l*(beta), l(beta))``: penalized ``l + 1/2 log det I`` and ordinary log-likelihood.

    For tests at a fixed ``beta`` (e.g. the penalized likelihood-ratio test of a given head).
    ``beta`` is ``(p + 1, K - 1)`` in the layout of :func:`fit_multinomial_br`. Raises
    :class:`~glminterp.engine.FisherSingularError` where the information is singular.
    """
    arr, c, k, b0 = _check_inputs(x, codes, n_classes, beta, 1.0, 1, "AS_mean")
    q, j = b0.shape
    onehot = np.zeros((arr.shape[0], j))
    pos = c > 0
    onehot[np.flatnonzero(pos), c[pos] - 1] = 1.0
    pt = _evaluate(arr, onehot, b0, max(64, _CHUNK_BYTES // (8 * q * j)))
    return float(pt.pll), float(pt.llf)
