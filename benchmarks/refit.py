"""Fast engine vs statsmodels on a head-sized problem (one BLAS thread, CPU seconds; ratios from one run).

    python benchmarks/refit.py            # N=10,000, p=256, K=10 (a few minutes)
    python benchmarks/refit.py --small    # N=2,000, p=32, K=5 (seconds)

Prints, for the multinomial refit: statsmodels MNLogit(newton) cold fit vs the engine
(newton-cg, cold start, and warm start from a perturbed optimum as a stand-in for the network's
head), max relative differences of params and SEs, speed ratio, the engine's time as a multiple
of "one Hessian + one inversion" (both the engine's and statsmodels' own, measured here), and peak
traced memory; then one-vs-rest binomial: statsmodels GLM IRLS per class vs the engine.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import statsmodels.api as sm
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from glminterp import engine as E  # noqa: E402


def simulate(n: int, p: int, k: int, seed: int = 0):
    """ReLU-like correlated units; labels from a known multinomial logit (not separated)."""
    x, y, _ = population(n, p, k, seed)
    return x, y


def population(n: int, p: int, k: int, seed: int = 0, train_rows: int = 0):
    """:func:`simulate`'s rows (the same draws) and what a network would know about them.

    Returns ``(x, y, extra)``: ``extra["weight"]`` ``(k, p)`` and ``extra["bias"]`` ``(k,)``
    are the true softmax weights (a head as a perfectly trained network would have it), and
    with ``train_rows`` > 0 ``extra["train"]`` is ``(x, y)`` of that many further rows from
    the same population (another generator: the first ``n`` rows do not change).
    """
    rng = np.random.default_rng(seed)
    r = max(4, p // 8)
    z0 = rng.standard_normal((n, r))
    mix = rng.standard_normal((r, p))
    noise = rng.standard_normal((n, p))
    offset = rng.normal(0, 0.5, p)
    x = np.maximum(z0 @ mix / np.sqrt(r) + 0.7 * noise + offset, 0.0)
    w = rng.normal(0, 0.5 / np.sqrt(p), (p, k))
    b = rng.normal(0, 0.3, k)
    y = _labels(x @ w + b, rng)
    extra = {"weight": w.T.copy(), "bias": b}
    if train_rows:
        g = np.random.default_rng([seed, 1])
        xt = np.maximum(g.standard_normal((train_rows, r)) @ mix / np.sqrt(r)
                        + 0.7 * g.standard_normal((train_rows, p)) + offset, 0.0)
        extra["train"] = (xt, _labels(xt @ w + b, g))
    return x, y, extra


def _labels(eta: np.ndarray, rng) -> np.ndarray:
    prob = np.exp(eta - eta.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    return (prob.cumsum(axis=1) > rng.random((eta.shape[0], 1))).argmax(axis=1)


def measure(fn):
    """(result, seconds, peak traced MB) of one call."""
    gc.collect()
    tracemalloc.start()
    t0 = time.process_time()
    out = fn()
    sec = time.process_time() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, sec, peak


def rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true")
    args = ap.parse_args(argv)
    n, p, k = (2000, 32, 5) if args.small else (10_000, 256, 10)
    x, y = simulate(n, p, k)
    x1 = sm.add_constant(x)
    print(f"N={n}, p={p}, K={k}: {(p + 1) * (k - 1)} parameters; class counts {np.bincount(y)}")

    # ---------------------------------------------------------------- multinomial
    sm_res, t_sm, m_sm = measure(
        lambda: sm.MNLogit(y, x1).fit(method="newton", disp=0, maxiter=35)
    )
    print(f"statsmodels MNLogit newton cold fit: {t_sm:.2f} s, {sm_res.mle_retvals['iterations']}"
          f" iterations, peak {m_sm:.0f} MB")
    rows = []
    for label, kw in [("engine newton-cg (cold)", {"method": "newton-cg"}),
                      ("engine newton (cold)", {"method": "newton"}),
                      ("engine newton-cg (warm)", {"method": "newton-cg",
                                                   "start": np.asarray(sm_res.params) * 0.9})]:
        res, t, m = measure(lambda kw=kw: E.fit_multinomial(x, y, **kw))
        rows.append((label, res, t, m))

    # one Hessian + one inversion, engine's and statsmodels' own, at the optimum
    codes, _ = E.encode_classes(y)
    obj = E.MultinomialObjective(E.array_chunks(x, codes, None, E._auto_chunk(None, p * k)),
                                 p + 1, k)
    flat = rows[0][1].params.ravel(order="F")
    obj.value_grad(flat)
    t0 = time.process_time()
    f = obj.fisher(flat)
    t_h = time.process_time() - t0
    t0 = time.process_time()
    E.inverse_from_cholesky(E._cholesky(f)[0])
    t_inv = time.process_time() - t0
    model = sm.MNLogit(y, x1)
    t0 = time.process_time()
    h_sm = model.hessian(flat)
    t_hsm = time.process_time() - t0
    t0 = time.process_time()
    np.linalg.inv(-h_sm)
    t_invsm = time.process_time() - t0
    unit = t_h + t_inv
    print(f"one Hessian + one inversion: engine {t_h:.2f} + {t_inv:.2f} = {unit:.2f} s; "
          f"statsmodels hessian {t_hsm:.2f} + np.linalg.inv {t_invsm:.2f} = "
          f"{t_hsm + t_invsm:.2f} s")
    print(f"{'fit':28s} {'sec':>7s} {'x faster':>9s} {'x (H+inv)':>10s} {'x smH+inv':>10s} "
          f"{'params rel':>11s} {'SE rel':>9s} {'iter':>5s} {'H':>3s} {'HVP':>4s} {'peak MB':>8s}")
    for label, res, t, m in rows:
        print(f"{label:28s} {t:7.2f} {t_sm / t:9.1f} {t / unit:10.2f} "
              f"{t / (t_hsm + t_invsm):10.2f} {rel(res.params, sm_res.params):11.1e} "
              f"{rel(res.bse, sm_res.bse):9.1e} {res.n_iter:5d} {res.n_fisher:3d} "
              f"{res.n_hvp:4d} {m:8.0f}")
    sm_out, t_to, _ = measure(lambda: rows[0][1].to_statsmodels(x, y))
    print(f"to_statsmodels (cov='engine'): {t_to:.2f} s; its bse vs statsmodels' own fit: "
          f"{rel(sm_out.bse, sm_res.bse):.1e} relative")
    del sm_res, sm_out, model, h_sm, f
    gc.collect()

    # ---------------------------------------------------------------- one-vs-rest binomial
    def glm_all():
        out = []
        for c in range(k):
            r = sm.GLM((y == c).astype(float), x1, family=sm.families.Binomial()).fit()
            out.append((np.asarray(r.params), np.asarray(r.bse)))
            del r
            gc.collect()  # statsmodels IRLS keeps weighted copies alive in reference cycles
        return out

    def engine_all():
        return [E.fit_binomial(x, (y == c).astype(float)) for c in range(k)]

    glm_res, t_glm, m_glm = measure(glm_all)
    eng_res, t_eng, m_eng = measure(engine_all)
    dp = max(rel(e.params, g[0]) for e, g in zip(eng_res, glm_res))
    ds = max(rel(e.bse, g[1]) for e, g in zip(eng_res, glm_res))
    print(f"one-vs-rest ({k} binomial fits): statsmodels GLM IRLS {t_glm:.2f} s (peak {m_glm:.0f}"
          f" MB), engine {t_eng:.2f} s (peak {m_eng:.0f} MB): {t_glm / t_eng:.1f}x faster; "
          f"params rel {dp:.1e}, SE rel {ds:.1e} (GLM's SEs come from its last IRLS weights)")


if __name__ == "__main__":
    with threadpool_limits(1):
        main()
