"""Multinomial bias reduction vs the MLE fit (one BLAS thread; ratios from one run).

    python benchmarks/bias_reduction.py            # N=10,000, p=256, K=10 (minutes)
    python benchmarks/bias_reduction.py --small    # N=2,000, p=32, K=5 (seconds)
    python benchmarks/bias_reduction.py --coverage # Wald CI coverage, nearly separated regime

Timing: ``glminterp.refit.mnbr.fit_multinomial_br`` (the public fit, all input checks) vs
``glminterp.engine.fit_multinomial`` on the same overlapping data (the MLE exists), both cold
(intercept-only start), default tolerances. Coverage: see :func:`coverage`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from refit import simulate  # noqa: E402

from glminterp import engine as E  # noqa: E402
from glminterp.refit.mnbr import fit_multinomial_br  # noqa: E402
from glminterp.refit.separation import check_multinomial  # noqa: E402


def timing(n: int, p: int, k: int) -> None:
    x, y = simulate(n, p, k)
    codes, _ = E.encode_classes(y)
    t0 = time.perf_counter()
    ml = E.fit_multinomial(x, y)
    t_ml = time.perf_counter() - t0
    t0 = time.perf_counter()
    br = fit_multinomial_br(x, codes, k)
    t_br = time.perf_counter() - t0
    print(f"N={n}, p={p}, K={k}: {(p + 1) * (k - 1)} parameters")
    print(f"MLE  engine.fit_multinomial : {t_ml:7.2f} s ({ml.n_iter} iterations)")
    print(f"BR   fit_multinomial_br     : {t_br:7.2f} s ({br.n_iter} iterations, "
          f"{br.n_fisher} information matrices, {br.n_hvp} Fisher-vector products, "
          f"last step {br.step_norm:.1e}, converged={br.converged})")
    print(f"ratio BR / MLE: {t_br / t_ml:.2f}  (goal <= 3)")
    print("step norms per iteration: " + ", ".join(f"{h[1]:.1e}" for h in br.history))
    shrink = np.linalg.norm(br.params[1:]) / np.linalg.norm(ml.params[1:])
    print(f"|slopes| BR / MLE: {shrink:.3f}")


def _draw(rng, x1, beta):
    eta = np.c_[np.zeros(x1.shape[0]), x1 @ beta]
    prob = np.exp(eta - eta.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    return (prob.cumsum(axis=1) > rng.random((x1.shape[0], 1))).argmax(axis=1)


BETA = np.array([[0.5, -0.5], [6.0, 3.0], [-3.0, 5.0]])  # (p + 1, K - 1): strong slopes


def coverage(n_rep: int = 400, n: int = 40, seed: int = 0, alpha: float = 0.05,
             beta: np.ndarray = BETA) -> dict:
    """Coverage of 95% Wald CIs for a known beta, K = 3, p = 2, N = 40 (nearly separated).

    Large slopes make separation frequent; the MLE's coverage is computed over the replicates
    where the MLE exists (the fit converges to a finite optimum), the BR estimator's over all
    replicates and over the same subset.
    """
    rng = np.random.default_rng(seed)
    z = stats.norm.ppf(1 - alpha / 2)
    hit_br, hit_ml, hit_br_sub = (np.zeros(beta.shape) for _ in range(3))
    n_ml = 0
    for _ in range(n_rep):  # a fresh design each replicate: coverage averaged over designs
        x = rng.standard_normal((n, 2))
        x1 = E.add_const(x)
        y = _draw(rng, x1, beta)
        if len(np.unique(y)) < 3:
            continue
        br = fit_multinomial_br(x, y, 3)
        cov_br = np.abs(br.params - beta) <= z * br.bse
        hit_br += cov_br
        ml = _mle(x, y)
        if ml is not None:
            n_ml += 1
            hit_ml += np.abs(ml.params - beta) <= z * ml.bse
            hit_br_sub += cov_br
    return {"n_rep": n_rep, "n_mle_exists": n_ml, "br_all": hit_br / n_rep,
            "mle": hit_ml / max(n_ml, 1), "br_same_rows": hit_br_sub / max(n_ml, 1)}


def _mle(x, y):
    """The MLE where it exists (no separation by the exact LP check), else None."""
    import warnings

    chk = check_multinomial(E.add_const(x), y, terms=["const", "x1", "x2"],
                            classes=["0", "1", "2"])
    if chk.separated:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ml = E.fit_multinomial(x, y, max_iter=50)
        except E.FisherSingularError:
            return None
    return ml if ml.converged else None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--coverage", action="store_true")
    args = ap.parse_args(argv)
    with threadpool_limits(1):
        if args.coverage:
            res = coverage()
            print(f"Wald 95% CI coverage, K=3, p=2, N=40, {res['n_rep']} replicates; MLE exists "
                  f"in {res['n_mle_exists']}")
            for name in ("br_all", "br_same_rows", "mle"):
                print(f"  {name:13s} mean {res[name].mean():.3f}  per coefficient "
                      + np.array2string(res[name].ravel(order='F'), precision=3))
            return
        timing(*((2000, 32, 5) if args.small else (10_000, 256, 10)))


if __name__ == "__main__":
    main()
