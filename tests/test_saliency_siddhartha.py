"""Siddhartha (2022): ALD regression, recursive split, ALD by maximum likelihood, masked scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

from glminterp.saliency import (
    ald_mle,
    ald_regression,
    fit_ald,
    masked_probability,
    recursive_split,
    restricted_class_map,
    siddhartha,
)


def test_ald_regression_by_hand():
    # Positive side: e^(1 + 2x) at x = i/4 -> slope 2, intercept 1, R^2 = 1.
    pos = np.exp(1 + 2 * np.arange(1, 5) / 4)
    # Negative side: -w = (1, e, e^3) at x = (1/3, 2/3, 1); log = (0, 1, 3).
    # xbar = 2/3, ybar = 4/3, Sxy = 1, Sxx = 2/9 -> slope 9/2, intercept 4/3 - 3 = -5/3;
    # residuals (1/6, -1/3, 1/6): SSR = 1/6, Syy = 14/3 -> R^2 = 1 - 1/28 = 27/28.
    neg = -np.array([np.e**3, 1.0, np.e])
    w = np.concatenate([pos[[2, 0, 3, 1]], neg])
    fit = ald_regression(w)
    assert fit.loc["positive", "n"] == 4 and fit.loc["negative", "n"] == 3
    assert fit.loc["positive", "slope"] == pytest.approx(2.0)
    assert fit.loc["positive", "intercept"] == pytest.approx(1.0)
    assert fit.loc["positive", "r2"] == pytest.approx(1.0)
    assert fit.loc["negative", "slope"] == pytest.approx(4.5)
    assert fit.loc["negative", "intercept"] == pytest.approx(-5 / 3)
    assert fit.loc["negative", "r2"] == pytest.approx(27 / 28)
    one_side = ald_regression(np.array([1.0, 2.0, -1.0]))
    assert np.isnan(one_side.loc["negative", "slope"])


def test_recursive_split_on_a_constructed_vector():
    rng = np.random.default_rng(0)
    perm = rng.permutation(40)
    w = np.empty(40)
    w[perm] = np.arange(40.0)  # channel perm[v] has weight v
    split = recursive_split(w, min_size=20)
    # 40 -> above mean 19.5: weights 20..39 (20 channels, still >= 20) -> above 29.5: 30..39.
    np.testing.assert_array_equal(split.discriminative, np.sort(perm[30:]))
    # 40 -> below 19.5: 0..19 -> below 9.5: 0..9.
    np.testing.assert_array_equal(split.confusing, np.sort(perm[:10]))
    assert split.path["size"].tolist() == [40, 20, 10, 20, 10]
    assert split.path["branch"].tolist() == ["root"] + ["discriminative"] * 2 + ["confusing"] * 2
    # A skewed vector: mean (10 + 24 - 5) / 30 = 0.967, so the 24 ones are above it with the 10
    # (25 channels, split again at mean 34 / 25 = 1.36 -> only channel 0); the five -1 fall below.
    w2 = np.array([10.0] + [1.0] * 24 + [-1.0] * 5)
    s2 = recursive_split(w2, min_size=20)
    assert s2.discriminative.tolist() == [0]
    assert s2.confusing.tolist() == [25, 26, 27, 28, 29]
    assert s2.path["size"].tolist() == [30, 25, 1, 5]


def test_recursive_split_stops_at_min_size_and_on_ties():
    s = recursive_split(np.arange(10.0), min_size=20)
    assert s.discriminative.tolist() == list(range(10)) == s.confusing.tolist()
    s = recursive_split(np.ones(30), min_size=5)  # no channel is above the mean
    assert len(s.discriminative) == 30
    with pytest.raises(ValueError, match="min_size"):
        recursive_split(np.ones(3), min_size=0)


def test_exact_ald_mle_agrees_with_scipy_and_recovers_the_truth():
    rng = np.random.default_rng(1)
    truth = (2.0, 0.1, 0.5)
    x = stats.laplace_asymmetric.rvs(truth[0], loc=truth[1], scale=truth[2], size=4000, random_state=rng)
    k, loc, s = ald_mle(x)
    ll = stats.laplace_asymmetric(k, loc=loc, scale=s).logpdf(x).sum()
    sk, sloc, ss = stats.laplace_asymmetric.fit(x)
    ll_scipy = stats.laplace_asymmetric(sk, loc=sloc, scale=ss).logpdf(x).sum()
    assert ll >= ll_scipy - 1e-6  # the exact profile maximum is never beaten by the optimiser
    np.testing.assert_allclose([k, loc, s], [sk, sloc, ss], rtol=0.02, atol=0.01)
    np.testing.assert_allclose([k, loc, s], truth, rtol=0.1, atol=0.03)


def test_ks_bootstrap_pvalue_is_seeded_and_discriminates():
    rng = np.random.default_rng(2)
    ald_data = stats.laplace_asymmetric.rvs(1.5, loc=0.0, scale=0.3, size=200, random_state=rng)
    a = fit_ald(ald_data, n_boot=99, seed=7)
    b = fit_ald(ald_data, n_boot=99, seed=7)
    assert a.ks_pvalue_bootstrap == b.ks_pvalue_bootstrap
    assert a.ks_pvalue_bootstrap > 0.05
    assert a.ks_pvalue_naive >= a.ks_pvalue_bootstrap - 0.1  # naive p ignores the estimation
    bimodal = np.concatenate([rng.normal(-2, 0.2, 100), rng.normal(2, 0.2, 100)])
    c = fit_ald(bimodal, n_boot=99, seed=7)
    assert c.ks_pvalue_bootstrap == pytest.approx(0.01)  # (1 + 0) / (99 + 1)
    assert c.aic > c.normal_aic or c.ks_statistic > 0.1
    s = fit_ald(ald_data, n_boot=0, method="scipy")
    assert np.isnan(s.ks_pvalue_bootstrap) and s.loglik <= a.loglik + 1e-6


class Flat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.stack([torch.zeros(8), torch.ones(8)]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.flatten(x))


def test_masked_probability_by_hand():
    model = Flat()
    x = torch.ones(2, 1, 2, 4)
    cams = np.array([[[0.0, 1.0]], [[5.0, 5.0]]])  # (N, 1, 2) maps
    p = masked_probability(model, x, cams, 1, link="softmax")
    # Bilinear (align_corners=False) from width 2 to 4 gives (0, .25, .75, 1) per row;
    # logit of class 1 = 2 * (0 + .25 + .75 + 1) = 4. A constant map masks nothing: logit 8.
    np.testing.assert_allclose(p, [1 / (1 + np.exp(-4.0)), 1 / (1 + np.exp(-8.0))], rtol=1e-6)


def test_restricted_class_map():
    maps = np.arange(2 * 3 * 2 * 2, dtype=float).reshape(2, 3, 2, 2)
    w = np.array([1.0, -2.0, 0.5])
    got = restricted_class_map(maps, w, [0, 2])
    np.testing.assert_allclose(got, maps[:, 0] + 0.5 * maps[:, 2])


def test_siddhartha_end_to_end_with_a_stand_in_refit(gap_cnn_digits, digits):
    model = gap_cnn_digits
    data = digits.subset(np.flatnonzero(digits.labels.numpy() == 3)[:20])
    w = model.fc.weight.detach().double().numpy()[3]
    order = np.argsort(-w)
    coefs = pd.DataFrame(
        {
            "class": ["3"] * 9,
            "term": ["const"] + [f"relu3:c{j:02d}" for j in range(8)],
            "coef": np.r_[0.0, w],
            "se": 1.0,
            "z": np.r_[0.0, w],
            "p": 0.5,
            "p_holm": np.r_[np.nan, np.where(np.isin(np.arange(8), order[:2]), 0.001, 0.9)],
            "p_bh": 0.5,
        }
    )
    res = siddhartha(model, data, 3, min_size=3, refit=coefs, n_boot=19)
    assert set(res.sets) == {"all", "discriminative", "confusing", "glm_positive", "glm_negative"}
    assert res.sets["glm_positive"].tolist() == sorted(order[:2][w[order[:2]] > 0].tolist())
    assert res.sets["glm_negative"].tolist() == []
    assert res.scores["glm_negative"].isna().all()
    ref = recursive_split(w, min_size=3)
    np.testing.assert_array_equal(res.sets["discriminative"], ref.discriminative)
    # The "all" map is the CAM: sum_c w_c A_c.
    from glminterp.saliency._common import capture_layer

    with torch.no_grad():
        a = capture_layer(model, data.images, "relu3").double().numpy()
    np.testing.assert_allclose(res.maps["all"], np.einsum("nchw,c->nhw", a, w), atol=1e-6)
    s = res.summary
    assert s.loc["discriminative", "n_channels"] == len(ref.discriminative)
    cmp = res.compare("discriminative", "glm_positive")
    assert cmp["n"] == 20 and np.isfinite(cmp["mean_diff"])
    assert res.ald is not None and res.regression.shape == (2, 4)
