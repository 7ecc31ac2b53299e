"""The refit on the zoo: responses simulated from each network's own output distribution (so
the network's head is the true model), refit on held-out rows, and the agreement test does not
reject it; multi-label sigmoid heads take (N, K) 0/1 targets, regression heads real targets."""

import re

import numpy as np
import pytest
import torch

import glminterp as gi
from glminterp.refit import RefitWarning
from tests.zoo import ZOO, assert_unchanged, frozen_train_mode, state_snapshot

N = 600
# Near-dead channels after a ResNet's final ReLU are active on a handful of rows: at N=600
# they may separate a class, and then the refit says so (SeparationError names the unit) and
# the ridge remedy (labelled penalized inference) still runs; otherwise the MLE is checked.
SEPARATED = {"resnet_basic", "resnet_bottleneck"}


def _data(entry, n_classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((N, *entry.input_shape), generator=g)
    model = entry.factory(seed=seed, in_channels=entry.in_channels, n_classes=n_classes)
    with torch.no_grad():
        eta = model(x).double()
    if entry.link == "softmax":
        y = torch.multinomial(torch.softmax(eta, 1), 1, generator=g)[:, 0]
    elif entry.link == "sigmoid":
        y = torch.bernoulli(torch.sigmoid(eta), generator=g)
    else:
        y = eta + 0.5 * torch.randn(eta.shape, generator=g, dtype=torch.float64)
    return model, x, y


@pytest.mark.parametrize("name", list(ZOO))
def test_refit_recovers_the_network_as_true_model(name):
    entry = ZOO[name]
    k = 3 if entry.link == "softmax" else entry.n_classes
    model, x, y = _data(entry, k)
    frozen_train_mode(model)
    snap = state_snapshot(model)
    acts = gi.extract_activations(model, (x, y), split="refit", progress=False)
    assert_unchanged(model, snap)
    if name in SEPARATED:
        try:
            gi.refit_output_layer(acts, progress=False)
        except gi.SeparationError as e:
            assert re.search(r"separated on \d+ rows .* units \(largest", str(e))
            with pytest.warns(RefitWarning, match="PENALIZED"):
                res = gi.refit_output_layer(acts, progress=False, remedy="ridge")
            assert np.isfinite(res.params().to_numpy()).all()
            return
    res = gi.refit_output_layer(acts, progress=False)
    fam = {"softmax": "multinomial", "sigmoid": "binomial", "identity": "gaussian"}[entry.link]
    assert res.family == fam
    agree = res.agreement_test
    assert agree["p_value"] > 1e-3, agree


def test_multilabel_refit_uses_targets_not_one_hot_of_a_label():
    entry = ZOO["multilabel_net"]
    model, x, y = _data(entry, 4, seed=1)
    acts = gi.extract_activations(model, (x, y), split="refit", progress=False)
    res = gi.refit_output_layer(acts, progress=False)
    # each output is its own logistic regression on the same regressors: statsmodels' Logit
    import statsmodels.api as sm

    xf = sm.add_constant(acts.head_features().to_numpy(np.float64))
    for j in range(4):
        ref = sm.Logit(y[:, j].numpy(), xf).fit(disp=0)
        np.testing.assert_allclose(res.params().to_numpy()[:, j], ref.params, rtol=1e-6, atol=1e-8)


def test_regression_head_default_response_is_the_real_target():
    entry = ZOO["regression_net"]
    model, x, y = _data(entry, 2, seed=2)
    acts = gi.extract_activations(model, (x, y), split="refit", progress=False)
    res = gi.refit_output_layer(acts, progress=False)
    xf = np.column_stack([np.ones(N), acts.head_features().to_numpy(np.float64)])
    ols = np.linalg.lstsq(xf, y.numpy(), rcond=None)[0]
    np.testing.assert_allclose(res.params().to_numpy(), ols, rtol=1e-6, atol=1e-8)


def test_one_output_regression_read_as_sigmoid_suggests_identity():
    entry = ZOO["regression_net"]
    model, x, _ = _data(entry, 1, seed=3)
    del model.glminterp_link  # a user's model: one output is read as a sigmoid logit
    labels = torch.arange(N) % 10
    acts = gi.extract_activations(model, (x, labels), split="refit", progress=False)
    assert acts.head.link == "sigmoid"
    with pytest.raises(ValueError, match="link='identity'"):
        gi.refit_output_layer(acts, progress=False)


def test_class_labels_for_a_gaussian_head_say_what_to_pass():
    entry = ZOO["regression_net"]
    model, x, _ = _data(entry, 2, seed=4)
    acts = gi.extract_activations(model, (x, torch.arange(N) % 10), split="refit", progress=False)
    with pytest.raises(ValueError, match="real-valued targets"):
        gi.refit_output_layer(acts, progress=False)


@pytest.mark.slow
def test_multilabel_parquet_to_command_line_refit_and_report(tmp_path, capsys):
    import pandas as pd

    from glminterp.cli import main

    entry = ZOO["multilabel_net"]
    model, x, y = _data(entry, 4, seed=5)
    acts = gi.extract_activations(model, (x, y), split="refit", progress=False)
    path = acts.to_parquet(tmp_path / "acts.parquet")
    assert main(["refit", str(path), "--out", str(tmp_path / "refit")]) == 0
    table = pd.read_csv(tmp_path / "refit" / "coefficients.csv")
    assert sorted(table["class"].astype(str).unique()) == ["0", "1", "2", "3"]
    assert (tmp_path / "refit" / "report.html").is_file()
    res = gi.refit_output_layer(gi.Activations.read_parquet(path), progress=False)
    ours = res.coefficients.set_index(["class", "term"])["coef"]
    theirs = table.assign(**{"class": table["class"].astype(str)}).set_index(["class", "term"])["coef"]
    np.testing.assert_allclose(theirs.loc[ours.index].to_numpy(), ours.to_numpy(), rtol=1e-6)
