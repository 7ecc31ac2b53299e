"""MLP hidden units ranked by the refit, the 784 -> 1 -> 2 network, Olden and Garson."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import torch
from torch import nn

import glminterp as gi
from glminterp.saliency import (
    garson_importance,
    hidden_unit_fields,
    input_importance,
    olden_importance,
    rank_units,
    zero_one_analysis,
)

W_IN = np.array([[1.0, -2.0, 0.5], [3.0, 1.0, -1.0]])  # 2 hidden x 3 inputs
W_OUT = np.array([[2.0, -1.0], [0.5, 4.0]])  # 2 outputs x 2 hidden


def test_olden_by_hand():
    # Output 0: 1*2 + 3*(-1) = -1; -2*2 + 1*(-1) = -5; 0.5*2 + (-1)*(-1) = 2.
    # Output 1: 1*0.5 + 3*4 = 12.5; -2*0.5 + 1*4 = 3; 0.5*0.5 + (-1)*4 = -3.75.
    np.testing.assert_allclose(olden_importance(W_IN, W_OUT), [[-1, 12.5], [-5, 3], [2, -3.75]])


def test_garson_by_hand_and_output_weights_cancel():
    # Hidden 0: |w| / sum = (1, 2, 0.5) / 3.5; hidden 1: (3, 1, 1) / 5.
    # S = (2/7 + 3/5, 4/7 + 1/5, 1/7 + 1/5) = (31, 27, 12) / 35; RI = S / 2.
    expected = np.array([31, 27, 12]) / 70
    got = garson_importance(W_IN, W_OUT)
    np.testing.assert_allclose(got[:, 0], expected)
    np.testing.assert_allclose(got[:, 1], expected)  # |v_h| cancels within each hidden unit
    np.testing.assert_allclose(got.sum(axis=0), [1.0, 1.0])


def test_garson_single_output_matches_the_neuralnettools_loop():
    # NeuralNetTools garson.default, transcribed: sum_in = t(inp_hid) * |hid_out| per column,
    # rows divided by rowSums, colSums, then normalised.
    rng = np.random.default_rng(0)
    w_in, w_out = rng.normal(size=(4, 6)), rng.normal(size=(1, 4))
    sum_in = np.abs(w_in) * np.abs(w_out[0])[:, None]
    sum_in = sum_in / sum_in.sum(axis=1, keepdims=True)
    s = sum_in.sum(axis=0)
    np.testing.assert_allclose(garson_importance(w_in, w_out)[:, 0], s / s.sum())


def _stand_in(classes=("1", "2"), n_units=12, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for c in classes:
        for t in ["const"] + [f"act1:{j:03d}" for j in range(n_units)]:
            coef, se = rng.normal(scale=2.0), rng.uniform(0.5, 1.5)
            z = coef / se
            rows.append({"class": c, "term": t, "coef": coef, "se": se, "z": z,
                         "p": float(2 * (1 - __import__("scipy").stats.norm.cdf(abs(z)))),
                         "network_weight": coef * 1.1 + rng.normal(scale=0.5)})
    df = pd.DataFrame(rows)
    unit = df["term"] != "const"
    from statsmodels.stats.multitest import multipletests

    df["p_holm"] = np.nan
    df["p_bh"] = np.nan
    df.loc[unit, "p_holm"] = multipletests(df.loc[unit, "p"], method="holm")[1]
    df.loc[unit, "p_bh"] = multipletests(df.loc[unit, "p"], method="fdr_bh")[1]
    return df


def test_rank_units_by_z_not_by_weight():
    df = _stand_in()
    r = rank_units(df, "2", n=3)
    sub = df[(df["class"] == "2") & (df["term"] != "const")]
    top = sub.sort_values("z", ascending=False)["term"].head(3).tolist()
    bottom = sub.sort_values("z")["term"].head(3).tolist()
    assert r[r["direction"] == "positive"]["term"].tolist() == top
    assert r[r["direction"] == "negative"]["term"].tolist() == bottom
    np.testing.assert_array_equal(r["significant"], r["p_adj"] < 0.05)
    holm = sub.set_index("term").loc[r["term"], "p_holm"].to_numpy()
    np.testing.assert_allclose(r["p_adj"], holm)
    best_w = sub["network_weight"].rank(ascending=False, method="first")
    assert r.loc[0, "weight_rank"] == best_w[sub["term"] == top[0]].iloc[0]
    with pytest.raises(KeyError, match="sum_to_zero"):
        rank_units(df, "0")


def test_hidden_unit_fields_images_and_products(mlp_digits, digits):
    df = _stand_in()
    img = digits.images[0, 0]
    res = hidden_unit_fields(mlp_digits, df, "1", image=img, n=2)
    w = mlp_digits.fc1.weight.detach().double().numpy()
    units = res.units["unit"].to_numpy()
    np.testing.assert_allclose(res.weights, w[units].reshape(-1, 8, 8))
    np.testing.assert_allclose(res.products, w[units].reshape(-1, 8, 8) * img.double().numpy())
    assert res.weights.shape == (4, 8, 8)


@pytest.fixture(scope="module")
def weak_mlp(digits):
    """A barely trained 64 -> 6 -> 10 MLP: its hidden units do not separate the classes, so the
    refit's maximum-likelihood estimate exists."""
    model = gi.MLP(n_inputs=64, n_hidden=6, n_classes=10)
    gi.train_model(model, digits.get_split("train"), epochs=1, lr=2e-3, seed=0, progress=False)
    return model


