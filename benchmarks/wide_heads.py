"""Wide heads and many classes: the engine at the floor, matrix-free inference, bounded memory.

    python benchmarks/wide_heads.py full  [--p 256 512 1024 2048] [--n 10000] [--signal 1]
                                          [--sm-max-p 256] [--cpu-time]  # N=10k, K=10, full cov
    python benchmarks/wide_heads.py rows  [--n 10000 50000 200000]  # p=256: HVPs, time per row
    python benchmarks/wide_heads.py k100  [--n 20000 --p 256]  # contrasts + class subset
    python benchmarks/wide_heads.py k1000 [--per 700]          # 10-class subset of K=1000, p=512
    python benchmarks/wide_heads.py workers                     # Dask worker start-up

Every section times the public call a user makes (checks included) and prints ratios measured
in the same run, with peak resident memory (section full: the peak RSS of each fit, ``VmHWM``
reset before it; elsewhere ``ru_maxrss`` of this process) and the peak traced by
``tracemalloc`` for the call. One BLAS thread. Run one section at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy.linalg.lapack import dpotrf
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from refit import _labels, population, simulate  # noqa: E402  (benchmarks/refit.py: the shared design)

from glminterp import engine as E  # noqa: E402
from glminterp.refit.class_subset import fit_class_subset  # noqa: E402
from glminterp.refit.contrasts import contrast_matrix, fit_contrasts  # noqa: E402


def design(n: int, p: int, k: int, signal: float = 1.0, seed: int = 0):
    """The shared simulated design (``benchmarks/refit.py``); ``signal`` scales its true
    coefficients (bias and weights) before the labels are drawn: 1 is ``simulate`` itself,
    0 a null model (labels independent of the units, equal classes)."""
    if signal == 1.0:
        return simulate(n, p, k, seed)
    x, _, extra = population(n, p, k, seed)
    eta = signal * (x @ extra["weight"].T + extra["bias"])
    return x, _labels(eta, np.random.default_rng([seed, 2]))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Restart the peak-RSS count (Linux: ``VmHWM``), so each size reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:  # pragma: no cover - not Linux: ru_maxrss, the process-wide peak
        pass


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover
        pass
    return rss_mb()


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


def timed(fn):
    """(result, seconds) of one call, no tracing (tracemalloc slows the Python-level work and
    does not see the engine's mmap-backed matrices; memory is the peak RSS instead)."""
    gc.collect()
    t0 = _clock()
    out = fn()
    return out, _clock() - t0


def floor_seconds(x, y, params) -> dict:
    """The floor and the fit's other pieces, each timed alone at the optimum ``params``.

    ``F``: one information build (the fit's own ``MultinomialObjective.fisher``, into a fresh
    matrix, page faults included); ``C``: its Cholesky in place (LAPACK potrf, the cheapest
    way there is). floor = F + C. Then, in the same memory, the fit's two covariance steps:
    ``T``, the triangular inverse and the variances (``CholeskyCovariance``: what the SEs
    need), and ``L``, the full covariance from it (lauum + mirroring, ``.matrix()``); T + L is
    the full inverse (potri). ``hvp`` and ``vg``: one Fisher-vector product and one
    log-likelihood + score pass (the Newton-CG phase's units of work).
    """
    codes, _ = E.encode_classes(y)
    q, j = params.shape
    obj = E.MultinomialObjective(E.array_chunks(x, codes, None, E._auto_chunk(None, q * j)),
                                 q, j + 1)
    flat = params.ravel(order="F")
    out = {}
    gc.collect()
    t0 = _clock()
    for _ in range(3):
        obj.value_grad(flat)
    out["vg"] = (_clock() - t0) / 3
    v = np.random.default_rng(0).standard_normal(flat.size)
    t0 = _clock()
    for _ in range(5):
        obj.hvp(flat, v)
    out["hvp"] = (_clock() - t0) / 5
    gc.collect()
    t0 = _clock()
    f = obj.fisher(flat)
    out["F"] = _clock() - t0
    t0 = _clock()
    c, info = dpotrf(f, lower=0, overwrite_a=1, clean=0)
    out["C"] = _clock() - t0
    if info != 0:
        raise RuntimeError(f"floor: potrf info={info}")
    _zero_strict_lower(c)  # untimed: the fit's factor has a zero lower triangle (T reads it)
    t0 = _clock()
    cov = E.CholeskyCovariance(c)
    out["T"] = _clock() - t0
    t0 = _clock()
    cov.matrix()
    out["L"] = _clock() - t0
    del f, c, cov
    return out


def _zero_strict_lower(a: np.ndarray, block: int = 512) -> None:
    n = a.shape[0]
    for i in range(0, n, block):
        e = min(i + block, n)
        a[e:, i:e] = 0.0
        a[i:e, i:e] = np.triu(a[i:e, i:e])


def flop_bounds(n: int, p: int, k: int) -> tuple[float, float]:
    """(SEs, full covariance) over the floor by flop counts: information ``N q^2 J(J+1)/2``,
    Cholesky, triangular inverse and lauum ``m^3/3`` each (``m = qJ``)."""
    q, j = p + 1, k - 1
    m = q * j
    f, c = n * q * q * j * (j + 1) / 2, m**3 / 3
    return (f + 2 * c) / (f + c), (f + 3 * c) / (f + c)


def stacked_seconds(x, params) -> float:
    """The information by the earlier build (one syrk on the stacked design per chunk, the
    build the issue's floor was first measured with): a reference, not used by the fit."""
    q, j = params.shape
    cs = E._auto_chunk(None, q * j)
    probs = [E.multinomial_probs(x[i : i + cs], params)[0] for i in range(0, len(x), cs)]
    gc.collect()
    t0 = _clock()
    out = E.dense_matrix(q * j)
    for i, pr in zip(range(0, len(x), cs), probs):
        E._fisher_stacked(x[i : i + cs], pr, out)
    E.symmetrize_upper(out)
    sec = _clock() - t0
    del out
    return sec


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


def _se_checks(res, x, y, p, sm_max_p, dense_max_p):
    """(reference name, max relative SE difference, statsmodels seconds or None)."""
    import statsmodels.api as sm

    if p <= sm_max_p:  # statsmodels' (K-1)^2-block Hessian every iteration: slow above
        own, t_own = timed(lambda: sm.MNLogit(y, sm.add_constant(x)).fit(
            method="newton", disp=0, maxiter=35))
        return "sm", float(np.max(np.abs(res.bse - own.bse) / own.bse)), t_own
    if p <= dense_max_p:  # the dense inverse of the information by another route (getri)
        dense = np.linalg.inv(res.fisher)
        se = np.sqrt(np.diag(dense)).reshape(res.params.shape, order="F")
        del dense
        return "getri", float(np.max(np.abs(res.bse - se) / se)), None
    return "-", float("nan"), None


def _separated(x, y) -> str:
    """The engine's divergence monitor over Hessian-free steps only (no information matrix):
    the error's first words if the data are separated, else ''."""
    from glminterp.refit.separation import SeparationError

    codes, _ = E.encode_classes(y)
    q, k = x.shape[1] + 1, int(codes.max()) + 1
    obj = E.MultinomialObjective(E.array_chunks(x, codes, None, E._auto_chunk(None, q * (k - 1))),
                                 q, k)
    chunks = E.array_chunks(x, codes, None, E._auto_chunk(None, q))
    start = E.null_start_multinomial(codes, k, q).ravel(order="F")
    try:
        out = E._solve(obj, start, "newton-cg", 1e-8, 100, 200,
                       E._kron_precond(obj, E._gram_inv(chunks)),
                       E.multinomial_monitor(obj, x.shape[0]), None, full=False)
    except SeparationError as err:
        return str(err)[:150]
    if not out[5]:  # neither diverging nor converged: say so rather than time a long fit
        return f"no divergence signal, but Newton-CG did not converge in {out[6].n_iter} steps"
    return ""


FULL_LEGEND = """\
  floor = F + C: one information build (the fit's own build, into a fresh matrix) + its
          Cholesky in place (potrf); timed alone at the optimum, in this run
  fit   = engine.fit_multinomial(x, y) as a user calls it: input checks, Newton-CG to the
          optimum, one information build F, its Cholesky (into a second matrix, so that
          res.fisher is kept), the last exact Newton step, and the triangular inverse T whose
          row norms are the variances: it returns with res.bse ready
  cov   = the first access to res.cov: the full covariance from T (lauum + mirroring, L), once
  bound = (F+C+T)/floor for the fit and (F+C+T+L)/floor with cov: its unavoidable pieces,
          timed alone; flops = the same ratios by flop counts (F: N q^2 J(J+1)/2; C, T, L:
          m^3/3 each, m = (p+1)(K-1))
  CG    = HVP * hvp + eval * vg: the Newton-CG phase's Fisher-vector products and data
          passes, each timed alone; other = fit - (F + C + T) - CG (Gram matrix for the
          preconditioner, the factor's copy, page faults, Python)"""


def section_full(ps, n=10_000, k=10, sm_max_p=256, dense_max_p=1024, repeat=2,
                 stacked=True, signal=1.0) -> None:
    print(f"full covariance, N={n}, K={k}, signal={signal:g} (1 = the shared simulated design)")
    print(FULL_LEGEND)
    print(f"{'p':>5} {'params':>6} {'fit':>7} {'cov':>6} {'F':>7} {'C':>6} {'T':>6} {'L':>6} "
          f"{'fit/floor':>9} {'(fit+cov)/floor':>15} {'bound':>9} {'flops':>9} "
          f"{'HVP':>4} {'eval':>4} {'H':>2} {'CG':>6} {'other':>6} {'to_sm':>6} {'SE vs':>5} "
          f"{'SE rel':>8} {'SE=diag':>8} {'refine':>8} {'sm/fit':>7} {'sm/(fit+cov)':>12} "
          f"{'RSS MB':>7}", flush=True)
    for p in ps:
        x, y = design(n, p, k, signal)
        why = _separated(x, y)
        if why:  # no MLE, no covariance: say so instead of iterating (p=2048 at N=10k is)
            print(f"{p:5d} separated at N={n} (no MLE, nothing to time): {why}", flush=True)
            continue
        _full_row(x, y, p, n, k, sm_max_p, dense_max_p, repeat if p <= 1024 else 1, stacked)
        del x, y
        gc.collect()


@contextlib.contextmanager
def _timing_pieces(spent: dict):
    """Time the fit's own information builds (F), factorisations (C) and triangular inverses
    (T) while it runs, by wrapping the engine's three functions (three calls per fit)."""
    targets = [(E.MultinomialObjective, "fisher", "F"), (E, "cholesky_into", "C"),
               (E.CholeskyCovariance, "__init__", "T")]
    saved = [getattr(obj, name) for obj, name, _ in targets]

    def wrap(fn, key):
        def inner(*args, **kwargs):
            t0 = _clock()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] = spent.get(key, 0.0) + _clock() - t0
        return inner

    for (obj, name, key), fn in zip(targets, saved):
        spent[key] = 0.0
        setattr(obj, name, wrap(fn, key))
    try:
        yield spent
    finally:
        for (obj, name, _), fn in zip(targets, saved):
            setattr(obj, name, fn)


