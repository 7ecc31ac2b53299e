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

With ``--up k`` (default 4) the same refits are also mapped onto test images upsampled ``k``
times (the network average-pools them back, so the feature maps are unchanged and the CAM is
bilinearly upsampled to the input), with both simultaneous bands at 2,000 draws:
``band="cells"`` (the default: the cells' threshold, ``band_se`` the interpolated cell SEs) and
``band="pixels"`` (the pixels' threshold with their exact SEs). Recorded: whether the upsampled
true map is inside each band at every pixel, and the mean ratio of the two half-widths
``t * band_se`` (cells / pixels).

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
    """CAM layer = the (ReLU of the) input: the feature maps are the images themselves.

    With ``up > 1`` the input is the maps repeated ``up x up`` times (nearest neighbour) and
    the network average-pools them back first, so the CAM is upsampled to the input."""

    def __init__(self, p: int, k: int, up: int = 1) -> None:
        super().__init__()
        self.down = nn.AvgPool2d(up) if up > 1 else nn.Identity()
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(p, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.relu(self.down(x)))))


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


def replicate(seed: int, n: int, model, test_x, true_maps, beta, n_sims,
              up_x=None, gamma=None) -> dict[str, float]:
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
    if up_x is not None:
        out |= _upsampled_bands(model, up_x, refit, seed, gamma)
    return out


def _upsampled_bands(model, up_x, refit, seed: int, gamma: np.ndarray) -> dict[str, float]:
    """Coverage of both simultaneous bands over the upsampled pixels, and their widths.

    The truth at a pixel is the upsampled true map (the interpolation of the true cell
    values), i.e. the CAM of the true coefficients through the same call."""
    true = gi.class_activation_maps(model, up_x, coefficients=gamma, layer="relu",
                                    parametrization="sum_to_zero", normalize=None).raw
    out, width = {}, {}
    for band in ("cells", "pixels"):
        r = gi.class_activation_maps(model, up_x, coefficients=refit, layer="relu",
                                     parametrization="sum_to_zero", normalize=None,
                                     band=band, n_sim=2000, seed=seed)
        dev = (np.abs(np.asarray(r.raw) - true) / np.asarray(r.band_se)).max(axis=(2, 3))
        out[f"{band} band @pixels"] = float(np.mean(dev <= np.asarray(r.sim_threshold)))
        width[band] = np.asarray(r.sim_threshold)[:, :, None, None] * np.asarray(r.band_se)
    out["width cells / pixels"] = float(np.mean(width["cells"] / width["pixels"]))
    return out



def run(n: int, reps: int, n_sims, p: int = 8, k: int = 4, hw: int = 5, n_test: int = 6,
        up: int = 1):
    """Replicates as rows. ``up > 1`` adds both bands' coverage over the maps upsampled
    ``up`` times (and the mean ratio of their half-widths)."""
    beta = truth(p, k)
    gamma = beta @ reference_to_sum_to_zero_map(k).T  # (p + 1, K)
    model = GapHead(p, k).eval()
    test = images(np.random.default_rng(999), n_test, p, hw)
    test_x = torch.from_numpy(test).float()
    # the CAM layer sees float32 activations: the truth uses the same rounding
    true_maps = np.einsum("npyx,pc->ncyx", test_x.double().numpy(), gamma[1:])
    del test
    up_model, up_x = model, None
    if up > 1:
        up_model = GapHead(p, k, up).eval()
        up_model.load_state_dict(model.state_dict())
        up_x = test_x.repeat_interleave(up, 2).repeat_interleave(up, 3)
    rows = [replicate(s, n, up_model if up > 1 else model, test_x if up == 1 else up_x,
                      true_maps, beta, n_sims, up_x, gamma) for s in range(reps)]
    return pd.DataFrame(rows)


def summary(df: pd.DataFrame) -> str:
    return ", ".join(f"{c} {df[c].mean():.4f} (se {df[c].std(ddof=1) / np.sqrt(len(df)):.4f})"
                     for c in df.columns)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--n", type=int, nargs="+", default=[300, 1000, 4000])
    ap.add_argument("--up", type=int, default=4,
                    help="also cover the maps upsampled this many times with both bands "
                         "(cells, the default, and pixels); 1: feature resolution only")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    sims = (*N_SIMS, ORACLE_SIM)
    for i, n in enumerate(args.n):
        t0 = time.perf_counter()
        df = run(n, args.reps, sims if i == 0 else (N_SIMS[-2], ORACLE_SIM), up=args.up)
        print(f"n={n}, {args.reps} replicates ({time.perf_counter() - t0:.0f} s): {summary(df)}")
        oracle = df[f"sim {ORACLE_SIM}"]
        for c in df.columns:
            if c.startswith("sim ") and c != f"sim {ORACLE_SIM}" and " @" not in c:
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
