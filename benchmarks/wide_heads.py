"""Wide heads and many classes: the engine at the floor, matrix-free inference, bounded memory.

    python benchmarks/wide_heads.py full  [--p 256 512 1024 2048] [--sm-max-p 256]
                                                # N=10k, K=10 full covariance
    python benchmarks/wide_heads.py rows  [--n 10000 50000 200000]  # p=256: HVPs, time per row
    python benchmarks/wide_heads.py k100  [--n 20000 --p 256]  # contrasts + class subset
    python benchmarks/wide_heads.py k1000 [--per 700]          # 10-class subset of K=1000, p=512
    python benchmarks/wide_heads.py workers                     # Dask worker start-up

Every section times the public call a user makes (checks included) and prints ratios measured
in the same run, with peak resident memory (``ru_maxrss`` of this process) and the peak traced
by ``tracemalloc`` for the call. One BLAS thread. Run one section at a time.
"""

from __future__ import annotations

import argparse
import gc
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy.linalg import cho_factor
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from refit import simulate  # noqa: E402  (benchmarks/refit.py: the shared synthetic design)

from glminterp import engine as E  # noqa: E402
from glminterp.refit.class_subset import fit_class_subset  # noqa: E402
from glminterp.refit.contrasts import contrast_matrix, fit_contrasts  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_clock = time.perf_counter  # section full switches to CPU time (see --cpu-time)


def measure(fn):
    """(result, seconds, peak traced MB) of one call."""
    gc.collect()
    tracemalloc.start()
    t0 = _clock()
    out = fn()
    sec = _clock() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, sec, peak


def floor_seconds(x, y, res) -> tuple[float, float, float]:
    """One Fisher build + one Cholesky (+ the inverse) at the optimum, timed here.

    The Cholesky and the inverse overwrite their input (the cheapest way there is; the fit
    keeps its information matrix, so it factors a copy).
    """
    codes, _ = E.encode_classes(y)
    q, k = x.shape[1] + 1, len(res.classes)
    obj = E.MultinomialObjective(E.array_chunks(x, codes, None, E._auto_chunk(None, q * (k - 1))),
                                 q, k)
    flat = res.params.ravel(order="F")
    obj.value_grad(flat)
    t0 = _clock()
    f = obj.fisher(flat)
    t_f = _clock() - t0
    t0 = _clock()
    c = cho_factor(f, lower=False, overwrite_a=True, check_finite=False)
    t_c = _clock() - t0
    t0 = _clock()
    E.inverse_from_cholesky(c[0], overwrite=True)
    t_i = _clock() - t0
    del f, c
    return t_f, t_c, t_i


def refined_se_rel(res, m=20, seed=0) -> float:
    """Largest relative change of 20 SEs under one step of iterative refinement of ``cov``.

    ``c <- c - cov (F c - e)`` on 20 random columns: an independent check of the inverse that
    needs no second m x m matrix (the dense ``inv`` route needs two more and ~m^3 flops).
    """
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(res.cov.shape[0], m, replace=False))
    cols = res.cov[:, idx]
    r = res.fisher @ cols
    r[idx, np.arange(m)] -= 1.0
    refined = cols - res.cov @ r
    se, se_ref = np.sqrt(cols[idx, np.arange(m)]), np.sqrt(refined[idx, np.arange(m)])
    return float(np.max(np.abs(se / se_ref - 1)))