def _full_row(x, y, p, n, k, sm_max_p, dense_max_p, reps, stacked) -> None:
    """Fit and floor alternate, best of ``reps`` each (the machine is shared: ratios of single
    runs swing with other processes). The checks run on the last fit, before its floor, so
    that at most two m x m matrices (+ the checks' own) are alive at a time."""
    t_fit = t_cov = np.inf
    fl, rss, inside = {}, 0.0, {}
    for r in range(reps):
        reset_peak_rss()
        spent = {}
        with _timing_pieces(spent):
            res, t = timed(lambda x=x, y=y: E.fit_multinomial(x, y))
        tc = timed(lambda res=res: res.cov is None)[1]  # keep no reference to the matrix
        rss = max(rss, peak_rss_mb())
        if t < t_fit:
            inside = spent
        t_fit, t_cov = min(t_fit, t), min(t_cov, tc)
        params = res.params.copy()
        if r + 1 == reps:
            row = _checks(res, x, y, p, sm_max_p, dense_max_p)
        del res
        fl = {key: min(fl.get(key, np.inf), val)
              for key, val in floor_seconds(x, y, params).items()}
    floor = fl["F"] + fl["C"]
    bound = f"{(floor + fl['T']) / floor:.2f}/{(floor + fl['T'] + fl['L']) / floor:.2f}"
    flops = "{:.2f}/{:.2f}".format(*flop_bounds(n, p, k))
    cg = row["hvp"] * fl["hvp"] + row["n_eval"] * fl["vg"]
    other = t_fit - floor - fl["T"] - cg
    t_own = row["t_sm"]
    sm_r = "skip" if t_own is None else f"{t_own / t_fit:.1f}"
    sm_rc = "skip" if t_own is None else f"{t_own / (t_fit + t_cov):.1f}"
    print(f"{p:5d} {params.size:6d} {t_fit:7.2f} {t_cov:6.2f} {fl['F']:7.2f} {fl['C']:6.2f} "
          f"{fl['T']:6.2f} {fl['L']:6.2f} {t_fit / floor:9.2f} {(t_fit + t_cov) / floor:15.2f} "
          f"{bound:>9} {flops:>9} {row['hvp']:4d} {row['n_eval']:4d} {row['n_fisher']:2d} "
          f"{cg:6.2f} {other:6.2f} {row['t_to_sm']:6.2f} {row['vs']:>5} {row['se_rel']:8.1e} "
          f"{row['se_diag']:8.1e} {row['refine']:8.1e} {sm_r:>7} {sm_rc:>12} {rss:7.0f}",
          flush=True)
    own = inside["F"] + inside["C"]
    print(f"      inside the fastest fit (same moment, so less sensitive to the machine's load): "
          f"F {inside['F']:.2f} s, C {inside['C']:.2f} s (with the copy of the upper "
          f"triangle), T {inside['T']:.2f} s, the rest {t_fit - own - inside['T']:.2f} s; "
          f"fit / its own F + C = {t_fit / own:.2f}, (fit+cov) / its own F + C = "
          f"{(t_fit + t_cov) / own:.2f}", flush=True)
    print(f"      one HVP {fl['hvp'] * 1e3:.1f} ms, one score pass {fl['vg'] * 1e3:.1f} ms; "
          f"the refit's acceptance check of this fit {row['t_acc']:.2f} s "
          f"({row['t_acc'] / floor:.3f} floor); plan: {row['plan']}", flush=True)
    if stacked:
        t_f0 = stacked_seconds(x, params)
        print(f"      reference: the earlier stacked build F0 = {t_f0:.2f} s; "
              f"(fit+cov)/(F0 + C) = {(t_fit + t_cov) / (t_f0 + fl['C']):.2f}", flush=True)


