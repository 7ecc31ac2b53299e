"""Ridge and PCA refits at head size: time and peak memory of the public calls (one BLAS thread).

    python benchmarks/remedies.py            # N=10,000, p=512, K=10 (about a minute)
    python benchmarks/remedies.py --small    # N=1,500, p=64, K=10 (seconds)

Times ``glminterp.penalized.fit_ridge`` (multinomial, lam=1, sandwich covariance) and
``fit_pca`` (50 components), each with all its checks, beside the MLE fit
(``glminterp.engine.fit_multinomial``) on the same data as a baseline measured in the same run.
Peak memory is the process's resident-set high-water mark growth during the call (Linux
``ru_maxrss``) plus tracemalloc's peak of Python allocations.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
import tracemalloc
from pathlib import Path

from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from refit import simulate  # noqa: E402

from glminterp import engine as E  # noqa: E402
from glminterp.refit.penalized import fit_pca, fit_ridge  # noqa: E402


def measure(label: str, fn):
    gc.collect()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    sec = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    print(f"{label:34s} {sec:8.2f} s   traced peak {peak:7.0f} MB   RSS growth {rss:6.0f} MB")
    return out, sec


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true")
    args = ap.parse_args(argv)
    n, p, k = (1500, 64, 10) if args.small else (10_000, 512, 10)
    x, y = simulate(n, p, k)
    threadpool_limits(1)
    print(f"N={n}, p={p}, K={k}: {(p + 1) * (k - 1)} parameters")
    _, t_ml = measure("MLE engine.fit_multinomial", lambda: E.fit_multinomial(x, y))
    rr, t_r = measure("ridge fit_ridge(lam=1)", lambda: fit_ridge(x, y, lam=1.0))
    pr, t_p = measure("PCA fit_pca(n_components=50)", lambda: fit_pca(x, y, n_components=50))
    print(f"ridge converged={rr.converged} in {rr.n_iter} iterations; "
          f"ridge / MLE time {t_r / t_ml:.2f}; PCA / MLE time {t_p / t_ml:.2f}")


if __name__ == "__main__":
    main()
