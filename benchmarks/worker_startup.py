"""Dask worker start-up: what a worker imports to run the refit kernels, in time and memory.

Each row imports modules in a fresh interpreter (as a new Dask worker process does) and prints
the import time, the process's peak resident memory (``ru_maxrss``) and whether torch was
loaded. ``import torch`` alone is the reference: a worker that imported glminterp's kernels
through torch paid at least that. ``--root`` points the probes at another checkout (e.g. the
one before a change) so that before/after are measured side by side in one run.

The last row starts a ``LocalCluster`` with one worker *process*, runs a small Dask refit
(:func:`glminterp.scale.dask_fit_multinomial`) on it and reports what the worker then holds:
torch must not be among its modules.

Usage: ``python benchmarks/worker_startup.py [--root PATH ...] [--repeats 3] [--no-cluster]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
import json, resource, sys, time
t = time.perf_counter()
{imports}
dt = time.perf_counter() - t
print(json.dumps({{"s": dt, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "torch": "torch" in sys.modules}}))
"""

ROWS = [
    ("python alone", "pass"),
    ("glminterp.scale (Dask/Parquet kernels)", "import glminterp.scale"),
    ("glminterp.refit (results classes)", "import glminterp.refit"),
    ("refit + scale + engine", "import glminterp.refit, glminterp.scale, glminterp.engine"),
    ("reference: import torch", "import torch"),
]


def probe(imports: str, root: Path, repeats: int) -> dict:
    """Best-of-``repeats`` import time; peak RSS and torch flag of the last run."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    best = None
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", _PROBE.format(imports=imports)],
                             capture_output=True, text=True, env=env, cwd=root, check=True)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        if best is None or got["s"] < best["s"]:
            best = got
    return best


def cluster_row() -> None:
    """A Dask refit on a one-process LocalCluster; what the worker imported."""
    import numpy as np
    from dask.distributed import Client, LocalCluster

    from glminterp.scale import dask_fit_multinomial

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 8))
    y = (x[:, 0] + rng.normal(size=2000) > 0).astype(int) + (x[:, 1] > 1)
    t0 = time.perf_counter()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        up = time.perf_counter() - t0
        t1 = time.perf_counter()
        res = dask_fit_multinomial(x, y, client=client)
        fit = time.perf_counter() - t1
        state = client.run(lambda: {
            "torch": "torch" in sys.modules,
            "glminterp": sorted(m for m in sys.modules if m.startswith("glminterp")),
            "rss_mb": __import__("resource").getrusage(0).ru_maxrss / 1024,
        })
    (worker,) = state.values()
    print(f"LocalCluster (1 worker process) up in {up:.1f} s; first Dask refit {fit:.1f} s "
          f"(converged {res.converged}); worker peak RSS {worker['rss_mb']:.0f} MB, torch "
          f"loaded on the worker: {worker['torch']}; glminterp modules there: "
          f"{', '.join(worker['glminterp'])}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, nargs="*", default=[ROOT],
                    help="checkouts to probe (default: this one)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-cluster", action="store_true")
    args = ap.parse_args(argv)
    print(f"fresh interpreter per row, best of {args.repeats}: import seconds, peak RSS MB, "
          "torch loaded")
    for root in args.root:
        print(f"checkout {root}")
        base = None
        for label, imports in ROWS:
            got = probe(imports, root, args.repeats)
            base = got if base is None else base
            print(f"  {label:<42} {got['s']:6.2f} s {got['rss_mb']:7.0f} MB "
                  f"(+{got['rss_mb'] - base['rss_mb']:4.0f})  torch={got['torch']}")
    if not args.no_cluster:
        cluster_row()


if __name__ == "__main__":
    main()
