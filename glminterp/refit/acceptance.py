"""When is a maximum-likelihood fit an optimum? The refit's one criterion.

A logit / multinomial-logit log-likelihood is concave, so a finite point where the score
vanishes and the information is positive definite *is* the MLE; it exists iff the data overlap
(Albert & Anderson 1984), so such a fit also proves there is no separation. statsmodels' own
flags do not say this (its GLM IRLS has no step control and can return a diverged fit with
``converged=True``; its MNLogit Newton returns NaN with ``converged=True``), so every fit is
checked here instead:

- finite coefficients and log-likelihood;
- the score (gradient) vanishes: ``max_j |U_j| / (1 + sum_n |x_nj|) <= SCORE_TOL``;
- the log-likelihood is at least the intercept-only model's;
- the information matrix is positive definite (Cholesky) and, after scaling to unit diagonal,
  has condition number at most ``COND_MAX``;
- no fitted probability of an observed class is within ``SATURATION`` of 0 or 1.

The first three make a fit *acceptable*; all five make it *clean*. A clean fit proves overlap;
an acceptable fit that is not clean (saturated probabilities or an ill-conditioned information,
as near separation) is accepted only after the separation linear program finds overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import LinAlgError, cho_factor

from glminterp import engine as eng

SCORE_TOL = 1e-6
COND_MAX = 1e12
SATURATION = 1e-10
#: Exact eigenvalues of the scaled information up to this size; above, Cholesky only.
_EIG_MAX_DIM = 600


@dataclass(frozen=True)
class Verdict:
    """Outcome of :func:`check_optimum`.

    Attributes
    ----------
    acceptable : bool
        Finite, vanishing score, llf >= intercept-only llf, positive definite information.
    clean : bool
        Acceptable and neither saturated nor ill-conditioned: proves overlap.
    reason : str
        Why not acceptable / not clean ("" when clean).
    record : dict
        The measured quantities (JSON-serialisable).
    """

    acceptable: bool
    clean: bool
    reason: str
    record: dict = field(default_factory=dict)

    def criterion(self, overlap_by_lp: bool | str = False) -> str:
        """The sentence recorded as ``convergence_criterion`` for an accepted fit.

        ``overlap_by_lp``: what proved overlap for a fit that is not clean: True or ``"lp"``
        (the separation linear program), ``"dual"`` (the fit's dual bound on that LP).
        """
        r = self.record
        text = (
            f"optimum: max scaled score {r.get('score_max', float('nan')):.2g} <= {SCORE_TOL:g}, "
            f"llf - intercept-only llf = {r.get('llf_gain', float('nan')):.6g} >= 0, "
            "information positive definite"
        )
        if r.get("info_condition") is not None:
            text += f" (scaled condition number {r['info_condition']:.3g})"
        if overlap_by_lp == "dual":
            text += ("; overlap confirmed by the fit's dual bound on the separation linear "
                     "program (its optimum is below the separation threshold)")
        elif overlap_by_lp:
            text += "; overlap confirmed by the separation linear program"
        return text


def _probs_and_score(kind: str, x: np.ndarray, y: np.ndarray, beta: np.ndarray):
    """Observed-class probabilities, the score and the information of the fit."""
    xs = x[:, 1:]
    if kind == "multinomial":
        ll, grad, probs = eng.multinomial_loglike_grad_chunk(xs, y, beta)
        p_all = np.column_stack([1.0 - probs.sum(axis=1), probs])
        p_obs = p_all[np.arange(len(y)), y]
        return p_obs, grad.ravel(order="F"), lambda: eng.symmetrize_upper(
            eng.multinomial_fisher_chunk(xs, probs)
        )
    ll, grad, mu = eng.binomial_loglike_grad_chunk(xs, y, None, beta)
    p_obs = np.where(y > 0.5, mu, 1.0 - mu)
    return p_obs, grad, lambda: eng.symmetrize_upper(eng.binomial_fisher_chunk(xs, mu, None))


def _abs_column_sums(x: np.ndarray, rows: int = 2048) -> np.ndarray:
    """``np.abs(x).sum(axis=0)`` in row blocks: no ``N x q`` temporary (a fresh 20 MB array
    at N = 10,000, q = 257 costs page faults that dominate the sum on a busy machine)."""
    out = np.zeros(x.shape[1])
    buf = np.empty((min(rows, x.shape[0]), x.shape[1]))
    for i in range(0, x.shape[0], rows):
        b = buf[: min(rows, x.shape[0] - i)]
        np.abs(x[i : i + rows], out=b)
        out += b.sum(axis=0)
    return out


def _condition(info: np.ndarray, factored: bool = False) -> tuple[bool, float | None]:
    if factored and info.shape[0] > _EIG_MAX_DIM:
        # the optimizer's Cholesky factorisation of this matrix succeeded: it is positive
        # definite, and above _EIG_MAX_DIM that is all the check asks (a second factorisation
        # of the scaled matrix would repeat it: 0.1-0.3 s at 2,313 parameters)
        return True, None
    d = np.sqrt(np.clip(np.diag(info), 1e-300, None))
    # the engine's information is Fortran-ordered: scale in its own memory order (mixing
    # orders in the broadcast is ~10x slower at p = 256, K = 10); same operations, same bits
    scaled = np.divide(info, d[:, None], order="F" if np.isfortran(info) else "C")
    scaled /= d[None, :]
    try:
        # above _EIG_MAX_DIM the scaled matrix is not needed after the factorisation
        cho_factor(scaled, lower=True, check_finite=True,
                   overwrite_a=scaled.shape[0] > _EIG_MAX_DIM)
    except (LinAlgError, ValueError):
        return False, None
    if scaled.shape[0] > _EIG_MAX_DIM:
        return True, None
    ev = np.linalg.eigvalsh(scaled)
    return bool(ev[0] > 0), float(ev[-1] / ev[0]) if ev[0] > 0 else float("inf")


def check_optimum(
    kind: str, x: np.ndarray, y: np.ndarray, beta: np.ndarray, llf: float, llnull: float,
    info: np.ndarray | None = None, info_factored: bool = False,
) -> Verdict:
    """Check that a multinomial (``y`` class codes, ``beta`` ``(q, K-1)``) or binomial fit is an optimum.

    Parameters
    ----------
    kind : {"multinomial", "binomial"}
    x : ndarray, shape (n, q)
        Design with the intercept column first.
    y, beta
        Response and coefficients of the fit.
    llf, llnull : float
        Log-likelihood of the fit and of the intercept-only model.
    info : ndarray, optional
        The Fisher information at ``beta`` if the optimizer has it (else computed here).
    info_factored : bool
        The optimizer factored ``info`` by Cholesky successfully (the fast engine always
        does before it returns a fit): positive definiteness is then not checked again above
        ``_EIG_MAX_DIM`` parameters, where no condition number is computed. Below, the
        scaled information's eigenvalues are computed as without it.
    """
    beta = np.asarray(beta, dtype=np.float64)
    if not (np.isfinite(beta).all() and np.isfinite(llf)):
        return Verdict(False, False, "non-finite coefficients or log-likelihood",
                       {"finite": False})
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        p_obs, grad, make_info = _probs_and_score(kind, x, y, beta)
    scale = 1.0 + _abs_column_sums(x)
    if kind == "multinomial":
        scale = np.tile(scale, beta.shape[1])
    score_max = float(np.max(np.abs(grad) / scale)) if grad.size else 0.0
    gain = float(llf - llnull)
    n_sat = int(np.sum((p_obs > 1.0 - SATURATION) | (p_obs < SATURATION)))
    rec = {"finite": True, "score_max": score_max, "llf_gain": gain, "n_saturated": n_sat,
           "max_abs_coef": float(np.max(np.abs(beta)))}
    if not np.isfinite(score_max) or score_max > SCORE_TOL:
        return Verdict(False, False, f"the score does not vanish (max scaled {score_max:.3g})", rec)
    if gain < -1e-8 * (1.0 + abs(llnull)):
        return Verdict(False, False, f"log-likelihood {llf:.6g} below the intercept-only "
                       f"model's {llnull:.6g}", rec)
    pd_ok, cond = (_condition(make_info()) if info is None
                   else _condition(np.asarray(info), factored=info_factored))
    rec["info_condition"] = cond
    if not pd_ok:
        return Verdict(False, False, "the information matrix is not positive definite", rec)
    if n_sat:
        return Verdict(True, False, f"{n_sat} fitted probabilities saturated at 0 or 1", rec)
    if cond is not None and cond > COND_MAX:
        return Verdict(True, False, f"ill-conditioned information (condition {cond:.3g})", rec)
    return Verdict(True, True, "", rec)
