"""Deconvnet projections: hand-computed small networks and equality with captum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import glminterp as gi
from glminterp.saliency import deconvnet
from glminterp.saliency._common import capture_layer

K = torch.tensor([[1.0, -1.0], [2.0, 0.5]])


class ConvReluPool(nn.Module):
    """conv (2x2 kernel K) -> relu -> maxpool 2: a 5x5 input gives a 4x4 map, 2x2 pooled."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 2, bias=False)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        with torch.no_grad():
            self.conv.weight.copy_(K[None, None])

    def forward(self, x):
        return self.pool(self.relu(self.conv(x)))


class ConvReluScale(nn.Module):
    """conv (2x2 kernel K) -> relu -> 1x1 conv with weight ``v``."""

    def __init__(self, v: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 1, 2, bias=False)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(1, 1, 1, bias=False)
        with torch.no_grad():
            self.conv1.weight.copy_(K[None, None])
            self.conv2.weight.fill_(v)

    def forward(self, x):
        return self.conv2(self.relu(self.conv1(x)))


def test_max_pool_switch_places_the_kernel_at_the_arg_max():
    model = ConvReluPool()
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 1, 0] = 1.0  # conv output (0, 0) = K[1, 0] * 1 = 2, the max of pool window (0, 0)
    x[0, 0, 3, 3] = 1.0  # conv outputs around (3, 3): (2,2)=0.5, (2,3)=2, (3,2)=-1, (3,3)=1
    act = capture_layer(model, x, "conv")
    assert act[0, 0, 0, 0] == 2.0 and act[0, 0, 2, 3] == 2.0
    proj = deconvnet(model, x, layer="pool", channel=0, unit=(0, 0), signal="ones")
    expected = np.zeros((5, 5))
    expected[0:2, 0:2] = K.numpy()  # the switch of pool unit (0, 0) is conv unit (0, 0)
    np.testing.assert_allclose(proj[0, 0], expected)
    proj = deconvnet(model, x, layer="pool", channel=0, unit=(1, 1), signal="ones")
    expected = np.zeros((5, 5))
    expected[2:4, 3:5] = K.numpy()  # switch of pool unit (1, 1) is conv unit (2, 3)
    np.testing.assert_allclose(proj[0, 0], expected)
    # signal="activation" scales the projection by the unit's value (2).
    proj = deconvnet(model, x, layer="pool", channel=0, unit=(1, 1))
    np.testing.assert_allclose(proj[0, 0], 2 * expected)


def test_whole_map_projection_sums_the_unit_projections():
    model = ConvReluPool()
    torch.manual_seed(0)
    x = torch.rand(1, 1, 5, 5)
    full = deconvnet(model, x, layer="pool", channel=0, signal="activation")
    pooled = capture_layer(model, x, "pool")[0, 0].detach().numpy()
    parts = sum(
        deconvnet(model, x, layer="pool", channel=0, unit=(i, j), signal="ones") * pooled[i, j]
        for i in range(2)
        for j in range(2)
    )
    np.testing.assert_allclose(full, parts, atol=1e-6)


@pytest.mark.parametrize(
    ("v", "x00", "rule", "factor"),
    [
        # Backward signal -2 reaches the ReLU: deconvnet and guided drop it, backprop passes it
        # because the forward input conv1(0,0) = 2 > 0.
        (-2.0, 1.0, "deconvnet", 0.0),
        (-2.0, 1.0, "guided", 0.0),
        (-2.0, 1.0, "backprop", -2.0),
        # Signal +2 with forward input conv1(0,0) = -1 < 0: only deconvnet passes it.
        (2.0, -1.0, "deconvnet", 2.0),
        (2.0, -1.0, "guided", 0.0),
        (2.0, -1.0, "backprop", 0.0),
    ],
)
def test_relu_rules_by_hand(v, x00, rule, factor):
    model = ConvReluScale(v)
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 0] = x00  # conv1 output (0, 0) = K[1, 0] * x00 = 2 * x00
    proj = deconvnet(model, x, layer="conv2", channel=0, unit=(0, 0), signal="ones", rule=rule)
    expected = np.zeros((3, 3))
    expected[0:2, 0:2] = factor * K.numpy()
    np.testing.assert_allclose(proj[0, 0], expected)


