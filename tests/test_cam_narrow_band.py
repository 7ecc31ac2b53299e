"""The default cell band for factors no wider than the cells (``_narrow_cell_band``): the same
numbers as the per-class Gram path and as a direct simulation with the same seeded draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

import glminterp.maps.cam_uncertainty as cu


def _covs(rng: np.random.Generator, p: int, ranks: tuple[int, ...]) -> np.ndarray:
    root = rng.normal(size=(len(ranks), p + 1, p + 1))
    for c, rk in enumerate(ranks):
        root[c, :, rk:] = 0.0  # covariance of rank rk (0: no uncertainty at all)
    return root @ root.transpose(0, 2, 1) * 0.1


def _case(seed: int, p: int, lo: tuple[int, int], hi: tuple[int, int], n: int = 6):
    """Activations with dead cells (all channels 0), unequal ranks, a zero covariance."""
    rng = np.random.default_rng(seed)
    acts = np.abs(rng.normal(size=(n, p, *lo)))
    acts[:, :, 0, 0] = 0.0  # a dead cell in every image: SE 0 there without the intercept
    covs = _covs(rng, p, (p + 1, 2, 0, p))
    raw = rng.normal(size=(n, 4, *hi)) * 0.5
    return torch.from_numpy(acts), covs, raw


def _direct_threshold(acts, cov, share, seed, col, n_sim, alpha):
    """Quantile of max |zeta| over the cells by hand: loadings R a / SE, the class's stream."""
    n, p, h, w = acts.shape
    a = np.concatenate([np.full((n, 1, h, w), share), acts], axis=1).reshape(n, p + 1, h * w)
    fac = cu.cov_factor(cov)
    load = np.einsum("rk,nkc->ncr", fac, a)  # (n, hw, r): the channels are the loadings
    se = np.sqrt((load**2).sum(2))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se[..., None] > 0, load / se[..., None], 0.0)
    g = np.random.default_rng([seed, col]).standard_normal((n_sim, fac.shape[0]))
    zeta = np.einsum("ncr,sr->nsc", z, g)
    return np.quantile(np.abs(zeta).max(axis=2), 1 - alpha, axis=1), se.reshape(n, h, w)


@pytest.mark.parametrize("share", [0.0, 1.0])
@pytest.mark.parametrize(("lo", "hi"), [((4, 5), (13, 17)), ((3, 3), (3, 3)), ((6, 2), (4, 9))])
def test_narrow_band_equals_the_per_class_gram_path(share, lo, hi):
    p = 5
    acts, covs, raw = _case(3 * sum(lo) + sum(hi) + int(share), p, lo, hi)
    assert max(cu.cov_factor(c).shape[0] for c in covs) <= lo[0] * lo[1]  # narrow factors
    cols, alpha, crit = [3, 0, 1, 2], 0.1, float(stats.norm.ppf(0.95))
    new = cu.uncertainty(acts, covs, cols, raw, share, hi, alpha, True, 400, 5)
    old = cu._cell_band(acts, covs, cols, raw, share, hi, alpha, 400, 5, crit)
    assert new["pointwise_threshold"] == pytest.approx(crit, rel=1e-15)
    for key in ("se", "z", "band_se"):
        np.testing.assert_allclose(new[key], old[key], rtol=1e-12, atol=1e-300)
        assert new[key].shape == raw.shape and new[key].dtype == np.float64
    np.testing.assert_allclose(new["sim_threshold"], old["sim_threshold"], rtol=1e-6)
    np.testing.assert_array_equal(new["mask_pointwise"], old["mask_pointwise"])
    # the mask from the new threshold, and the old mask wherever rounding cannot flip it
    lim = new["sim_threshold"][:, :, None, None] * new["band_se"]
    np.testing.assert_array_equal(new["mask_simultaneous"],
                                  (np.abs(raw) > lim) & (new["band_se"] > 0))
    clear = np.abs(np.abs(raw) - lim) > 1e-6 * lim
    np.testing.assert_array_equal(new["mask_simultaneous"][clear], old["mask_simultaneous"][clear])
    # the zero covariance: no SE, no band, nothing significant; threshold 0
    assert (new["se"][:, 2] == 0).all() and (new["band_se"][:, 2] == 0).all()
    assert not new["mask_simultaneous"][:, 2].any() and (new["sim_threshold"][:, 2] == 0).all()


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_narrow_band_threshold_equals_direct_simulation_and_is_chunk_invariant(
        share, monkeypatch):
    lo, hi, n_sim, alpha, seed = (5, 4), (16, 13), 500, 0.05, 11
    acts, covs, raw = _case(21 + int(share), 6, lo, hi, n=5)
    cols = [0, 1, 2, 3]
    out = cu.uncertainty(acts, covs, cols, raw, share, hi, alpha, True, n_sim, seed)
    uy, ux = (cu.interp_matrix(m, big).numpy() for m, big in zip(lo, hi))
    for i in (0, 1, 3):
        thr, se_cells = _direct_threshold(acts.numpy(), covs[i], share, seed, cols[i], n_sim,
                                          alpha)
        np.testing.assert_allclose(out["sim_threshold"][:, i], thr, rtol=2e-5)
        band = np.einsum("Hh,nhw,Ww->nHW", uy, se_cells, ux)
        np.testing.assert_allclose(out["band_se"][:, i], band, rtol=1e-10)
        assert (out["sim_threshold"][:, i] > stats.norm.ppf(1 - alpha / 2)).all()
    if share == 0.0:  # the dead cell has no SE; its neighbours' band is still positive
        assert (out["band_se"][:, 0, 0, 0] == 0).all()
    monkeypatch.setattr(cu, "_SE_CHUNK_BYTES", 1)  # one image per product
    one = cu.uncertainty(acts, covs, cols, raw, share, hi, alpha, True, n_sim, seed)
    for key in ("sim_threshold", "band_se", "mask_simultaneous", "se"):
        np.testing.assert_array_equal(one[key], out[key])
