"""Hooks are always removed, train/eval flags restored, and in-place ops cannot corrupt records."""

import numpy as np
import pytest
import torch
from torch import nn

import glminterp as gi
from glminterp.hooks import ActivationRecorder


def _n_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


class Boom(nn.Module):
    """Raises on the third forward pass."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.act = nn.ReLU()
        self.out = nn.Linear(3, 2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("boom")
        return self.out(self.act(self.fc1(x)))


def test_hooks_removed_and_modes_restored_after_success(mlp_digits, digits):
    mlp_digits.train()
    mlp_digits.fc1.eval()  # a mixed state must come back exactly
    gi.extract_activations(mlp_digits, digits.subset(range(20)), ["fc1"], progress=False)
    assert _n_hooks(mlp_digits) == 0
    assert mlp_digits.training and not mlp_digits.fc1.training and mlp_digits.out.training
    mlp_digits.eval()


def test_hooks_removed_after_exception_mid_extraction():
    torch.manual_seed(0)
    model = Boom().train()
    with pytest.raises(RuntimeError, match="boom"):
        # call 1 is head detection, call 2 the first batch, call 3 raises in the second batch
        gi.extract_activations(model, torch.randn(10, 4), ["fc1"], batch_size=5, progress=False)
    assert _n_hooks(model) == 0 and model.training and model.fc1.training


def test_inplace_relu_does_not_change_record():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(5, 6))
    model.add_module("relu", nn.ReLU(inplace=True))
    model.add_module("out", nn.Linear(6, 3))
    x = torch.randn(40, 5)
    acts = gi.extract_activations(model, x, ["fc1", "relu"], progress=False)
    with torch.no_grad():
        pre = model.fc1(x)
    got = acts.features[acts.columns("fc1")].to_numpy()
    np.testing.assert_allclose(got, pre.numpy(), rtol=1e-6)
    assert (got < 0).any()  # the negative part survived the in-place ReLU


def test_recorder_context_manager_records_copies():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True))
    x = torch.randn(6, 3)
    with ActivationRecorder(model, ["0"]) as rec:
        assert _n_hooks(model) == 1
        model(x)
        model(x)
    assert _n_hooks(model) == 0
    assert len(rec.records["0"]) == 2
    with torch.no_grad():
        np.testing.assert_allclose(rec.records["0"][0].numpy(), model[0](x).numpy(), rtol=1e-6)


def test_recorder_rejects_bad_names_without_leaving_hooks():
    model = nn.Sequential(nn.Linear(3, 4))
    with pytest.raises(KeyError, match="Valid names"):
        ActivationRecorder(model, ["0", "nope"])
    assert _n_hooks(model) == 0