def section_full(ps, n=10_000, k=10, sm_max_p=256, repeat=2) -> None:
    import statsmodels.api as sm

    print(f"full covariance, N={n}, K={k}; floor = one Fisher build + one Cholesky; "
          "floor+inv adds the inverse the covariance needs")
    print(f"{'p':>5} {'params':>7} {'fit s':>8} {'F s':>7} {'C s':>6} {'inv s':>6} "
          f"{'fit/floor':>9} {'fit/(floor+inv)':>15} {'to_sm s':>8} {'HVP':>4} {'H':>2} "
          f"{'SE vs':>6} {'SE rel':>8} {'refine':>8} {'sm/fit':>7} {'peak MB':>8} {'RSS MB':>7}",
          flush=True)
    for p in ps:
        x, y = simulate(n, p, k)
        # fit and floor alternate, best of `repeat` each: the machine is shared, ratios of
        # single runs swing with other processes
        t_fit = t_f = t_c = t_i = np.inf
        for _ in range(repeat if p <= 1024 else 1):
            res, t, peak = measure(lambda x=x, y=y: E.fit_multinomial(x, y))
            t_fit = min(t_fit, t)
            t_f, t_c, t_i = (min(a, b) for a, b in zip((t_f, t_c, t_i),
                                                       floor_seconds(x, y, res)))
        t_sm_out = float("nan")
        if p <= 1024:
            out, t_sm_out, _ = measure(lambda r=res, x=x, y=y: r.to_statsmodels(x, y))
            del out
        se_rel, sm_ratio, vs = float("nan"), "skip", "-"
        if p <= sm_max_p:  # statsmodels' (K-1)^2-block Hessian: minutes per iteration above
            own, t_own, _ = measure(lambda x=x, y=y: sm.MNLogit(y, sm.add_constant(x)).fit(
                method="newton", disp=0, maxiter=35))
            se_rel = float(np.max(np.abs(res.bse - own.bse) / own.bse))
            sm_ratio, vs = f"{t_own / t_fit:.1f}", "sm"
            del own
        elif p <= 1024:  # the dense inverse of the information by another route (LAPACK getri)
            dense = np.linalg.inv(res.fisher)
            se = np.sqrt(np.diag(dense)).reshape(res.params.shape, order="F")
            se_rel, vs = float(np.max(np.abs(res.bse - se) / se)), "getri"
            del dense
        refine = refined_se_rel(res)
        floor = t_f + t_c
        print(f"{p:5d} {res.cov.shape[0]:7d} {t_fit:8.2f} {t_f:7.2f} {t_c:6.2f} {t_i:6.2f} "
              f"{t_fit / floor:9.2f} {t_fit / (floor + t_i):15.2f} {t_sm_out:8.2f} "
              f"{res.n_hvp:4d} {res.n_fisher:2d} {vs:>6} {se_rel:8.1e} {refine:8.1e} "
              f"{sm_ratio:>7} {peak:8.0f} {rss_mb():7.0f}", flush=True)
        print(f"      plan: {res.plan}", flush=True)
        del res, x, y
        gc.collect()


def section_rows(ns, p=256, k=10) -> None:
    print(f"rows: p={p}, K={k}, engine fit_multinomial (auto = newton-cg)")
    print(f"{'N':>7} {'fit s':>8} {'us/row':>8} {'iter':>5} {'HVP':>4} {'H':>2} {'peak MB':>8}")
    for n in ns:
        x, y = simulate(n, p, k)
        res, t, peak = measure(lambda x=x, y=y: E.fit_multinomial(x, y))
        print(f"{n:7d} {t:8.2f} {t / n * 1e6:8.1f} {res.n_iter:5d} {res.n_hvp:4d} "
              f"{res.n_fisher:2d} {peak:8.0f}", flush=True)
        del res, x, y
        gc.collect()