def acceptance_seconds(res, x, y) -> float:
    """What the refit's maximum-likelihood estimator adds to the engine's fit to accept it
    (``glminterp.refit.acceptance.check_optimum`` with the fit's information, as
    ``refit.estimators.ml`` calls it, and the stable log-likelihood it is given)."""
    from glminterp.refit import acceptance as acc
    from glminterp.refit import likelihood as lk

    codes, _ = E.encode_classes(y)
    counts = np.bincount(codes)
    llnull = float(np.sum(counts * np.log(counts / counts.sum())))
    x1 = E.add_const(x)  # the refit model holds the design with its intercept column
    beta = np.asarray(res.params)

    def run():
        llf = lk.loglik_multinomial(x1, codes, beta)
        return acc.check_optimum("multinomial", x1, codes, beta, llf, llnull, res.fisher,
                                 info_factored=True)

    verdict, t = timed(run)
    if not verdict.acceptable:
        raise RuntimeError(f"the acceptance rejects the fit: {verdict.reason}")
    return t


def _checks(res, x, y, p, sm_max_p, dense_max_p) -> dict:
    """SE agreement (statsmodels / getri), the SEs against the formed covariance's diagonal,
    one refinement step, and the hand-over to statsmodels."""
    t_sm_out = float("nan")
    if p <= 1024:
        out, t_sm_out = timed(lambda: res.to_statsmodels(x, y))
        del out
    t_acc = acceptance_seconds(res, x, y)
    vs, se_rel, t_own = _se_checks(res, x, y, p, sm_max_p, dense_max_p)
    se_diag = float(np.max(np.abs(res.bse.ravel(order="F") / np.sqrt(np.diag(res.cov)) - 1)))
    return {"t_to_sm": t_sm_out, "t_acc": t_acc, "vs": vs, "se_rel": se_rel, "t_sm": t_own,
            "se_diag": se_diag, "refine": refined_se_rel(res), "hvp": res.n_hvp,
            "n_fisher": res.n_fisher, "n_eval": res.plan.get("n_eval", 0), "plan": res.plan}