@pytest.fixture(scope="module")
def mlp_refit(weak_mlp, digits):
    acts = gi.extract_activations(weak_mlp, digits, progress=False)
    return gi.refit_output_layer(acts, parametrization="sum_to_zero", progress=False)


def test_input_importance_glm_effect_against_the_refit(weak_mlp, mlp_refit):
    mlp_digits = weak_mlp
    df = input_importance(mlp_digits, mlp_refit, "3", shape=(8, 8))
    w_in = mlp_digits.fc1.weight.detach().double().numpy()
    w_out = mlp_digits.out.weight.detach().double().numpy()
    np.testing.assert_allclose(df["olden"], w_in.T @ w_out[3])
    params = mlp_refit.params()["3"].drop("const")
    units = [int(t.rsplit(":", 1)[1]) for t in params.index]
    np.testing.assert_allclose(df["glm_effect"], w_in[units].T @ params.to_numpy())
    # SE of pixel 20's effect: w' Sigma w with Sigma from cov_params.
    cov = mlp_refit.cov_params().loc["3", "3"].loc[params.index, params.index].to_numpy()
    wi = w_in[units, 20]
    assert df.loc[20, "glm_se"] == pytest.approx(np.sqrt(wi @ cov @ wi), rel=1e-8)
    # The network's head centred per unit gives olden_net = olden - mean over classes.
    np.testing.assert_allclose(df["olden_net"], w_in[units].T @ (w_out[3] - w_out.mean(axis=0))[units], atol=1e-10)
    assert df["glm_rank"].min() == 1 and set(df["row"]) == set(range(8))


def test_rank_units_with_the_real_refit(mlp_refit, weak_mlp):
    mlp_digits = weak_mlp
    r = rank_units(mlp_refit, "3", n=3)
    coefs = mlp_refit.coefficients
    sub = coefs[(coefs["class"] == "3") & (coefs["term"] != "const")]
    assert r.iloc[0]["z"] == pytest.approx(sub["z"].max())
    assert r.iloc[3]["z"] == pytest.approx(sub["z"].min())
    res = hidden_unit_fields(mlp_digits, mlp_refit, "3", n=3)
    assert res.weights.shape == (6, 8, 8)
    assert res.units["significant"].any()  # a real refit finds significant units


def test_zero_one_network_against_statsmodels(digits):
    keep = np.flatnonzero(digits.labels.numpy() <= 1)
    data = digits.subset(keep)
    data = gi.LabeledImages(images=data.images, labels=data.labels, ids=data.ids,
                            classes=("0", "1"), name="digits01", split=data.split)
    model = gi.zero_one_net(n_inputs=64)
    gi.train_model(model, data.get_split("train"), epochs=3, lr=1e-3, seed=0, progress=False)
    acts = gi.extract_activations(model, data, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = zero_one_analysis(model, acts)
    rows = acts.subset(split="refit")
    x = sm.add_constant(rows.head_features().to_numpy(np.float64))
    y = rows.obs["label"].to_numpy().astype(int)
    fit = sm.Logit(y, x).fit(disp=0)
    unit = res.coefficients[res.coefficients["term"] != "const"].iloc[0]
    assert unit["coef"] == pytest.approx(fit.params[1], rel=1e-5)
    assert unit["se"] == pytest.approx(fit.bse[1], rel=1e-4)
    assert res.deviance == pytest.approx(-2 * fit.llf, rel=1e-6)
    assert res.null_deviance == pytest.approx(-2 * fit.llnull, rel=1e-8)
    assert res.lr_statistic == pytest.approx(fit.llr, rel=1e-5)
    np.testing.assert_allclose(res.weight_image, model.fc1.weight.detach().double().numpy().reshape(8, 8))
    assert res.network_deviance >= res.deviance - 1e-8  # the MLE minimises the deviance
    from matplotlib.figure import Figure

    from glminterp.plots.saliency import plot_zero_one

    assert isinstance(plot_zero_one(res), Figure)


def test_hidden_layer_must_be_unambiguous():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 3), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="layer="):
        input_importance(model, cls=0)
    torch.manual_seed(0)