def _spec(classes, terms, m=20, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(m):
        a, b = rng.choice(len(classes), 2, replace=False)
        t = terms[int(rng.integers(len(terms)))]
        out.append((classes[a], classes[b], t) if i % 2 else (classes[max(a, 1)], t))
    return out


def section_k100(n=20_000, p=256, k=100) -> None:
    # exactness on a size where the dense inverse fits: same K, narrow design
    xs, ys = simulate(n, 16, k, seed=1)
    dense = E.fit_multinomial(xs, ys, tol=1e-10)
    spec = _spec(dense.classes, dense.terms)
    c, _ = contrast_matrix(spec, dense.classes, dense.terms)
    mf = fit_contrasts(xs, ys, spec, rtol=1e-12)
    d_se = np.sqrt(np.einsum("ij,jk,ik->i", c, dense.cov, c))
    sub_cls = list(dense.classes[:10])
    sub = fit_class_subset(xs, ys, sub_cls)
    keep = np.isin(ys, sub_cls)
    sub_dense = E.fit_multinomial(xs[keep], ys[keep], method="newton", tol=1e-10)
    print(f"K={k}, N={n}, p=16 ({dense.cov.shape[0]} params, dense inverse fits): 20 contrasts "
          f"SE max rel diff {np.max(np.abs(mf.se / d_se - 1)):.1e}; 10-class subset SE max rel "
          f"diff {np.max(np.abs(sub.bse / sub_dense.bse - 1)):.1e}")
    del dense, mf, sub, sub_dense, xs, ys
    gc.collect()
    x, y = simulate(n, p, k)
    q = p + 1
    print(f"K={k}, N={n}, p={p}: {q * (k - 1)} params; dense covariance would need "
          f"{E.covariance_bytes(q * (k - 1)) / 2**30:.1f} GiB")
    terms = ("const", *[f"x{i + 1}" for i in range(p)])
    spec = _spec(tuple(range(k)), terms)
    try:
        res, t, peak = measure(lambda: fit_contrasts(x, y, spec))
        cv = res.convergence
        print(f"  20 contrasts: {t:.1f} s, fit {cv['n_iter']} iter / {cv['n_hvp_fit']} HVP, "
              f"solves {cv['n_hvp_solve']} HVP (column-products), converged {res.converged}, "
              f"traced peak {peak:.0f} MB, RSS {rss_mb():.0f} MB")
    except Exception as err:  # separated data: reported early
        print(f"  20 contrasts: {type(err).__name__}: {str(err)[:200]}")
    res, t, peak = measure(lambda: fit_class_subset(x, y, list(range(10))))
    print(f"  10-class subset ({res.n_obs} rows, {res.params.size} params): {t:.1f} s, "
          f"converged {res.fit.converged}, traced peak {peak:.0f} MB, RSS {rss_mb():.0f} MB")


def section_k1000(per=700, p=512, k=1000) -> None:
    """Gaussian classes with shared covariance: the multinomial logit is the true model."""
    rng = np.random.default_rng(0)
    n = per * k
    mu = rng.normal(0, 0.08, (k, p)).astype(np.float32)
    y = np.repeat(np.arange(k), per)
    x = np.empty((n, p), dtype=np.float32)
    for i in range(0, n, 50_000):
        x[i : i + 50_000] = mu[y[i : i + 50_000]] + rng.standard_normal((min(50_000, n - i), p),
                                                                      dtype=np.float32)
    print(f"K={k}, p={p}, N={n} (float32 features, {x.nbytes / 2**20:.0f} MB); a full "
          f"covariance would need {E.covariance_bytes((p + 1) * (k - 1)) / 2**40:.1f} TiB")
    res, t, peak = measure(lambda: fit_class_subset(x, y, list(range(0, 1000, 100))))
    tab = res.contrast(100, 0)
    print(f"  10-class subset ({res.n_obs} rows, {res.params.size} params): {t:.1f} s, "
          f"converged {res.fit.converged}, traced peak {peak:.0f} MB, RSS {rss_mb():.0f} MB; "
          f"w_100 - w_0 on x1: {tab['estimate'].iloc[1]:.3f} (SE {tab['se'].iloc[1]:.3f}), "
          f"truth {mu[100, 0] - mu[0, 0]:.3f}")


def section_workers() -> None:
    root = str(Path(__file__).resolve().parents[1])
    probe = ("import time, resource, sys; t = time.perf_counter(); {imp}; "
             "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)"
             ".ru_maxrss / 1024, 'torch' in sys.modules)")
    print("worker-side import (fresh interpreter): seconds, max RSS MB, torch loaded")
    for label, imp in [("glminterp.scale + engine (now)", "import glminterp.scale"),
                       ("same with torch (before: glminterp/__init__ imported it)",
                        "import torch, glminterp.scale")]:
        out = subprocess.run([sys.executable, "-c", probe.format(imp=imp)], capture_output=True,
                             text=True, env={"PYTHONPATH": root}, check=True).stdout.split()
        print(f"  {label:<58} {float(out[0]):6.2f} s {float(out[1]):7.0f} MB  {out[2]}")
    from dask.distributed import Client, LocalCluster

    t0 = time.perf_counter()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        t_up = time.perf_counter() - t0
        t1 = time.perf_counter()
        mods = client.run(lambda: __import__("glminterp.scale") and sorted(
            m for m in ("torch",) if m in sys.modules))
        print(f"  LocalCluster(1 process) up in {t_up:.1f} s; importing glminterp.scale on the "
              f"worker {time.perf_counter() - t1:.1f} s; torch on worker: {list(mods.values())}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("section", choices=["full", "rows", "k100", "k1000", "workers"])
    ap.add_argument("--p", type=int, nargs="*", default=[256, 512, 1024])
    ap.add_argument("--n", type=int, nargs="*", default=None)
    ap.add_argument("--per", type=int, default=700)
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with this process's CPU seconds (one BLAS thread: the work "
                         "done), not wall time; for a machine shared with other jobs")
    ap.add_argument("--repeat", type=int, default=2, help="best of N fits/floors (p <= 1024)")
    ap.add_argument("--sm-max-p", type=int, default=256,
                    help="largest p at which statsmodels MNLogit is also fitted (full)")
    args = ap.parse_args(argv)
    global _clock
    if args.cpu_time:
        _clock = time.process_time
    if args.section == "full":
        print(f"times: {'CPU' if args.cpu_time else 'wall'} seconds")
        section_full(args.p, sm_max_p=args.sm_max_p, repeat=args.repeat)
    elif args.section == "rows":
        section_rows(args.n or [10_000, 50_000, 200_000])
    elif args.section == "k100":
        section_k100(n=(args.n or [20_000])[0], p=args.p[0] if args.p != [256, 512, 1024] else 256)
    elif args.section == "k1000":
        section_k1000(per=args.per)
    else:
        section_workers()


if __name__ == "__main__":
    with threadpool_limits(1):
        main()