def section_rows(ns, p=256, k=10) -> None:
    print(f"rows: p={p}, K={k}, engine fit_multinomial (auto = newton-cg), full covariance "
          "formed (res.cov) inside the timing; peak RSS of each fit")
    print(f"{'N':>7} {'fit s':>8} {'us/row':>8} {'iter':>5} {'HVP':>4} {'H':>2} {'RSS MB':>7}")
    for n in ns:
        x, y = simulate(n, p, k)
        reset_peak_rss()
        res, t = timed(lambda x=x, y=y: (r := E.fit_multinomial(x, y), r.cov)[0])
        print(f"{n:7d} {t:8.2f} {t / n * 1e6:8.1f} {res.n_iter:5d} {res.n_hvp:4d} "
              f"{res.n_fisher:2d} {peak_rss_mb():7.0f}", flush=True)
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
    ap.add_argument("--signal", type=float, default=1.0,
                    help="scale of the simulated design's true coefficients (full): 1 = the "
                         "shared design, 0 = labels independent of the units")
    ap.add_argument("--repeat", type=int, default=2, help="best of N fits/floors (p <= 1024)")
    ap.add_argument("--sm-max-p", type=int, default=256,
                    help="largest p at which statsmodels MNLogit is also fitted (full)")
    ap.add_argument("--no-stacked", action="store_true",
                    help="skip the reference timing of the earlier stacked build (full)")
    ap.add_argument("--dense-max-p", type=int, default=1024,
                    help="largest p whose SEs are also checked against np.linalg.inv (full)")
    args = ap.parse_args(argv)
    global _clock
    if args.cpu_time:
        _clock = time.process_time
    if args.section == "full":
        print(f"times: {'CPU' if args.cpu_time else 'wall'} seconds")
        section_full(args.p, n=(args.n or [10_000])[0], sm_max_p=args.sm_max_p,
                     dense_max_p=args.dense_max_p, repeat=args.repeat,
                     stacked=not args.no_stacked, signal=args.signal)
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
