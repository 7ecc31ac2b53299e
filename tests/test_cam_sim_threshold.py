"""The bounded simultaneous-threshold simulation against the direct pixel-space simulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import glminterp.maps.cam_uncertainty as cu

SIZES = [((7, 7), (28, 28)), ((5, 3), (15, 9)), ((4, 6), (13, 21)), ((1, 4), (5, 11)),
         ((3, 1), (9, 2)), ((6, 6), (6, 6)), ((8, 5), (4, 3)), ((3, 3), (40, 17))]


def _field(rng: np.random.Generator, n: int, lo: tuple[int, int], r: int) -> torch.Tensor:
    """Factor channels ``v`` (n, h, w, r) of CAM-like fields: a shared level plus noise."""
    v = np.abs(rng.normal(size=(n, *lo, r))) + 0.4 * rng.normal(size=(n, *lo, r))
    return torch.from_numpy(v)


def _direct(v: torch.Tensor, size: tuple[int, int], draws: torch.Tensor, alpha: float):
    """The pre-bound algorithm: every draw upsampled to every pixel, then the quantile."""
    uy, ux = cu.interp_matrix(v.shape[1], size[0]), cu.interp_matrix(v.shape[2], size[1])
    se = cu.direct_upsampled_se(v, size)
    zmax = cu._sim_max_abs_z(v, se, uy, ux, draws).double()
    return se, torch.quantile(zmax, 1 - alpha, dim=1)


def _bounded(v, se, size, draws, alpha):
    uy, ux = cu.interp_matrix(v.shape[1], size[0]), cu.interp_matrix(v.shape[2], size[1])
    return cu._sim_thresholds(v, se, uy, ux, draws, alpha)


@pytest.mark.parametrize(("lo", "hi"), SIZES)
@pytest.mark.parametrize(("n_sim", "alpha"), [(400, 0.05), (97, 0.2), (50, 0.5), (7, 0.05)])
def test_bounded_threshold_equals_direct_simulation_same_draws(lo, hi, n_sim, alpha):
    rng = np.random.default_rng(sum(lo) * 13 + sum(hi) + n_sim)
    r = min(lo[0] * lo[1], 6)
    v = _field(rng, 5, lo, r)
    draws = torch.from_numpy(rng.standard_normal((n_sim, r))).float()
    se, ref = _direct(v, hi, draws, alpha)
    np.testing.assert_allclose(_bounded(v, se, hi, draws, alpha), ref, rtol=2e-6)


def test_dead_cells_zero_se_and_single_draw():
    # cells with no activation (SE 0 at a cell, and at every pixel of a zero image)
    rng = np.random.default_rng(3)
    v = _field(rng, 4, (5, 4), 3)
    v[0, 1:3, 1:3] = 0.0
    v[1] = 0.0
    v[2, :, 0] = 0.0
    size = (15, 12)
    for n_sim in (1, 2, 300):
        draws = torch.from_numpy(rng.standard_normal((n_sim, 3))).float()
        se, ref = _direct(v, size, draws, 0.05)
        got = _bounded(v, se, size, draws, 0.05)
        np.testing.assert_allclose(got, ref, rtol=2e-6)
        assert got[1] == 0.0


@pytest.mark.parametrize("dead", [False, True])
def test_wide_factor_reduced_to_cell_covariance(dead):
    # r > h w: the cell field's h w x h w factor (Cholesky, or eigen-square-root if singular)
    rng = np.random.default_rng(7 + dead)
    v = _field(rng, 3, (3, 4), 40)
    if dead:
        v[:, 0, :2] = 0.0  # singular cell covariance
        v[1, 2] = v[1, 1]  # repeated cells
    fac = cu.field_loadings(v)
    assert fac.shape == (3, 12, 12)
    gram = torch.einsum("nhwr,nklr->nhwkl", v, v).reshape(3, 12, 12)
    np.testing.assert_allclose(fac @ fac.transpose(1, 2), gram, rtol=1e-9, atol=1e-9)
    # the same draws through the factor: equal to the direct simulation of that field
    size = (11, 14)
    draws = torch.from_numpy(rng.standard_normal((500, 12))).float()
    se, ref = _direct(fac.reshape(3, 3, 4, 12), size, draws, 0.05)
    np.testing.assert_allclose(se, cu.direct_upsampled_se(v, size), rtol=1e-9)
    np.testing.assert_allclose(_bounded(v, se, size, draws, 0.05), ref, rtol=2e-6)


def test_wide_factor_threshold_has_the_coefficient_space_distribution():
    # other draws, same distribution: the threshold of 20,000 draws in coefficient space
    # (the former algorithm) and in cell space agree within Monte-Carlo error
    rng = np.random.default_rng(12)
    v = _field(rng, 4, (3, 3), 30)
    size = (12, 12)
    n_sim = 20_000
    e = torch.from_numpy(rng.standard_normal((n_sim, 30))).float()
    se, coef_space = _direct(v, size, e, 0.05)
    g = torch.from_numpy(rng.standard_normal((n_sim, 9))).float()
    cell_space = _bounded(v, se, size, g, 0.05)
    # the 0.95 quantile of a max of |N(0, 1)|s: sd of its 20,000-draw estimate is about 0.01
    np.testing.assert_allclose(cell_space, coef_space, atol=0.04)
    assert (cell_space > 1.96).all()


def test_thresholds_deterministic_and_chunk_invariant():
    rng = np.random.default_rng(5)
    v = _field(rng, 6, (4, 4), 5)
    size = (16, 16)
    draws = torch.from_numpy(rng.standard_normal((600, 5))).float()
    se = cu.direct_upsampled_se(v, size)
    whole = _bounded(v, se, size, draws, 0.05)
    parts = torch.cat([_bounded(v[i : i + 1], se[i : i + 1], size, draws, 0.05)
                       for i in range(6)])
    np.testing.assert_array_equal(whole, parts)
    np.testing.assert_array_equal(whole, _bounded(v, se, size, draws, 0.05))


@pytest.mark.parametrize(("lo", "hi"), SIZES)
def test_cell_bound_holds_for_every_draw(lo, hi):
    # max_u |z*(u)| <= max_c K_c |zeta_c| draw by draw (what lets the exact maxima be skipped)
    rng = np.random.default_rng(sum(lo) + 3 * sum(hi))
    r = min(lo[0] * lo[1], 6)
    v = _field(rng, 4, lo, r)
    v[0, 0] = 0.0  # a dead row of cells
    uy, ux = cu.interp_matrix(lo[0], hi[0]), cu.interp_matrix(lo[1], hi[1])
    se = cu.direct_upsampled_se(v, hi)
    draws = torch.from_numpy(rng.standard_normal((3000, r))).float()
    exact = cu._sim_max_abs_z(v, se, uy, ux, draws).double()
    se_cells = torch.linalg.vector_norm(v, dim=3)
    inv = torch.where(se_cells > 0, 1 / se_cells, 0.0).reshape(4, -1, 1)
    kcell = cu._cell_bounds(se_cells, se, uy, ux)
    assert (kcell >= 1 - 1e-12).all() | (se_cells == 0).any()
    ub = cu._upper_bounds(cu.field_loadings(v) * inv, kcell, draws.T).double()
    assert (ub >= exact).all()
    if lo == hi:  # no interpolation: the bound is the maximum (up to its rounding margin)
        np.testing.assert_allclose(ub, exact, rtol=2e-4)


def test_public_call_wide_head_uses_seeded_cell_space_draws():
    # p + 1 = 41 > h w = 25: the class's stream [seed, column] gives (n_sim, h w) draws
    from glminterp.maps.cam import class_activation_maps

    torch.manual_seed(0)
    p = 40
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, p, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(3),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(p, 3))
    x = torch.rand(4, 1, 15, 15)
    rng = np.random.default_rng(1)
    coefs = rng.normal(size=(p + 1, 3))
    root = rng.normal(size=(3, p + 1, p + 1))
    covs = root @ root.transpose(0, 2, 1) * 0.01
    r = class_activation_maps(model, x, coefficients=(coefs, covs), parametrization="network",
                              n_sim=300, seed=6, band="pixels")
    acts = torch.from_numpy(np.array(r.activations))
    for c in range(3):
        fac = torch.from_numpy(cu.sqrt_factor(covs[c]))
        v = torch.einsum("rk,nkhw->nhwr", fac[:, 1:], acts)
        g = np.random.default_rng([6, c]).standard_normal((300, 25))
        lf = cu.field_loadings(v).reshape(4, 5, 5, 25)
        se, ref = _direct(lf, (15, 15), torch.from_numpy(g).float(), 0.05)
        np.testing.assert_allclose(r.se[:, c], se, rtol=1e-9)
        np.testing.assert_allclose(r.sim_threshold[:, c], ref, rtol=2e-6)
