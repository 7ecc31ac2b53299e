"""Receptive fields from the architecture, top-k activating inputs, patches and projections."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import glminterp as gi
from glminterp.saliency import receptive_field, top_activations
from glminterp.saliency._common import capture_layer


def test_gap_cnn_field_by_hand():
    # conv1 k3 p1: R=3, L=-1; pool1 k2 s2: R=4, J=2; conv2 k3 p1: R=8, L=-3;
    # pool2 k2 s2: R=10, J=4; conv3 k3 p1: R=18, L=-7.
    rf = receptive_field(gi.GapCNN(widths=(2, 2, 2)), "relu3", (1, 28, 28))
    assert (rf.size, rf.jump, rf.offset, rf.output_shape) == ((18, 18), (4, 4), (-7, -7), (7, 7))
    assert rf.bounds(2, 3) == (1, 19, 5, 23)
    assert rf.bounds(0, 0, clip=True) == (0, 11, 0, 11)
    assert rf.steps["module"].tolist() == ["conv1", "pool1", "conv2", "pool2", "conv3"]


class Mixed(nn.Module):
    """Stride, dilation, asymmetric kernels and average pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 2, (3, 5), stride=(1, 2), padding=(1, 2), dilation=(2, 1))
        self.a1 = nn.Tanh()
        self.p1 = nn.AvgPool2d(2, stride=1)
        self.c2 = nn.Conv2d(2, 2, 3, stride=2)

    def forward(self, x):
        return self.c2(self.p1(self.a1(self.c1(x))))


def test_field_is_the_support_of_the_gradient():
    # With generic weights and smooth activations, unit (i, j) depends on exactly the in-image
    # part of its computed field: compare with the non-zero pattern of its gradient.
    torch.manual_seed(0)
    model = Mixed().double()
    rf = receptive_field(model, "c2", (1, 23, 29))
    # Per axis: rows R = 1 + (3-1)*2 = 5, +1 (pool) = 6, +2*1 = 8; J = 2; L = -1 (padding 1).
    # cols R = 5, J = 2, L = -2; pool: R = 7; c2: R = 7 + 2*2 = 11, J = 4.
    assert (rf.size, rf.jump, rf.offset) == ((8, 11), (2, 4), (-1, -2))
    x = torch.randn(1, 1, 23, 29, dtype=torch.float64, requires_grad=True)
    out = capture_layer(model, x, "c2", stop=False)
    for i, j in [(0, 0), (3, 2), (rf.output_shape[0] - 1, rf.output_shape[1] - 1)]:
        (g,) = torch.autograd.grad(out[0, 1, i, j], x, retain_graph=True)
        rows, cols = np.nonzero(g[0, 0].numpy())
        r0, r1, c0, c1 = rf.bounds(i, j, clip=True)
        assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (r0, r1, c0, c1)


def test_unsupported_spatial_module_is_named():
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Upsample(scale_factor=2), nn.Conv2d(1, 1, 3))
    with pytest.raises(ValueError, match="Upsample"):
        receptive_field(model, "2", (1, 10, 10))


@pytest.fixture(scope="module")
def cnn_and_data(digits):
    torch.manual_seed(4)
    model = gi.GapCNN(widths=(4, 6, 5))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.bias, 0.05)
    return model.eval(), digits.subset(np.arange(60))


def test_top_k_matches_brute_force(cnn_and_data):
    model, data = cnn_and_data
    top = top_activations(model, data, layer="relu3", k=4, batch_size=17)
    with torch.no_grad():
        act = capture_layer(model, data.images, "relu3").numpy()
    flat = act.reshape(60, 5, -1)
    for ch in range(5):
        rows = top.table[top.table["channel"] == ch]
        best = np.sort(flat[:, ch].max(axis=1))[::-1][:4]
        np.testing.assert_allclose(rows["activation"].to_numpy(), best, rtol=1e-6)
        first = rows.iloc[0]
        assert act[first["index"], ch, first["row"], first["col"]] == pytest.approx(first["activation"])
        assert first["sample_id"] == data.ids[first["index"]]
    # The patch is the input under the field, NaN outside the image.
    rf = top.receptive_field
    t = top.table.iloc[0]
    r0, r1, c0, c1 = rf.bounds(t["row"], t["col"])
    patch = top.patches[0, 0, 0]
    img = data.images[t["index"], 0].numpy()
    inside = (slice(max(r0, 0) - r0, min(r1, 8) - r0), slice(max(c0, 0) - c0, min(c1, 8) - c0))
    np.testing.assert_allclose(patch[inside], img[max(r0, 0) : min(r1, 8), max(c0, 0) : min(c1, 8)])
    assert np.isnan(patch).sum() == patch.size - patch[inside].size
    assert top.projections.shape == top.patches.shape
    # The projection of a unit lives inside its receptive field: nothing is lost by cropping.
    from glminterp.saliency import deconvnet

    full = deconvnet(model, data.images[[t["index"]]], layer="relu3", channel=t["channel"], unit=(t["row"], t["col"]))
    np.testing.assert_allclose(np.nansum(top.projections[0, 0]), full.sum(), atol=1e-6)


def test_channels_ordered_by_refit_z_with_a_stand_in_refit(cnn_and_data):
    model, data = cnn_and_data
    coefs = pd.DataFrame(
        {
            "class": ["3"] * 6,
            "term": ["const"] + [f"relu3:c{j:02d}" for j in range(5)],
            "coef": [0.1, 1.0, -2.0, 0.5, 3.0, 0.0],
            "se": [1.0] * 6,
            "z": [0.1, 1.0, -2.0, 0.5, 3.0, 0.0],
            "p": [0.9, 0.3, 0.04, 0.6, 0.002, 1.0],
            "p_holm": [np.nan, 0.9, 0.16, 1.0, 0.01, 1.0],
            "p_bh": [np.nan, 0.5, 0.1, 0.75, 0.01, 1.0],
        }
    )
    top = top_activations(model, data, layer="relu3", k=2, refit=coefs, cls=3, project=False)
    assert top.channels == (3, 0, 2, 4, 1)
    assert top.projections is None
    s = top.summary
    assert s.loc[3, "significant"] and not s.loc[1, "significant"]
    assert s.loc[1, "z"] == -2.0
    with pytest.raises(KeyError, match="baseline class"):
        top_activations(model, data, layer="relu3", k=2, refit=coefs, cls=0, project=False)


def test_dense_layer_uses_the_whole_image(mlp_digits, digits):
    data = digits.subset(np.arange(30))
    top = top_activations(mlp_digits, data, layer="act1", k=3, channels=[0, 5])
    assert top.receptive_field is None
    assert top.patches.shape == (2, 3, 1, 8, 8)
    np.testing.assert_allclose(top.patches[0, 0], data.images[top.table.iloc[0]["index"]].numpy())
