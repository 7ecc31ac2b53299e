"""Extraction on the zoo: head features reproduce the logits, reused modules are named by call,
and the model is left exactly as found (state_dict, train flags, requires_grad, hooks)."""

import numpy as np
import pytest
import torch

import glminterp as gi
from glminterp.hooks import ActivationRecorder, ReusedModuleError
from tests.zoo import ZOO, assert_unchanged, frozen_train_mode, state_snapshot, zoo_input

NAMES = list(ZOO)


def _eval_logits(model, x):
    was = {m: m.training for m in model.modules()}
    model.eval()
    with torch.no_grad():
        out = model(x).double().numpy()
    for m, f in was.items():
        m.training = f
    return out


@pytest.mark.parametrize("name", NAMES)
def test_head_features_reproduce_logits(name):
    entry = ZOO[name]
    model = frozen_train_mode(entry.build(seed=1))
    x = zoo_input(entry, n=7)
    snap = state_snapshot(model)
    acts = gi.extract_activations(model, x, progress=False)
    assert_unchanged(model, snap)
    assert acts.head.name == entry.head and acts.head.link == entry.link
    eta = acts.head_features().to_numpy(np.float64) @ acts.head.weight.T + acts.head.bias
    np.testing.assert_allclose(eta, _eval_logits(model, x), atol=1e-4, rtol=0)
    assert len(acts.features) == 7 and acts.features.index.is_unique


def test_reused_relu_resnet_picks_the_block_and_names_calls():
    entry = ZOO["resnet_basic"]
    model = entry.build()
    head = gi.detect_head(model, zoo_input(entry))
    assert (head.input_layer, head.gap) == ("layer2.1", True)
    x = zoo_input(entry, n=5)
    with pytest.raises(ReusedModuleError, match=r"'layer2\.1\.relu#1', 'layer2\.1\.relu#2'"):
        with ActivationRecorder(model, ["layer2.1.relu"]) as rec:
            rec.forward(x)
    acts = gi.extract_activations(model, x, ["layer2.1.relu#2", "layer2.1"], progress=False)
    a = acts.features[acts.columns("layer2.1.relu#2")].to_numpy()
    b = acts.features[acts.columns("layer2.1")].to_numpy()
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ReusedModuleError, match="runs 2 times"):
        gi.extract_activations(model, x, ["layer1.0.relu"], progress=False)


def test_functional_head_input_is_the_heads_own_input():
    entry = ZOO["densenet"]
    model = entry.build()
    head = gi.detect_head(model, zoo_input(entry), input_hook=True)
    assert (head.input_layer, head.gap) == ("classifier#in", False)
    with pytest.raises(gi.HeadError, match="input_hook=True"):
        gi.detect_head(model, zoo_input(entry))


def test_multilabel_and_regression_targets_round_trip(tmp_path):
    entry = ZOO["multilabel_net"]
    model = entry.build()
    x = zoo_input(entry, n=8)
    y = (torch.arange(32).reshape(8, 4) % 3 == 0).float()
    acts = gi.extract_activations(model, (x, y), progress=False)
    assert acts.target_columns == ["target:0", "target:1", "target:2", "target:3"]
    np.testing.assert_array_equal(acts.obs[acts.target_columns].to_numpy(), y.numpy())
    assert acts.obs["label"].isna().all()
    back = gi.Activations.read_parquet(acts.to_parquet(tmp_path / "a.parquet"))
    np.testing.assert_array_equal(back.obs[back.target_columns].to_numpy(), y.numpy())
    reg = ZOO["regression_net"].build()
    t = torch.linspace(-1, 1, 16).reshape(8, 2)
    racts = gi.extract_activations(reg, (x, t), progress=False)
    np.testing.assert_allclose(racts.obs[racts.target_columns].to_numpy(), t.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match=r"one column per output \(2\)"):
        gi.extract_activations(reg, (x, t[:, :1].repeat(1, 3)), progress=False)


def test_lazy_frames_pickle_and_copy():
    import copy
    import pickle

    entry = ZOO["mlp"]
    acts = gi.extract_activations(entry.build(), (zoo_input(entry), torch.arange(6)), progress=False)
    for other in (pickle.loads(pickle.dumps(acts)), copy.deepcopy(acts)):
        assert other.features.equals(acts.features) and other.obs.equals(acts.obs)
