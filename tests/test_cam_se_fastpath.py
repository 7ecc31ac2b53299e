"""The fast exact SE / simultaneous threshold of upsampled CAMs against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import glminterp.maps.cam_uncertainty as cu
from glminterp.maps.cam import class_activation_maps

SIZES = [((7, 7), (28, 28)), ((5, 3), (15, 9)), ((4, 6), (13, 21)), ((1, 4), (5, 11)),
         ((3, 1), (9, 2)), ((6, 6), (6, 6)), ((8, 5), (4, 3))]


@pytest.mark.parametrize(("lo", "hi"), SIZES)
def test_interp_matrix_has_two_adjacent_taps_and_matches_interpolate(lo, hi):
    # the quadratic formula is exact only for rows with <= 2 adjacent non-zero taps
    for n_in, n_out in zip(lo, hi):
        u = cu.interp_matrix(n_in, n_out)
        for row in u.numpy():
            nz = np.flatnonzero(row)
            assert 1 <= len(nz) <= 2 and (len(nz) == 1 or nz[1] == nz[0] + 1)
            assert row.sum() == pytest.approx(1.0, abs=1e-15)
    x = torch.randn(2, 3, *lo, dtype=torch.float64)
    ref = F.interpolate(x, size=hi, mode="bilinear", align_corners=False)
    uy, ux = cu.interp_matrix(lo[0], hi[0]), cu.interp_matrix(lo[1], hi[1])
    np.testing.assert_allclose(uy @ x @ ux.T, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("lo", "hi"), SIZES)
def test_quadratic_upsample_equals_direct(lo, hi):
    rng = np.random.default_rng(sum(lo) * 31 + sum(hi))
    v = torch.from_numpy(rng.normal(size=(3, *lo, 5)))
    wy = cu.quadratic_weights(cu.interp_matrix(lo[0], hi[0]))
    wx = cu.quadratic_weights(cu.interp_matrix(lo[1], hi[1]))
    fast = cu.quadratic_upsample(v, wy, wx).sqrt()
    direct = cu.direct_upsampled_se(v, hi)
    # fully independent: interpolate every factor channel with F.interpolate, then the norm
    up = F.interpolate(v.permute(0, 3, 1, 2), size=hi, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(fast, direct, rtol=1e-9)
    np.testing.assert_allclose(fast, up.norm(dim=1), rtol=1e-9)


def _gap_model(p: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, p, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(3),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(p, 3),
    )


@pytest.mark.parametrize("intercept", ["exclude", "spread"])
@pytest.mark.parametrize("size", [(15, 15), (17, 11)])
def test_cam_se_and_threshold_equal_slow_path(intercept, size):
    # maxpool(3) makes odd upsampling factors (15 -> 5, 17x11 -> 5x3); one class rank-deficient
    p = 4
    model = _gap_model(p)
    x = torch.rand(6, 1, *size)
    rng = np.random.default_rng(5)
    coefs = rng.normal(size=(p + 1, 3))
    root = rng.normal(size=(3, p + 1, p + 1))
    root[1, :, 3:] = 0.0  # rank 3
    covs = root @ root.transpose(0, 2, 1) * 0.1
    r = class_activation_maps(model, x, coefficients=(coefs, covs), parametrization="network",
                              intercept=intercept, n_sim=300, seed=4, band="pixels")
    acts = torch.from_numpy(np.array(r.activations))
    assert acts.shape[-2:] == (size[0] // 3, size[1] // 3)
    share = 1.0 if intercept == "spread" else 0.0
    for c in range(3):
        fac = torch.from_numpy(cu.sqrt_factor(covs[c]))
        assert fac.shape[0] == (3 if c == 1 else p + 1)
        v = torch.einsum("rk,nkhw->nhwr", fac[:, 1:], acts) + share * fac[:, 0]
        se = cu.direct_upsampled_se(v, size)
        np.testing.assert_allclose(r.se[:, c], se, rtol=1e-9)
        # the simultaneous threshold by the pre-fast-path algorithm: upsample all factor
        # channels, normalise, one product with the same seeded draws
        q = F.interpolate(v.permute(0, 3, 1, 2), size=size, mode="bilinear",
                          align_corners=False).permute(0, 2, 3, 1)
        qn = (q / se[..., None]).float().flatten(1, 2)
        u = np.random.default_rng([4, c]).standard_normal((300, fac.shape[0]))
        zmax = torch.matmul(qn, torch.from_numpy(u).float().T).abs().amax(dim=1)
        thr = torch.quantile(zmax.double(), 0.95, dim=1).numpy()
        np.testing.assert_allclose(r.sim_threshold[:, c], thr, rtol=1e-5)
    np.testing.assert_allclose(r.z, np.asarray(r.raw) / np.asarray(r.se), rtol=1e-12)


def test_chunking_does_not_change_results(monkeypatch):
    p = 4
    model = _gap_model(p)
    x = torch.rand(7, 1, 15, 15)
    rng = np.random.default_rng(2)
    coefs = rng.normal(size=(p + 1, 3))
    root = rng.normal(size=(3, p + 1, p + 1))
    covs = root @ root.transpose(0, 2, 1)
    kw = dict(coefficients=(coefs, covs), parametrization="network", n_sim=200, band="pixels")
    one = class_activation_maps(model, x, **kw)
    monkeypatch.setattr(cu, "_SE_CHUNK_BYTES", 1)
    monkeypatch.setattr(cu, "_SIM_CHUNK_BYTES", 1)
    many = class_activation_maps(model, x, **kw)
    np.testing.assert_array_equal(one.sim_threshold, many.sim_threshold)
    np.testing.assert_allclose(one.se, many.se, rtol=1e-12)


def _covs(rng: np.random.Generator, p: int, n_cls: int, rank: tuple[int, ...]) -> np.ndarray:
    root = rng.normal(size=(n_cls, p + 1, p + 1))
    for c, rk in enumerate(rank):
        root[c, :, rk:] = 0.0  # covariance of rank rk (0: no uncertainty at all)
    return root @ root.transpose(0, 2, 1) * 0.1


@pytest.mark.parametrize("share", [0.0, 1.0])
@pytest.mark.parametrize(("lo", "hi"), [((5, 3), (17, 11)), ((1, 4), (5, 11)), ((3, 1), (9, 2)),
                                        ((4, 4), (4, 4)), ((6, 5), (4, 3))])
def test_all_class_fast_path_equals_direct(share, lo, hi):
    # unequal ranks (zero-row padding), a zero covariance (SE 0 -> z 0), thin maps, downsampling
    p, n = 4, 5
    rng = np.random.default_rng(sum(lo) * 7 + sum(hi) + int(share))
    acts = torch.from_numpy(rng.normal(size=(n, p, *lo)))
    covs = _covs(rng, p, 4, (p + 1, 2, 0, 3))
    raw = rng.normal(size=(n, 4, *hi))
    out = cu.uncertainty(acts, covs, [0, 1, 2, 3], raw, share, hi, 0.1, False, 0, 0)
    for c in range(4):
        fac = torch.from_numpy(cu.sqrt_factor(covs[c]))
        v = torch.einsum("rk,nkhw->nhwr", fac[:, 1:], acts) + share * fac[:, 0]
        se = cu.direct_upsampled_se(v, hi).numpy()
        np.testing.assert_allclose(out["se"][:, c], se, rtol=1e-10, atol=1e-300)
    assert (out["se"][:, 2] == 0).all() and (out["z"][:, 2] == 0).all()
    assert not out["mask_pointwise"][:, 2].any()
    live = out["se"] > 0
    np.testing.assert_allclose(out["z"][live], raw[live] / out["se"][live], rtol=1e-15)
    crit = 1.6448536269514722  # z_{0.95}
    assert out["pointwise_threshold"] == pytest.approx(crit, rel=1e-12)
    np.testing.assert_array_equal(out["mask_pointwise"], np.abs(out["z"]) > crit)
    assert 0 < out["mask_pointwise"].mean() < 1


def test_fast_path_equals_simultaneous_path_and_chunking(monkeypatch):
    # SE / z / masks without simulation (all classes at once) versus the per-class loop
    p, n = 6, 9
    rng = np.random.default_rng(11)
    acts = torch.from_numpy(np.abs(rng.normal(size=(n, p, 5, 4))))
    covs = _covs(rng, p, 3, (p + 1, 3, p + 1))
    raw = rng.normal(size=(n, 3, 15, 12))
    args = (acts, covs, [2, 0, 1], raw, 1.0, (15, 12), 0.05)
    fast = cu.uncertainty(*args, False, 50, 3)
    slow = cu.uncertainty(*args, True, 50, 3, band="pixels")
    assert set(fast) == {"se", "z", "mask_pointwise", "pointwise_threshold"}
    for key in ("se", "z"):
        np.testing.assert_allclose(fast[key], slow[key], rtol=1e-12)
        assert fast[key].dtype == np.float64 and fast[key].flags.c_contiguous
    np.testing.assert_array_equal(fast["mask_pointwise"], slow["mask_pointwise"])
    monkeypatch.setattr(cu, "_SE_ALL_CHUNK_BYTES", 1)  # one image per chunk
    monkeypatch.setattr(cu, "_SE_ALL_MIN_COLS", 1)
    one = cu.uncertainty(*args, False, 50, 3)
    np.testing.assert_allclose(one["se"], fast["se"], rtol=1e-12)
    np.testing.assert_allclose(one["z"], fast["z"], rtol=1e-12)
    np.testing.assert_array_equal(one["mask_pointwise"], fast["mask_pointwise"])


def test_coefficient_space_simulation_equals_pixel_space():
    # wide head (r = 65 on a 5 x 4 map): the draws projected onto the cells, then upsampled
    rng = np.random.default_rng(8)
    v = torch.from_numpy(rng.normal(size=(3, 5, 4, 65)))
    size = (20, 13)
    uy, ux = cu.interp_matrix(5, size[0]), cu.interp_matrix(4, size[1])
    se = cu.direct_upsampled_se(v, size)
    draws = torch.from_numpy(rng.standard_normal((300, 65))).float()
    assert cu._cells_cheaper(5, 4, size, 65) and not cu._cells_cheaper(7, 7, (28, 28), 33)
    np.testing.assert_allclose(cu._sim_max_abs_z_cells(v, se, uy, ux, draws),
                               cu._sim_max_abs_z(v, se, uy, ux, draws), rtol=1e-5)