class _LayerOutput(nn.Module):
    """Wraps a model so its output is one layer's map flattened (captum target = unit index)."""

    def __init__(self, model: nn.Module, layer: str, weighted: int | None = None) -> None:
        super().__init__()
        self.model, self.layer, self.weighted = model, layer, weighted

    def forward(self, x):
        act = capture_layer(self.model, x, self.layer)
        if self.weighted is not None:  # d/dA of sum(A_c * stop_grad(A_c)) is A_c
            a = act[:, self.weighted]
            return (a * a.detach()).sum(dim=(1, 2))[:, None]
        return act.flatten(1)


@pytest.fixture(scope="module")
def random_cnn():
    torch.manual_seed(5)
    model = gi.GapCNN(widths=(4, 6, 5))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.bias, 0.05)
    return model.eval()


@pytest.mark.parametrize(("layer", "channel", "unit"), [("relu3", 3, (1, 0)), ("conv2", 5, (2, 3)), ("pool1", 1, (3, 1))])
def test_unit_projection_equals_captum_deconvolution(random_cnn, layer, channel, unit):
    from captum.attr import Deconvolution

    torch.manual_seed(0)
    x = torch.rand(3, 1, 8, 8)
    ours = deconvnet(random_cnn, x, layer=layer, channel=channel, unit=unit, signal="ones")
    shape = capture_layer(random_cnn, x, layer).shape
    flat = (channel * shape[2] + unit[0]) * shape[3] + unit[1]
    ref = Deconvolution(_LayerOutput(random_cnn, layer)).attribute(x, target=flat)
    assert np.abs(ours).max() > 1e-4
    np.testing.assert_allclose(ours, ref.detach().double().numpy(), atol=1e-6)


def test_feature_map_projection_equals_captum_deconvolution(random_cnn):
    from captum.attr import Deconvolution

    torch.manual_seed(1)
    x = torch.rand(2, 1, 8, 8)
    ours = deconvnet(random_cnn, x, layer="relu3", channel=2, signal="activation")
    ref = Deconvolution(_LayerOutput(random_cnn, "relu3", weighted=2)).attribute(x, target=0)
    np.testing.assert_allclose(ours, ref.detach().double().numpy(), atol=1e-6)
    # Per-image channels and batching give the same numbers.
    per = deconvnet(random_cnn, x, layer="relu3", channel=[2, 2], batch_size=1)
    np.testing.assert_allclose(per, ours, atol=1e-7)


def test_guided_rule_equals_captum_guided_backprop(random_cnn):
    from captum.attr import GuidedBackprop

    torch.manual_seed(2)
    x = torch.rand(2, 1, 8, 8)
    ours = deconvnet(random_cnn, x, layer="relu3", channel=1, unit=(0, 1), signal="ones", rule="guided")
    ref = GuidedBackprop(_LayerOutput(random_cnn, "relu3")).attribute(x, target=1 * 4 + 0 * 2 + 1)
    np.testing.assert_allclose(ours, ref.detach().double().numpy(), atol=1e-6)


def test_hooks_are_removed_and_mode_restored(random_cnn):
    random_cnn.train()
    x = torch.rand(1, 1, 8, 8)
    deconvnet(random_cnn, x, layer="relu3", channel=0)
    assert random_cnn.training
    random_cnn.eval()
    assert all(len(m._forward_hooks) == 0 for m in random_cnn.modules())


def test_bad_arguments(random_cnn):
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="channel"):
        deconvnet(random_cnn, x, layer="relu3", channel=99)
    with pytest.raises(ValueError, match="unit"):
        deconvnet(random_cnn, x, layer="relu3", channel=0, unit=(5, 5))
    with pytest.raises(ValueError, match="rule"):
        deconvnet(random_cnn, x, layer="relu3", channel=0, rule="lrp")
    with pytest.raises(ValueError, match="signal"):
        deconvnet(random_cnn, x, layer="relu3", channel=0, signal="grad")
    with pytest.raises(ValueError, match="one per image"):
        deconvnet(random_cnn, x, layer="relu3", channel=[0, 1, 2])
