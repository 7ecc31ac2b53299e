"""Occlusion: a hand-computed one-conv network, equality with captum's Occlusion, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import glminterp as gi
from glminterp.saliency import occlusion
from glminterp.saliency.occlusion import window_positions


class OneConv(nn.Module):
    """conv (2x2 ones, no bias) -> relu -> GAP -> Linear(1, 2) with logits (0, mean map)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 2, bias=False)
        self.relu = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.fc.weight.copy_(torch.tensor([[0.0], [1.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.flatten(self.gap(self.relu(self.conv(x)))))


def test_window_positions_match_captum_grid():
    # ceil((8 - 3) / 2) + 1 = 4 positions; the last window (6..8) is clipped at the border.
    assert window_positions(8, 3, 2).tolist() == [0, 2, 4, 6]
    assert window_positions(4, 2, 2).tolist() == [0, 2]
    assert window_positions(5, 5, 1).tolist() == [0]
    with pytest.raises(ValueError, match="larger than the input"):
        window_positions(4, 5, 1)


def test_one_conv_network_by_hand():
    model = OneConv()
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    res = occlusion(model, x, window=2, stride=2, baseline=0.0, target=1, layer="conv")
    # Each pixel enters (number of 2x2 conv windows covering it) conv outputs:
    # c = outer([1,2,2,1],[1,2,2,1]). Map total = sum(c * x) = 4*9*6 + 6*9 = 270; mean = 30.
    # Zeroing a 2x2 block removes sum(c * x) over the block:
    #   top-left:  0*1 + 1*2 + 4*2 + 5*4 = 30      top-right: 2*2 + 3*1 + 6*4 + 7*2 = 45
    #   bottom-left: 8*2 + 9*4 + 12*1 + 13*2 = 90  bottom-right: 10*4 + 11*2 + 14*2 + 15*1 = 105
    totals = np.array([[270 - 30, 270 - 45], [270 - 90, 270 - 105]], dtype=float)
    np.testing.assert_allclose(res.activation[0], totals)
    np.testing.assert_allclose(res.base_activation, [270.0])
    # p(class 1) = sigmoid(mean map) since logits are (0, mean).
    np.testing.assert_allclose(res.probability[0], 1 / (1 + np.exp(-totals / 9)), rtol=1e-6)
    np.testing.assert_allclose(res.base_probability, [1 / (1 + np.exp(-30.0))], rtol=1e-6)
    assert (res.label == 1).all()
    assert res.channel.tolist() == [0]
    assert res.rows.tolist() == [0, 2] and res.cols.tolist() == [0, 2]


def test_label_panel_changes_when_occlusion_flips_the_class():
    model = OneConv()
    with torch.no_grad():
        model.fc.bias.copy_(torch.tensor([10.0, 0.0]))  # class 1 needs mean map > 10
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 3, 3] = 45.0  # only the bottom-right conv output sees it: mean = 45 / 9 = 5
    x[0, 0, 0, 0] = 54.0  # mean = 5 + 6 = 11 > 10: class 1 unoccluded
    res = occlusion(model, x, window=2, stride=2, baseline=0.0, target=1)
    # Occluding either loaded corner drops the mean below 10 -> label 0 there.
    assert res.label[0].tolist() == [[0, 1], [1, 0]]
    assert res.summary.loc[0, "frac_label_changed"] == pytest.approx(0.5)


def test_default_baseline_is_the_data_mean_and_default_target_the_label(digits):
    model = OneConv()
    data = digits.subset(np.flatnonzero(digits.labels.numpy() <= 1)[:5])  # a 2-class model
    res = occlusion(model, data, window=4, stride=4)
    np.testing.assert_allclose(res.baseline.ravel(), [float(data.images.mean())], rtol=1e-6)
    assert res.target.tolist() == data.labels.tolist()
    res2 = occlusion(model, data.images, window=4, stride=4)  # no labels: predicted class
    assert res2.target.tolist() == [1] * 5


@pytest.fixture(scope="module")
def random_cnn():
    torch.manual_seed(3)
    model = gi.GapCNN(widths=(4, 6, 5))
    for m in model.modules():  # positive-ish biases so that ReLU maps are not all zero
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.bias, 0.05)
    return model.eval()


@pytest.mark.parametrize(("window", "stride"), [(3, 2), (2, 1), (4, 3)])
def test_probability_panel_equals_captum_occlusion(random_cnn, window, stride):
    from captum.attr import Occlusion

    torch.manual_seed(0)
    x = torch.rand(4, 1, 8, 8)
    target = torch.tensor([0, 3, 7, 9])
    res = occlusion(random_cnn, x, window=window, stride=stride, baseline=0.3, target=target)
    occ = Occlusion(lambda z: torch.softmax(random_cnn(z), dim=1))
    ref = occ.attribute(
        x, sliding_window_shapes=(1, window, window), strides=(1, stride, stride),
        baselines=0.3, target=target, perturbations_per_eval=16,
    )
    got = res.pixel_attribution()
    assert np.abs(got).max() > 1e-4  # the comparison is not between zeros
    np.testing.assert_allclose(got, ref[:, 0].double().numpy(), atol=1e-6)


def test_activation_panel_equals_captum_on_the_map_total(random_cnn):
    from captum.attr import Occlusion

    from glminterp.saliency._common import capture_layer

    torch.manual_seed(1)
    x = torch.rand(2, 1, 8, 8)
    res = occlusion(random_cnn, x, window=3, stride=2, baseline=0.0, layer="relu3", channel=2)
    occ = Occlusion(lambda z: capture_layer(random_cnn, z, "relu3", stop=False)[:, 2].sum(dim=(1, 2)))
    ref = occ.attribute(x, sliding_window_shapes=(1, 3, 3), strides=(1, 2, 2), baselines=0.0)
    np.testing.assert_allclose(res.pixel_attribution("activation"), ref[:, 0].double().numpy(), atol=1e-5)
    assert res.channel.tolist() == [2, 2]


def test_strongest_map_and_batching_invariance(random_cnn):
    torch.manual_seed(2)
    x = torch.rand(3, 1, 8, 8)
    a = occlusion(random_cnn, x, window=2, stride=2, layer="relu3", batch_size=7)
    b = occlusion(random_cnn, x, window=2, stride=2, layer="relu3", batch_size=1000)
    np.testing.assert_allclose(a.probability, b.probability, atol=1e-7)
    np.testing.assert_allclose(a.activation, b.activation, atol=1e-6)
    with torch.no_grad():
        from glminterp.saliency._common import capture_layer

        totals = capture_layer(random_cnn, x, "relu3").sum(dim=(2, 3)).numpy()
    assert a.channel.tolist() == totals.argmax(axis=1).tolist()
    np.testing.assert_allclose(a.base_activation, totals.max(axis=1), rtol=1e-5)


def test_bad_arguments(random_cnn):
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="window"):
        occlusion(random_cnn, x, window=0, stride=1)
    with pytest.raises(ValueError, match="target"):
        occlusion(random_cnn, x, window=2, stride=2, target=[1, 2])
    with pytest.raises(KeyError, match="relu9"):
        occlusion(random_cnn, x, window=2, stride=2, layer="relu9")
    with pytest.raises(ValueError, match="baseline"):
        occlusion(random_cnn, x, window=2, stride=2, baseline=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        occlusion(random_cnn, x[0], window=2, stride=2)
