"""The default simultaneous band (``band="cells"``): brute force with the same draws, the
containment of the pixel band, coverage of a known truth, determinism and model state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import glminterp.maps.cam_uncertainty as cu
from glminterp.maps.cam import class_activation_maps


class MapsGap(nn.Module):
    """The CAM layer is the ReLU of the input average-pooled by ``down``: known feature maps,
    upsampled back to the input by the CAM."""

    def __init__(self, p: int, k: int, down: int = 3) -> None:
        super().__init__()
        self.down = nn.AvgPool2d(down)
        self.relu = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(p, k)

    def forward(self, x):
        return self.fc(self.flatten(self.gap(self.relu(self.down(x)))))


def _covs(rng, p: int, n_cls: int, rank=None) -> np.ndarray:
    root = rng.normal(size=(n_cls, p + 1, p + 1))
    for c, rk in enumerate(rank or ()):
        if rk is not None:
            root[c, :, rk:] = 0.0  # a covariance of rank rk
    return root @ root.transpose(0, 2, 1) * 0.05


def _brute_force(acts, cov, share, seed, col, n_sim, alpha):
    """Cell band by hand: the cells' covariance A' Sigma A, its loadings, every draw."""
    n, p, h, w = acts.shape
    a = np.concatenate([np.full((n, 1, h, w), share), acts], axis=1).reshape(n, p + 1, h * w)
    s = np.einsum("nkc,kl,nld->ncd", a, cov, a)  # (n, hw, hw), no factor of Sigma involved
    se = np.sqrt(np.einsum("ncc->nc", s))
    try:
        fac = np.linalg.cholesky((cov + cov.T) / 2).T
    except np.linalg.LinAlgError:
        fac = cu.sqrt_factor(cov)
    r = fac.shape[0]
    if r <= h * w:  # draws in coefficient space: the field is A' R' e
        load = np.einsum("rk,nkc->ncr", fac, a)
    else:  # draws in cell space: the Cholesky factor of the cells' covariance
        load = np.linalg.cholesky(s)
    k = load.shape[2]
    g = np.random.default_rng([seed, col]).standard_normal((n_sim, k))
    zeta = np.einsum("nck,sk->nsc", load / se[:, :, None], g)
    thr = np.quantile(np.abs(zeta).max(axis=2), 1 - alpha, axis=1)
    return thr, se.reshape(n, h, w)


@pytest.mark.parametrize(("p", "rank", "share", "lo"), [
    (6, None, 0.0, (4, 5)),   # p + 1 <= h w: coefficient-space draws
    (30, None, 1.0, (4, 4)),  # p + 1 > h w: Cholesky of the cells' covariance
    (5, (2, None), 0.0, (3, 3)),  # a rank-2 covariance (eigen-square-root factor)
])
def test_cell_threshold_equals_brute_force_with_the_same_draws(p, rank, share, lo):
    rng = np.random.default_rng(p + lo[0])
    model = MapsGap(p, 2).eval()
    size = (3 * lo[0] + 1, 3 * lo[1] + 2)
    x = torch.from_numpy(np.abs(rng.normal(1.0, 0.7, (5, p, *size)))).float()
    coefs = rng.normal(size=(p + 1, 2))
    covs = _covs(rng, p, 2, rank)
    intercept = "spread" if share else "exclude"
    r = class_activation_maps(model, x, layer="relu",
                              coefficients=(coefs, covs), parametrization="network",
                              intercept=intercept, n_sim=700, seed=9, alpha=0.1)
    acts = np.asarray(r.activations)
    assert r.band == "cells" and acts.shape[-2:] == lo
    uy, ux = (cu.interp_matrix(m, big).numpy() for m, big in zip(lo, size))
    for c in range(2):
        thr, se_cells = _brute_force(acts, covs[c], share, 9, c, 700, 0.1)
        np.testing.assert_allclose(r.sim_threshold[:, c], thr, rtol=2e-5)
        band = np.einsum("Hh,nhw,Ww->nHW", uy, se_cells, ux)
        np.testing.assert_allclose(r.band_se[:, c], band, rtol=1e-10)
        np.testing.assert_array_equal(
            r.mask_simultaneous[:, c],
            (np.abs(r.raw[:, c]) > r.sim_threshold[:, c, None, None] * r.band_se[:, c])
            & (r.band_se[:, c] > 0))
    # the cell band is never inside the pointwise one's complement: sim mask <= pointwise mask
    assert (r.sim_threshold > stats.norm.ppf(0.95)).all()
    assert (r.mask_simultaneous <= r.mask_pointwise).all()


@pytest.mark.parametrize(("lo", "hi"), [((7, 7), (28, 28)), ((5, 3), (16, 10)), ((4, 6), (13, 21)),
                                        ((1, 4), (5, 11)), ((6, 5), (4, 3))])
def test_pixel_band_contains_every_interpolated_deviation(lo, hi):
    # the containment argument, draw by draw: with deviations d_c at the cells,
    # max_u |U d|(u) / (U se)(u) <= max_c |d_c| / se_c, and U se >= the exact pixel SE
    rng = np.random.default_rng(sum(lo) + sum(hi))
    v = torch.from_numpy(np.abs(rng.normal(size=(3, *lo, 8))) + 0.5 * rng.normal(size=(3, *lo, 8)))
    uy, ux = cu.interp_matrix(lo[0], hi[0]), cu.interp_matrix(lo[1], hi[1])
    se_cells = torch.linalg.vector_norm(v, dim=3)
    band = cu.upsample_cells(se_cells, uy, ux)
    se_pix = cu.direct_upsampled_se(v, hi)
    assert (band >= se_pix * (1 - 1e-12)).all()
    e = torch.from_numpy(rng.standard_normal((8, 4000)))
    d = torch.einsum("nhwr,rs->nshw", v, e)  # deviations of 4000 draws at the cells
    cell_max = (d.abs() / se_cells[:, None]).amax(dim=(2, 3))
    pix = torch.matmul(uy, torch.matmul(d, ux.T))  # the upsampled deviations
    pix_max = (pix.abs() / band[:, None]).amax(dim=(2, 3))
    assert (pix_max <= cell_max * (1 + 1e-12)).all()
    # hence the cell band's coverage event implies the pixel band's, at any threshold
    for t in (1.5, 2.5, 3.0):
        assert ((cell_max <= t) <= (pix_max <= t)).all()


def test_threshold_independent_of_output_size_and_masks_at_the_cells():
    rng = np.random.default_rng(4)
    p = 6
    model = MapsGap(p, 3, down=4).eval()
    x = torch.from_numpy(np.abs(rng.normal(1.0, 0.5, (4, p, 20, 20)))).float()
    kw = dict(layer="relu", coefficients=(rng.normal(size=(p + 1, 3)), _covs(rng, p, 3)),
              parametrization="network", n_sim=500)
    low = class_activation_maps(model, x, upsample=False, **kw)
    big = class_activation_maps(model, x, **kw)
    assert low.raw.shape[-2:] == (5, 5) and big.raw.shape[-2:] == (20, 20)
    np.testing.assert_array_equal(low.sim_threshold, big.sim_threshold)
    # at feature resolution the band scale is the SE: the mask is |z| > threshold
    np.testing.assert_allclose(low.band_se, low.se, rtol=1e-12)
    np.testing.assert_array_equal(low.mask_simultaneous,
                                  np.abs(low.z) > low.sim_threshold[:, :, None, None])


def test_cell_band_deterministic_and_chunk_invariant(monkeypatch):
    rng = np.random.default_rng(2)
    p = 30  # wider than the 16 cells: cell-space draws
    model = MapsGap(p, 3).eval()
    x = torch.from_numpy(np.abs(rng.normal(1.0, 0.5, (7, p, 12, 12)))).float()
    kw = dict(layer="relu", coefficients=(rng.normal(size=(p + 1, 3)), _covs(rng, p, 3)),
              parametrization="network", n_sim=300, seed=5)
    one = class_activation_maps(model, x, **kw)
    again = class_activation_maps(model, x, batch_size=2, **kw)
    monkeypatch.setattr(cu, "_SE_CHUNK_BYTES", 1)  # one image per block
    monkeypatch.setattr(cu, "_TRI_BLOCK", 7)
    many = class_activation_maps(model, x, **kw)
    for other in (again, many):
        np.testing.assert_array_equal(one.sim_threshold, other.sim_threshold)
        np.testing.assert_allclose(one.se, other.se, rtol=1e-12)
        np.testing.assert_allclose(one.band_se, other.band_se, rtol=1e-12)


def test_cell_channels_triangular_blocks_equal_dense_product(monkeypatch):
    rng = np.random.default_rng(1)
    cov = _covs(rng, 40, 1)[0]
    fac = torch.from_numpy(cu.cov_factor(cov))
    assert not torch.tril(fac, -1).any()  # Cholesky: upper triangular, R'R = cov
    np.testing.assert_allclose(fac.T @ fac, cov, rtol=1e-10, atol=1e-10)
    cells = torch.from_numpy(rng.normal(size=(50, 40)))
    monkeypatch.setattr(cu, "_TRI_BLOCK", 9)
    dense = cells @ fac[:, 1:].T + 0.7 * fac[:, 0]
    got = cu.cell_channels(cells.T.contiguous(), fac, 0.7).T
    np.testing.assert_allclose(got, dense, rtol=1e-12, atol=1e-12)


def test_band_option_is_checked():
    model = MapsGap(2, 2).eval()
    x = torch.rand(1, 2, 6, 6)
    with pytest.raises(ValueError, match="band='grid'; use one of"):
        class_activation_maps(model, x, layer="relu", band="grid",
                              coefficients=(np.ones((3, 2)), np.stack([np.eye(3)] * 2)))


def test_default_call_leaves_the_model_as_found():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).train()
    model[1].running_mean.uniform_(-0.2, 0.2)
    model[0].weight.requires_grad_(False)
    before = {k: t.clone() for k, t in model.state_dict().items()}
    rng = np.random.default_rng(0)
    r = class_activation_maps(model, torch.rand(3, 1, 8, 8), layer="2", n_sim=200,
                              coefficients=(rng.normal(size=(7, 3)), _covs(rng, 6, 3)))
    assert r.sim_threshold.shape == (3, 3)
    assert model.training and not model[0].weight.requires_grad
    for k, t in model.state_dict().items():
        assert torch.equal(t, before[k]), k
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _coverage_replicate(rng, model, x, beta, covs, band):
    """One Gaussian estimate beta_hat ~ N(beta, Sigma): does each band cover the truth?

    ``cells``: at feature resolution; ``pixels``: the upsampled maps (same seed, so the same
    threshold)."""
    root = np.linalg.cholesky(covs)  # (K, p + 1, p + 1)
    beta_hat = beta + np.einsum("ckl,lc->kc", root, rng.standard_normal(beta.shape))
    seed = int(rng.integers(2**31))
    out = {}
    for upsample in (False, True):
        r = class_activation_maps(model, x, layer="relu", coefficients=(beta_hat, covs),
                                  parametrization="network", normalize=None, upsample=upsample,
                                  band=band, n_sim=2000, seed=seed)
        true = class_activation_maps(model, x, layer="relu", coefficients=beta,
                                     parametrization="network", normalize=None,
                                     upsample=upsample).raw
        dev = (np.abs(r.raw - true) / r.band_se).max(axis=(2, 3))
        out["pixels" if upsample else "cells"] = dev <= r.sim_threshold
    return out


@pytest.mark.slow
def test_cell_band_covers_a_known_truth():
    # beta_hat exactly Gaussian with the covariance the band uses: no Wald error, so the
    # cell band covers with probability 0.95 up to the threshold's Monte-Carlo error
    # (expected (0.95 (n - 1) + 1) / (n + 1) = 0.9498 at n = 2000), the pixel band at least that
    rng = np.random.default_rng(11)
    p, k, reps = 5, 2, 300
    model = MapsGap(p, k).eval()
    x = torch.from_numpy(np.abs(rng.normal(1.0, 0.6, (4, p, 13, 13)))).float()
    beta = rng.normal(size=(p + 1, k))
    cov = _covs(rng, p, k) * 0.4
    hits = {"cells": [], "pixels": []}
    for _ in range(reps):
        rep = _coverage_replicate(rng, model, x, beta, cov, "cells")
        for key in hits:
            hits[key].append(rep[key].mean())
        assert (rep["cells"] <= rep["pixels"]).all()  # containment, replicate by replicate
    cells, pixels = np.array(hits["cells"]), np.array(hits["pixels"])
    se = cells.std(ddof=1) / np.sqrt(reps)
    assert abs(cells.mean() - 0.9498) < 3 * se + 0.005, (cells.mean(), se)
    assert pixels.mean() >= cells.mean()


@pytest.mark.parametrize("tri", [False, True])
@pytest.mark.parametrize(("n_sim", "alpha"), [(1, 0.05), (7, 0.05), (97, 0.2), (2000, 0.05)])
def test_cell_thresholds_equal_the_quantile_of_every_draw(tri, n_sim, alpha):
    rng = np.random.default_rng(n_sim + tri)
    z = torch.from_numpy(rng.normal(size=(4, 12, 12))).float()
    if tri:
        z = torch.tril(z)  # Cholesky loadings: the two-block product
    z[1, 3] = 0.0  # a cell without uncertainty
    draws = torch.from_numpy(rng.standard_normal((12, n_sim))).float()
    got = cu.cell_thresholds(z, draws, alpha)
    ref = torch.quantile((z.double() @ draws.double()).abs().amax(1), 1 - alpha, dim=1)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
