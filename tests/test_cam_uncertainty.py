"""CAM standard errors (delta method), z maps, pointwise and simultaneous masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _cam_support import mnlogit_refit, seeded_gap_cnn
from scipy import stats
from torch import nn

import glminterp as gi
from glminterp.maps.cam import class_activation_maps


@pytest.fixture(scope="module")
def fitted(digits):
    model = seeded_gap_cnn(digits)
    acts = gi.extract_activations(model, digits, progress=False)
    return model, mnlogit_refit(acts)


@pytest.fixture(scope="module")
def test_images(digits):
    return digits.get_split("test").subset(np.arange(12))


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("intercept", ["exclude", "spread"])
def test_se_equals_direct_delta_method(fitted, test_images, upsample, intercept):
    model, fit = fitted
    r = class_activation_maps(
        model, test_images, coefficients=(fit["gamma"], fit["class_covs"]), intercept=intercept,
        upsample=upsample, simultaneous=False,
    )
    a = torch.as_tensor(np.array(r.activations))
    if upsample:  # the channel vector of the upsampled map, built independently
        a = F.interpolate(a, size=(8, 8), mode="bilinear", align_corners=False)
    a = a.numpy()
    share = 1.0 if intercept == "spread" else 0.0
    rng = np.random.default_rng(1)
    for _ in range(6):
        n, c = rng.integers(12), rng.integers(10)
        yy, xx = rng.integers(a.shape[2]), rng.integers(a.shape[3])
        vec = np.concatenate([[share], a[n, :, yy, xx]])
        se = np.sqrt(vec @ fit["class_covs"][c] @ vec)
        est = vec @ fit["gamma"][:, c]
        assert r.se[n, c, yy, xx] == pytest.approx(se, rel=1e-9)
        assert r.raw[n, c, yy, xx] == pytest.approx(est, rel=1e-9, abs=1e-9)
        assert r.z[n, c, yy, xx] == pytest.approx(est / se, rel=1e-9)


def test_reference_parametrization_se_and_contrast(fitted, test_images):
    model, fit = fitted
    ref = class_activation_maps(
        model, test_images, coefficients=(fit["beta"], fit["ref_covs"]),
        parametrization="reference", upsample=False, simultaneous=False,
    )
    stz = class_activation_maps(
        model, test_images, coefficients=(fit["gamma"], fit["class_covs"]), upsample=False,
        simultaneous=False,
    )
    # the same contrast in two parametrizations: map_c (reference) = map_c - map_0 (centred)
    np.testing.assert_allclose(ref.raw, stz.raw[:, 1:] - stz.raw[:, :1], atol=1e-9)
    a = ref.activations[3, :, 1, 0]
    vec = np.concatenate([[0.0], a])
    assert ref.se[3, 4, 1, 0] == pytest.approx(np.sqrt(vec @ fit["ref_covs"][4] @ vec), rel=1e-9)


def test_se_matches_simulation(fitted, test_images):
    model, fit = fitted
    r = class_activation_maps(
        model, test_images, classes="5", coefficients=(fit["gamma"], fit["class_covs"]),
        upsample=False, simultaneous=False,
    )
    rng = np.random.default_rng(7)
    draws = rng.multivariate_normal(fit["gamma"][:, 5], fit["class_covs"][5], size=40_000)
    vec = np.concatenate([[0.0], r.activations[2, :, 0, 1]])
    assert np.std(draws @ vec) == pytest.approx(r.se[2, 0, 0, 1], rel=0.02)


def test_masks_and_simultaneous_at_least_pointwise(fitted, test_images):
    model, fit = fitted
    r = class_activation_maps(
        model, test_images, coefficients=(fit["gamma"], fit["class_covs"]), n_sim=1000
    )
    crit = stats.norm.ppf(0.975)
    assert r.pointwise_threshold == pytest.approx(crit)
    assert r.sim_threshold.shape == (12, 10)
    assert (r.sim_threshold >= crit).all()
    np.testing.assert_array_equal(r.mask_pointwise, np.abs(r.z) > crit)
    assert (r.mask_simultaneous <= r.mask_pointwise).all()
    assert r.mask_pointwise.any()
    again = class_activation_maps(
        model, test_images, coefficients=(fit["gamma"], fit["class_covs"]), n_sim=1000,
        batch_size=5,
    )
    np.testing.assert_array_equal(r.sim_threshold, again.sim_threshold)  # seeded
    s = r.summary
    assert len(s) == 120 and {"n_sig_pointwise", "sim_threshold"} <= set(s.columns)


class OneHotGap(nn.Module):
    """Identity features -> GAP -> Linear(L, 2): input channel k is the indicator of location k."""

    def __init__(self, n_loc: int) -> None:
        super().__init__()
        self.feat = nn.Identity()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(n_loc, 2)

    def forward(self, x):
        return self.fc(self.flatten(self.gap(self.feat(x))))


def test_simultaneous_threshold_matches_exact_for_independent_locations():
    # 2x2 map, channel k = indicator of location k, Sigma = I: z*(x, y) are 4 independent N(0,1),
    # so the (1 - alpha) quantile of max |z*| is Phi^-1((1 + (1 - alpha)^(1/4)) / 2).
    x = torch.eye(4).reshape(1, 4, 2, 2)
    model = OneHotGap(4)
    coefs = np.ones((5, 2))
    covs = np.stack([np.eye(5)] * 2)
    r = class_activation_maps(
        model, x, coefficients=coefs, parametrization="network", upsample=False, n_sim=40_000
    )
    exact = stats.norm.ppf((1 + 0.95 ** 0.25) / 2)
    with_cov = class_activation_maps(
        model, x, coefficients=(coefs, covs), parametrization="network", upsample=False,
        n_sim=40_000, seed=3,
    )
    assert r.se is None
    np.testing.assert_allclose(with_cov.sim_threshold, exact, atol=0.03)
    np.testing.assert_allclose(with_cov.se, 1.0)
    # perfectly correlated locations (one constant channel): the threshold is the pointwise one
    x1 = torch.ones(1, 1, 3, 3)
    r1 = class_activation_maps(
        OneHotGap(1), x1, coefficients=(np.ones((2, 2)), np.stack([np.eye(2)] * 2)),
        parametrization="network", upsample=False, n_sim=40_000,
    )
    np.testing.assert_allclose(r1.sim_threshold, stats.norm.ppf(0.975), atol=0.03)
