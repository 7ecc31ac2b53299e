"""The default refit path (no engine argument) on simulated ReLU activations with a known truth.

For each design the network's head *is* the true coefficient matrix, and one unit has no effect.
Over ``--reps`` replicates it counts failures (any exception: there should be none on these
overlapping data), the coverage of the nominal 95% Wald intervals, the type-I error of the
per-unit joint Wald test for the null unit, and the type-I error of the agreement test (the
likelihood-ratio default and the Wald beside it). Expected: 0 failures, coverage 94-96%,
type-I errors near 5% (Monte-Carlo s.e. ~1% at 500 replicates).

Run: ``.venv/bin/python benchmarks/default_path_simulation.py [--reps 500] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_glm_synth import make_acts  # noqa: E402

import glminterp as gi  # noqa: E402

#: name -> (truth (p + 1, K) with the intercept first; K = 1 means a sigmoid head), n rows
DESIGNS = {
    "multinomial_K3_p4_n600": (np.array([[0.0, -0.3, 0.2], [0.0, 0.8, -0.5], [0.0, -0.6, 0.7],
                                         [0.0, 0.4, 0.3], [0.0, 0.0, 0.0]]), 600),
    "binomial_p4_n500": (np.array([[-0.8], [0.9], [-0.7], [0.5], [0.0]]), 500),
}


def relu_design(rng, n: int, p: int) -> np.ndarray:
    """Non-negative, skewed unit activations (a ReLU of shifted normals)."""
    return np.maximum(rng.standard_normal((n, p)) + 0.3, 0.0) * 1.5


def simulate(rng, truth: np.ndarray, n: int):
    x = relu_design(rng, n, truth.shape[0] - 1)
    eta = np.column_stack([np.ones(n), x]) @ truth
    if truth.shape[1] == 1:
        y = (rng.random(n) < 1 / (1 + np.exp(-eta[:, 0]))).astype(int)
        return x, y, make_acts(x, y, truth[1:].T, truth[0], link="sigmoid", n_outputs=1)
    prob = np.exp(eta - eta.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    y = (rng.random(n)[:, None] > np.cumsum(prob, axis=1)).sum(axis=1)
    y = np.minimum(y, truth.shape[1] - 1)
    return x, y, make_acts(x, y, truth[1:].T, truth[0])


def one_design(name: str, truth: np.ndarray, n: int, reps: int, seed: int) -> dict:
    rng = np.random.default_rng([seed, len(name)])
    target = truth if truth.shape[1] == 1 else truth[:, 1:] - truth[:, :1]
    null_unit = f"h:{truth.shape[0] - 2:03d}"
    cover, n_ci, unit_rej, lr_rej, wald_rej, failed, t0 = 0, 0, 0, 0, 0, 0, time.perf_counter()
    for _ in range(reps):
        _, _, acts = simulate(rng, truth, n)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = gi.refit_output_layer(acts, progress=False)
        except Exception:  # noqa: BLE001 - counting failures is the point
            failed += 1
            continue
        tab = res.coefficients
        t = target.ravel(order="F")
        cover += int(((tab["ci_lower"] <= t) & (t <= tab["ci_upper"])).sum())
        n_ci += len(t)
        ut = res.unit_tests.set_index("unit")
        unit_rej += int(ut.loc[null_unit, "p"] < 0.05)
        ag = res.agreement_test
        lr_rej += int(ag["p_value"] < 0.05)
        wald_rej += int(ag["wald_p_value"] < 0.05)
    ok = reps - failed
    return {"design": name, "reps": reps, "failures": failed,
            "coverage": cover / max(n_ci, 1), "unit_test_type1": unit_rej / max(ok, 1),
            "agreement_lr_type1": lr_rej / max(ok, 1),
            "agreement_wald_type1": wald_rej / max(ok, 1),
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = pd.DataFrame([one_design(k, t, n, args.reps, args.seed)
                        for k, (t, n) in DESIGNS.items()])
    print(out.to_string(index=False))
    print(json.dumps(out.to_dict(orient="records")))
    return out


if __name__ == "__main__":
    main()
