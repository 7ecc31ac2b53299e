"""Equality with torchcam 0.5 (CAM, GradCAM, GradCAMpp) on a trained GAP CNN, like with like.

torchcam returns maps at the layer's resolution, min-max normalised as ``(M - min) / (max - min
+ 1e-8)``; CAM without ReLU, Grad-CAM(++) with ReLU. So we compare with ``upsample=False``,
``normalize="minmax"``, ``parametrization="network"`` (raw logits / raw weights).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchcam.methods as torchcam_methods  # noqa: E402 - test-only dependency

from glminterp.maps.cam import class_activation_maps


@pytest.fixture(scope="module")
def batch(digits):
    return digits.images[:20]


def _torchcam(extractor_cls, model, layer, x, class_idx, **kw):
    with extractor_cls(model, layer, **kw) as ex:
        if extractor_cls is torchcam_methods.CAM:
            with torch.inference_mode():
                model(x)
            return ex(class_idx=class_idx)[0].numpy()
        scores = model(x)
        return ex(class_idx=class_idx, scores=scores)[0].numpy()


@pytest.mark.parametrize("cls", [0, 3, 7])
def test_cam_equals_torchcam(gap_cnn_digits, batch, cls):
    ours = class_activation_maps(
        gap_cnn_digits, batch, classes=cls, parametrization="network", upsample=False
    )
    theirs = _torchcam(torchcam_methods.CAM, gap_cnn_digits, "relu3", batch, cls, fc_layer="fc")
    np.testing.assert_allclose(ours.maps[:, 0], theirs, atol=1e-5)


@pytest.mark.parametrize("layer", ["relu3", "relu2", "conv2"])
def test_gradcam_equals_torchcam(gap_cnn_digits, batch, layer):
    ours = class_activation_maps(gap_cnn_digits, batch, classes=4, method="gradcam", layer=layer, upsample=False)
    theirs = _torchcam(torchcam_methods.GradCAM, gap_cnn_digits, layer, batch, 4)
    np.testing.assert_allclose(ours.maps[:, 0], theirs, atol=1e-5)


@pytest.mark.parametrize("layer", ["relu3", "relu2"])
def test_gradcampp_equals_torchcam(gap_cnn_digits, batch, layer):
    ours = class_activation_maps(
        gap_cnn_digits, batch, classes=[1, 9], method="gradcam++", layer=layer, upsample=False,
        gradcampp_alpha="torchcam",
    )
    for j, cls in enumerate((1, 9)):
        theirs = _torchcam(torchcam_methods.GradCAMpp, gap_cnn_digits, layer, batch, cls)
        np.testing.assert_allclose(ours.maps[:, j], theirs, atol=1e-5)
    # the paper's alpha differs from torchcam 0.5's on a nonlinear layer: the option matters
    paper = class_activation_maps(
        gap_cnn_digits, batch, classes=[1, 9], method="gradcam++", layer="relu2", upsample=False
    )
    if layer == "relu2":
        assert np.abs(paper.maps - ours.maps).max() > 1e-3


def test_per_image_classes_equal_torchcam_list(gap_cnn_digits, batch):
    with torch.inference_mode():
        pred = gap_cnn_digits(batch).argmax(1).tolist()
    ours = class_activation_maps(gap_cnn_digits, batch, parametrization="network", upsample=False)
    theirs = _torchcam(torchcam_methods.CAM, gap_cnn_digits, "relu3", batch, pred, fc_layer="fc")
    np.testing.assert_allclose(ours.for_targets([str(p) for p in pred]), theirs, atol=1e-5)
