"""Coverage of CAM bands: Monte-Carlo error of the simultaneous threshold vs small-sample Wald.

    python benchmarks/cam_band_coverage.py               # 200 replicates (~10 minutes)
    python benchmarks/cam_band_coverage.py --reps 100    # quick look

Simulation with a known beta, through the public calls. A GAP "network" whose CAM layer is its
input (``ReLU -> global average pool -> Linear``) makes the feature maps known: each image has
``p`` channel maps on an ``h x w`` grid; its pooled features are their means. Labels are drawn
from a multinomial logit with known reference coefficients ``beta`` on the pooled features of
``n`` rows; ``gi.refit_output_layer`` refits the head; ``class_activation_maps(model, images,
coefficients=refit)`` gives the maps, SEs and simultaneous thresholds on fixed test images, in
the sum-to-zero parametrization, at feature resolution (``intercept="exclude"``). The true map
of class ``c`` at location ``u`` is ``A(u)' gamma_c`` with ``gamma = beta C'``.

Per replicate and (image, class) the script records whether the true map is inside

- the pointwise band ``|raw - true| / se <= z_{0.975}`` at every location (averaged over
  locations): no simulation is involved, so its error is all small-sample Wald behaviour;
- the simultaneous band ``max_u |raw - true| / se <= t``, with ``t`` the simulated threshold
  at ``n_sim`` = 500, 1000, 2000 (the default), 5000 draws, and with the "oracle" threshold:
  the same simulation at 20,000 draws (the 0.95 quantile's probability has Monte-Carlo sd 0.0015 there).

The threshold's Monte-Carlo error can also be computed: given the covariance, the coverage of
the ``j``-th order statistic of ``n_sim`` draws has expectation ``j / (n_sim + 1)`` whatever the
distribution, and ``torch.quantile`` interpolates at ``j = 0.95 (n_sim - 1) + 1``; the script
prints that expected loss beside the measured one.

The difference between a simulated threshold's coverage and the oracle's is the Monte-Carlo
error of the threshold; the oracle's distance from 0.95 is the Wald (estimated covariance,
asymptotic normality) error, shown at growing ``n``. Standard errors are across replicates
(each replicate's coverage averaged over images and classes first).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import glminterp as gi  # noqa: E402
from glminterp.activations import Activations  # noqa: E402
from glminterp.head import Head, reference_to_sum_to_zero_map  # noqa: E402

N_SIMS = (500, 1000, 2000, 5000)
ORACLE_SIM = 20_000
Z = 1.959963984540054


class GapHead(nn.Module):
    """CAM layer = the (ReLU of the) input: the feature maps are the images themselves."""

    def __init__(self, p: int, k: int) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(p, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.relu(x))))


def images(rng: np.random.Generator, n: int, p: int, hw: int) -> np.ndarray:
    """Non-negative channel maps: a per-image channel intensity times a spatial pattern."""
    level = rng.exponential(1.0, (n, p, 1, 1))
    pattern = 1.0 + 0.6 * rng.standard_normal((n, p, hw, hw))
    return np.maximum(level * pattern, 0.0)


def truth(p: int, k: int) -> np.ndarray:
    """Reference coefficients ``(p + 1, K - 1)`` (intercept first), moderate effects."""
    rng = np.random.default_rng(123)
    beta = rng.normal(0.0, 0.6, (p + 1, k - 1))
    beta[0] = 0.0
    return beta


def make_acts(pooled: np.ndarray, y: np.ndarray, k: int) -> Activations:
    n, p = pooled.shape
    head = Head(name="fc", weight=np.zeros((k, p)), bias=np.zeros(k), link="softmax",
                link_source="benchmark", input_layer="relu", gap=True,
                classes=tuple(str(i) for i in range(k)))
    index = pd.Index([f"s{i:05d}" for i in range(n)], name="sample_id")
    features = pd.DataFrame(pooled, index=index, columns=[f"relu:c{j:02d}" for j in range(p)])
    obs = pd.DataFrame(index=index)
    obs["label"] = pd.array(y.astype(np.int64), dtype="Int64")
    obs["pred"] = 0
    obs["split"] = "refit"
    return Activations(features=features, obs=obs, head=head, layers=("relu",),
                       metadata={"pool": "avg"})


def replicate(seed: int, n: int, model, test_x, true_maps, beta, n_sims) -> dict[str, float]:
    """Coverages of one refit: pointwise, and simultaneous per threshold."""
    rng = np.random.default_rng(seed)
    x = images(rng, n, beta.shape[0] - 1, test_x.shape[-1])
    pooled = x.mean(axis=(2, 3))
    eta = np.column_stack([np.zeros(n), beta[0] + pooled @ beta[1:]])
    prob = np.exp(eta - eta.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    y = (prob.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refit = gi.refit_output_layer(make_acts(pooled, y, beta.shape[1] + 1), progress=False)
    out: dict[str, float] = {}
    for n_sim in n_sims:
        r = gi.class_activation_maps(model, test_x, coefficients=refit, layer="relu",
                                  parametrization="sum_to_zero", upsample=False, normalize=None,
                                  intercept="exclude", simultaneous=True, n_sim=n_sim, seed=seed)
        dev = np.abs(np.asarray(r.raw) - true_maps) / np.asarray(r.se)
        if "pointwise" not in out:
            out["pointwise"] = float(np.mean(dev <= Z))
        out[f"sim {n_sim}"] = float(np.mean(dev.max(axis=(2, 3)) <= np.asarray(r.sim_threshold)))
    return out


def run(n: int, reps: int, n_sims, p: int = 8, k: int = 4, hw: int = 5, n_test: int = 6):
    beta = truth(p, k)
    gamma = beta @ reference_to_sum_to_zero_map(k).T  # (p + 1, K)
    model = GapHead(p, k).eval()
    test = images(np.random.default_rng(999), n_test, p, hw)
    test_x = torch.from_numpy(test).float()
    # the CAM layer sees float32 activations: the truth uses the same rounding
    true_maps = np.einsum("npyx,pc->ncyx", test_x.double().numpy(), gamma[1:])
    del test
    rows = [replicate(s, n, model, test_x, true_maps, beta, n_sims) for s in range(reps)]
    return pd.DataFrame(rows)


def summary(df: pd.DataFrame) -> str:
    return ", ".join(f"{c} {df[c].mean():.4f} (se {df[c].std(ddof=1) / np.sqrt(len(df)):.4f})"
                     for c in df.columns)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--n", type=int, nargs="+", default=[300, 1000, 4000])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    sims = (*N_SIMS, ORACLE_SIM)
    for i, n in enumerate(args.n):
        t0 = time.perf_counter()
        df = run(n, args.reps, sims if i == 0 else (N_SIMS[-2], ORACLE_SIM))
        print(f"n={n}, {args.reps} replicates ({time.perf_counter() - t0:.0f} s): {summary(df)}")
        oracle = df[f"sim {ORACLE_SIM}"]
        for c in df.columns:
            if c.startswith("sim ") and c != f"sim {ORACLE_SIM}":
                d = df[c] - oracle  # paired: same refit, only the threshold's draws differ
                m = int(c[4:])
                expected = (0.95 * (m - 1) + 1) / (m + 1) - 0.95
                print(f"  Monte-Carlo error of the threshold at {m} draws: coverage "
                      f"{d.mean():+.4f} vs the oracle (se {d.std(ddof=1) / np.sqrt(len(d)):.4f}; "
                      f"expected from order statistics {expected:+.4f})")
        print(f"  Wald error: pointwise {df['pointwise'].mean() - 0.95:+.4f}, simultaneous "
              f"(oracle threshold) {oracle.mean() - 0.95:+.4f} vs 0.95")


if __name__ == "__main__":
    main()
