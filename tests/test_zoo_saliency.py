"""Receptive fields, patches, occlusion, deconvnet, faithfulness and Siddhartha on the zoo: the
field equals the support of the input gradient, every method runs, and the model (left in
train mode with frozen parameters) comes back bit-identical."""

import numpy as np
import pytest
import torch

import glminterp as gi
from glminterp.saliency import receptive_field
from glminterp.saliency._common import capture_layer
from tests.zoo import ZOO, assert_unchanged, frozen_train_mode, state_snapshot, zoo_input

CONV = [n for n, e in ZOO.items() if e.gradcam_layer]


def _gradient_support(model, layer, shape, i, j, n=24):
    """Bounding box of the union over random inputs of the support of d unit(i, j) / d input."""
    model = model.double().eval()
    x = torch.randn(n, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    out = capture_layer(model, x, layer)
    (g,) = torch.autograd.grad(out[:, :, i, j].sum(), x)
    rows, cols = np.nonzero((g != 0).any(dim=(0, 1)).numpy())
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


# flatten_head_cnn's Linear head fixes its input at 8x8
FIELDS = [(n, side) for n in CONV for side in (8, 20) if side == 8 or n != "flatten_head_cnn"]


@pytest.mark.parametrize(("name", "side"), FIELDS)
def test_receptive_field_is_the_gradient_support(name, side):
    entry = ZOO[name]
    shape = (entry.in_channels, side, side)
    model = frozen_train_mode(entry.build())
    snap = state_snapshot(model)
    rf = receptive_field(model, entry.gradcam_layer, shape)
    assert_unchanged(model, snap)
    h, w = rf.output_shape
    for i, j in {(0, 0), (h // 2, w // 2), (h - 1, w - 1), (0, w - 1)}:
        assert _gradient_support(entry.build(), entry.gradcam_layer, shape, i, j) == rf.bounds(
            i, j, clip=True
        ), (i, j)


def test_resnet_field_is_not_the_chain_arithmetic():
    entry = ZOO["resnet_basic"]
    rf = receptive_field(entry.build(), "layer2.1", (1, 28, 28))
    # conv1 (3) + layer1: 4 convs (+8) = 11, layer2: stride-2 conv (+2) then 3 convs at jump 2
    # (+12) = 25; the 1x1 shortcuts add nothing in parallel.
    assert (rf.size, rf.jump) == ((25, 25), (2, 2))
    assert rf.offset == (-12, -12)


@pytest.mark.parametrize("name", CONV)
def test_occlusion_deconvnet_patches_leave_model_unchanged(name):
    entry = ZOO[name]
    x = zoo_input(entry, n=4)
    model = frozen_train_mode(entry.build())
    snap = state_snapshot(model)
    occ = gi.occlusion(model, x, target=0, window=3, stride=2, layer=entry.gradcam_layer)
    assert np.isfinite(occ.probability).all() and np.isfinite(occ.activation).all()
    dec = gi.deconvnet(model, x, layer=entry.gradcam_layer, channel=0)
    assert dec.shape == x.shape and np.isfinite(dec).all()
    top = gi.top_activations(model, x, layer=entry.gradcam_layer, k=2, channels=[0, 1])
    t = top.table
    rf = top.receptive_field
    for _, row in t.iterrows():
        r0, r1, c0, c1 = rf.bounds(int(row["row"]), int(row["col"]), clip=True)
        assert 0 <= r0 < r1 <= 8 and 0 <= c0 < c1 <= 8
    assert_unchanged(model, snap)


@pytest.mark.parametrize("name", ["resnet_basic", "mobilenet", "multilabel_net", "mlp"])
def test_faithfulness_leaves_model_unchanged(name):
    entry = ZOO[name]
    x = zoo_input(entry, n=4)
    model = frozen_train_mode(entry.build())
    snap = state_snapshot(model)
    sal = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(0)).numpy()
    res = gi.deletion_insertion(model, x, sal, targets=[0, 1, 0, 1], steps=4)
    assert np.isfinite(res.deletion_auc).all()
    assert_unchanged(model, snap)


@pytest.mark.parametrize("name", [n for n, e in ZOO.items() if e.cam_layer])
def test_siddhartha_runs_on_gap_heads_and_leaves_model_unchanged(name):
    entry = ZOO[name]
    x = zoo_input(entry, n=6)
    model = frozen_train_mode(entry.build())
    snap = state_snapshot(model)
    res = gi.siddhartha(model, x, 0, min_size=2, n_boot=0)
    assert res is not None
    assert_unchanged(model, snap)


def test_saliency_on_a_reused_relu_names_the_call():
    entry = ZOO["resnet_basic"]
    model = entry.build()
    x = zoo_input(entry, n=2)
    with pytest.raises(gi.hooks.ReusedModuleError, match=r"layer1\.0\.relu#2"):
        gi.deconvnet(model, x, layer="layer1.0.relu", channel=0)
    with pytest.raises(gi.hooks.ReusedModuleError, match=r"layer1\.0\.relu#2"):
        receptive_field(model, "layer1.0.relu", (1, 8, 8))
    with torch.no_grad():
        second = capture_layer(model, x, "layer1.0.relu#2")
        block = capture_layer(model, x, "layer1.0")
    np.testing.assert_array_equal(second.numpy(), block.numpy())
    assert receptive_field(model, "layer1.0.relu#2", (1, 20, 20)).size == receptive_field(
        model, "layer1.0", (1, 20, 20)
    ).size
