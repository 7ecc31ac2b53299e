"""Coverage of the refit's nominal 95% Wald intervals when the truth is a known multinomial GLM.

Rows are simulated from a multinomial logit with known coefficients, refitted with
:func:`glminterp.refit_output_layer` (the full pipeline: checks, separation LP, MNLogit), and the
share of intervals covering the truth is counted, per parametrization and covariance type.
Expected: 94-96% for every cell at these sample sizes (EPP >= 30).

Run: ``.venv/bin/python benchmarks/coverage_simulation.py [--reps 1000] [--seed 0]``.
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
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_glm_synth import make_acts, simulate_multinomial  # noqa: E402

import glminterp as gi  # noqa: E402

DESIGNS = {
    "K3_p2_n400": (np.array([[0.0, 0.4, -0.3], [0.0, 0.8, -0.6], [0.0, -0.5, 0.7]]), 400),
    "K4_p4_n800": (
        np.array(
            [
                [0.0, 0.3, -0.2, 0.1],
                [0.0, 0.7, -0.5, 0.2],
                [0.0, -0.4, 0.6, -0.3],
                [0.0, 0.0, 0.3, 0.5],
                [0.0, 0.5, 0.0, -0.6],
            ]
        ),
        800,
    ),
}


def run(reps: int, seed: int) -> pd.DataFrame:
    rows = []
    for name, (truth, n) in DESIGNS.items():
        rng = np.random.default_rng([seed, len(name)])
        t_ref = (truth[:, 1:] - truth[:, :1]).ravel("F")
        t_stz = (truth - truth.mean(axis=1, keepdims=True)).ravel("F")
        hits = {key: 0 for key in ("reference/nonrobust", "sum_to_zero/nonrobust", "reference/HC0")}
        counts = dict.fromkeys(hits, 0)
        for _ in tqdm(range(reps), desc=name):
            x, y = simulate_multinomial(rng, n, truth)
            acts = make_acts(x, y)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = gi.refit_output_layer(acts, progress=False)
                hc0 = gi.refit_output_layer(acts, cov_type="HC0", progress=False)
            for key, r, par, t in (
                ("reference/nonrobust", res, "reference", t_ref),
                ("sum_to_zero/nonrobust", res, "sum_to_zero", t_stz),
                ("reference/HC0", hc0, "reference", t_ref),
            ):
                b = r.params(par).to_numpy().ravel("F")
                se = np.sqrt(np.diag(r.cov_params(par).to_numpy()))
                hits[key] += int((np.abs(b - t) <= 1.959963984540054 * se).sum())
                counts[key] += b.size
        for key in hits:
            cov = hits[key] / counts[key]
            rows.append({"design": name, "intervals": key, "replicates": reps,
                         "n_intervals": counts[key], "coverage": cov,
                         "mc_se": float(np.sqrt(cov * (1 - cov) / counts[key]))})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="optional JSON output path")
    a = ap.parse_args()
    t0 = time.perf_counter()
    table = run(a.reps, a.seed)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    ok = table["coverage"].between(0.94, 0.96).all()
    print(f"all cells within 94-96%: {ok}  ({time.perf_counter() - t0:.0f} s)")
    if a.out is not None:
        a.out.write_text(json.dumps(table.to_dict(orient="records"), indent=1))


if __name__ == "__main__":
    main()
