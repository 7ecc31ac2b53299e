"""Coefficient table, significant-channels-only CAM and the cross-reference table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _cam_support import mnlogit_refit, seeded_gap_cnn
from scipy import stats
from test_cam_maps import A1, A2, CAM0, B, TinyGap, W

import glminterp as gi
from glminterp.maps.cam import class_activation_maps

# channel 1 has SE 1, channel 2 SE 0.1 in every class (intercept variance 1, no correlation)
COV = np.stack([np.diag([1.0, 1.0, 0.01])] * 3)


@pytest.fixture
def tiny_result():
    x = torch.tensor(np.stack([A1, A2])[None], dtype=torch.float32)
    coefs = np.vstack([B, W.T])
    return class_activation_maps(
        TinyGap(), x, coefficients=(coefs, COV), parametrization="network", upsample=False,
        normalize=None, simultaneous=False,
    )


def test_coefficient_table_hand_computed(tiny_result):
    tab = tiny_result.coefficient_table()
    assert len(tab) == 6 and list(tab["term"][:2]) == ["feat:c00", "feat:c01"]
    se = np.tile([1.0, 0.1], 3)
    coef = W.ravel()  # class-major: (c0,k1), (c0,k2), (c1,k1), ...
    np.testing.assert_allclose(tab["coef"], coef)
    np.testing.assert_allclose(tab["se"], se)
    z = coef / se
    p = 2 * stats.norm.sf(np.abs(z))
    np.testing.assert_allclose(tab["p"], p)
    np.testing.assert_allclose(tab["ci_lower"], coef - 1.959963984540054 * se)
    # Holm by hand: sorted p times (m - i), running maximum, capped at 1
    order = np.argsort(p)
    holm = np.minimum(np.maximum.accumulate(p[order] * (6 - np.arange(6))), 1)
    expect = np.empty(6)
    expect[order] = holm
    np.testing.assert_allclose(tab["p_holm"], expect)


def test_significant_only_cam(tiny_result):
    sig = tiny_result.significant_channels("holm")
    # z = (1, 20 | -1, 0 | 0.5, -10): only channel 2 of classes 0 and 2 survive
    np.testing.assert_array_equal(sig.to_numpy(), [[False, False, False], [True, False, True]])
    only = tiny_result.significant_only("holm")
    np.testing.assert_allclose(only.raw[0, 0], 2 * A2)
    np.testing.assert_allclose(only.raw[0, 1], 0.0)
    np.testing.assert_allclose(only.raw[0, 2], -A2)
    assert only.se is None and "significant" in only.source
    bh = tiny_result.significant_only("bh")
    np.testing.assert_allclose(bh.raw[0, 0], 2 * A2)


def test_cross_reference_shares_hand_computed(tiny_result):
    xr = tiny_result.cross_reference(classes=["0"], top=2)
    # CAM0 is positive everywhere: mass 23 = 9 (channel 1: 1 * sum A1) + 14 (2 * sum A2)
    assert CAM0.sum() == 23
    assert list(xr["channel"]) == [1, 0]
    np.testing.assert_allclose(xr["positive_mass_share"], [14 / 23, 9 / 23])
    np.testing.assert_allclose(xr["contribution"], [2 * 7 / 9, 1.0])
    np.testing.assert_allclose(xr["se"], [0.1, 1.0])
    assert list(xr["significant"]) == [True, False]
    assert {"coef", "ci_lower", "ci_upper", "p", "p_holm"} <= set(xr.columns)


def test_cross_reference_on_trained_cnn(digits):
    model = seeded_gap_cnn(digits)
    fit = mnlogit_refit(gi.extract_activations(model, digits, progress=False))
    imgs = digits.get_split("test").subset(np.arange(4))
    r = class_activation_maps(
        model, imgs, coefficients=(fit["gamma"], fit["class_covs"]), intercept="spread",
        simultaneous=False,
    )
    xr = r.cross_reference(top=8, correction="bh")
    assert len(xr) == 4 * 10 * 8
    # shares over positive locations plus the intercept's share add up to 1
    g = fit["gamma"]
    for (sid, c), grp in xr.groupby(["sample_id", "class"]):
        n, j = r.sample_ids.index(sid), int(c)
        m = r.activations[n].transpose(1, 2, 0) @ g[1:, j] + g[0, j]
        pos = m > 0
        if pos.any():
            icpt = g[0, j] * pos.sum() / m[pos].sum()
            assert grp["positive_mass_share"].sum() + icpt == pytest.approx(1.0)
    # corrected p-values come from the Wald table of the same coefficients
    tab = r.coefficient_table().set_index(["class", "term"])
    row = xr.iloc[0]
    assert row["p_bh"] == pytest.approx(tab.loc[(row["class"], row["term"]), "p_bh"])
    se = np.sqrt(fit["class_covs"][int(row["class"])][row["channel"] + 1, row["channel"] + 1])
    assert row["se"] == pytest.approx(se)


@pytest.mark.filterwarnings("ignore:events per parameter")
def test_refit_result_gives_same_maps_as_arrays(digits):
    from glminterp import refit as glm

    model = seeded_gap_cnn(digits)
    acts = gi.extract_activations(model, digits, progress=False)
    fit = mnlogit_refit(acts)
    res = glm.refit_output_layer(acts, parametrization="sum_to_zero", progress=False)
    imgs = digits.get_split("test").subset(np.arange(3))
    a = class_activation_maps(model, imgs, coefficients=res, simultaneous=False)
    b = class_activation_maps(
        model, imgs, coefficients=(fit["gamma"], fit["class_covs"]), simultaneous=False
    )
    assert a.source == "refit"
    np.testing.assert_allclose(a.raw, b.raw, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a.se, b.se, rtol=1e-3)
