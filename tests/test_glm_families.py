"""Sigmoid heads (binomial per output) on real activations, and the family dispatch."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
import torch

import glminterp as gi


@pytest.fixture(scope="module")
def sigmoid_acts(digits):
    """The seed question's head: sigmoid outputs trained with BCE on one-hot targets (3 units)."""
    torch.manual_seed(0)
    model = gi.MLP(n_inputs=64, n_hidden=3, n_classes=10, output="sigmoid")
    gi.train_model(model, digits.get_split("train"), epochs=4, lr=5e-3, seed=0, progress=False)
    return gi.extract_activations(model, digits, progress=False)


def test_sigmoid_head_refits_binomial_per_output(sigmoid_acts):
    acts = sigmoid_acts
    assert acts.head.link == "sigmoid"
    res = gi.refit_output_layer(acts, progress=False)
    assert res.family == "binomial" and res.classes == tuple(str(i) for i in range(10))
    rows = acts.subset(split="refit")
    x = sm.add_constant(rows.head_features().to_numpy(np.float64))
    y = rows.obs["label"].to_numpy(int)
    for k in (0, 4, 9):
        g = sm.GLM((y == k).astype(float), x, family=sm.families.Binomial()).fit(tol=1e-12)
        np.testing.assert_allclose(res.params()[str(k)], g.params, rtol=1e-6)
        np.testing.assert_allclose(res.class_cov(str(k)).to_numpy(), g.cov_params(), rtol=1e-6)
        np.testing.assert_allclose(res.class_fit_stats.loc[str(k), "deviance"], g.deviance, rtol=1e-8)
    # The sigmoid head is identified: its raw weights are the comparable parameters.
    np.testing.assert_allclose(res.network_params().to_numpy(), acts.head.coef_matrix())
    assert res.agreement_test["df"] == 40
    assert res.unit_tests["df"].tolist() == [10, 10, 10]


def test_ovr_on_softmax_has_no_network_comparison(mlp_digits_acts):
    sub = mlp_digits_acts
    acts = gi.Activations(
        features=sub.features.iloc[:, :2], obs=sub.obs,
        head=gi.Head(name="out", weight=sub.head.weight[:, :2], bias=sub.head.bias, link="softmax",
                     link_source="test", input_layer="act1", classes=sub.head.classes),
        layers=("act1",), metadata={"pool": "avg"},
    )
    res = gi.refit_output_layer(acts, family="ovr", progress=False)
    assert res.coefficients["network_weight"].isna().all()
    assert res.agreement_test["p_value"] is None
    assert any("not comparable" in n for n in res.diagnostics["notes"])
    with pytest.raises(ValueError, match="ovr"):
        gi.refit_output_layer(acts, family="binomial", progress=False)
