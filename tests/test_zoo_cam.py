"""CAM and Grad-CAM on the zoo equal torchcam on the same (eval-mode) model, run on a copy
left in train mode with frozen parameters, which must come back bit-identical."""

import numpy as np
import pytest
import torch
import torchcam.methods as torchcam_methods  # test-only dependency

import glminterp as gi
from tests.zoo import ZOO, assert_unchanged, frozen_train_mode, state_snapshot, zoo_input

CAM_MODELS = [n for n, e in ZOO.items() if e.cam_layer]
GRADCAM_MODELS = [n for n, e in ZOO.items() if e.gradcam_layer]


def _torchcam(cls, model, layer, x, class_idx, **kw):
    model.eval()
    with cls(model, layer, **kw) as ex:
        if cls is torchcam_methods.CAM:
            with torch.inference_mode():
                model(x)
            return ex(class_idx=class_idx)[0].numpy()
        return ex(class_idx=class_idx, scores=model(x))[0].numpy()


@pytest.mark.parametrize("name", CAM_MODELS)
def test_cam_equals_torchcam(name):
    entry = ZOO[name]
    x = zoo_input(entry, n=5)
    model = frozen_train_mode(entry.build(seed=2))
    snap = state_snapshot(model)
    ours = gi.class_activation_maps(model, x, classes=1, parametrization="network", upsample=False)
    assert_unchanged(model, snap)
    assert ours.layer == entry.cam_layer
    theirs = _torchcam(torchcam_methods.CAM, entry.build(seed=2), entry.cam_layer, x, 1,
                       fc_layer=entry.head)
    np.testing.assert_allclose(ours.maps[:, 0], theirs, atol=1e-5)


@pytest.mark.parametrize("name", GRADCAM_MODELS)
@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_gradcam_equals_torchcam(name, method):
    entry = ZOO[name]
    x = zoo_input(entry, n=5)
    model = frozen_train_mode(entry.build(seed=3))
    snap = state_snapshot(model)
    ours = gi.class_activation_maps(model, x, classes=0, method=method, layer=entry.gradcam_layer,
                                    upsample=False, gradcampp_alpha="torchcam")
    assert_unchanged(model, snap)
    cls = torchcam_methods.GradCAM if method == "gradcam" else torchcam_methods.GradCAMpp
    theirs = _torchcam(cls, entry.build(seed=3), entry.gradcam_layer, x, 0)
    np.testing.assert_allclose(ours.maps[:, 0], theirs, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("densenet", "functional ops in forward"),
        ("flatten_head_cnn", "global-average-pooling head"),
        ("vgg", "global-average-pooling head"),
    ],
)
def test_cam_refusals_say_what_to_do(name, match):
    entry = ZOO[name]
    with pytest.raises(ValueError, match=match) as info:
        gi.class_activation_maps(entry.build(), zoo_input(entry, n=2))
    assert "gradcam" in str(info.value)


def test_sigmoid_head_cam_is_not_a_softmax_contrast():
    entry = ZOO["multilabel_net"]
    model = entry.build()
    del model.glminterp_link  # a user's multi-label model: 4 logits would be guessed as softmax
    x = zoo_input(entry, n=6)
    head = gi.detect_head(model, x, link="sigmoid")
    cam = gi.class_activation_maps(model, x, head=head)  # default parametrization sum_to_zero
    net = gi.class_activation_maps(model, x, head=head, parametrization="network")
    np.testing.assert_allclose(cam.raw, net.raw, atol=1e-12)
    assert cam.classes == ("0", "1", "2", "3") and "sigmoid head" in cam.note


def test_cam_from_a_multilabel_refit_has_per_output_se():
    entry = ZOO["multilabel_net"]
    g = torch.Generator().manual_seed(5)
    x = torch.randn((400, *entry.input_shape), generator=g)
    model = entry.build(seed=5)
    del model.glminterp_link  # the refit's head (sigmoid) must be used, not a softmax guess
    with torch.no_grad():
        y = torch.bernoulli(torch.sigmoid(model(x)), generator=g)
    acts = gi.extract_activations(model, (x, y), split="refit", link="sigmoid", progress=False)
    res = gi.refit_output_layer(acts, progress=False)
    cam = gi.class_activation_maps(model, x[:3], coefficients=res, simultaneous=False)
    assert cam.classes == ("0", "1", "2", "3") and cam.se is not None
    # the map of output j is the GLM's own linear predictor for output j spread over space
    beta = res.params().to_numpy()
    a = cam.activations
    want = np.einsum("k,nkhw->nhw", beta[1:, 2], a)
    low = gi.class_activation_maps(model, x[:3], coefficients=res, simultaneous=False,
                                   upsample=False, normalize=None)
    np.testing.assert_allclose(low.raw[:, 2], want, atol=1e-10)


def test_gradcam_on_a_reused_relu_names_the_call():
    entry = ZOO["resnet_basic"]
    model = entry.build()
    x = zoo_input(entry, n=3)
    with pytest.raises(gi.hooks.ReusedModuleError, match=r"layer2\.1\.relu#2"):
        gi.class_activation_maps(model, x, classes=0, method="gradcam", layer="layer2.1.relu")
    by_call = gi.class_activation_maps(model, x, classes=0, method="gradcam",
                                       layer="layer2.1.relu#2", upsample=False)
    block = gi.class_activation_maps(model, x, classes=0, method="gradcam", layer="layer2.1",
                                     upsample=False)
    np.testing.assert_allclose(by_call.maps, block.maps, atol=1e-12)
    cam = gi.class_activation_maps(model, x, classes=0, layer="layer2.1.relu#2", head=gi.Head(
        **{**gi.detect_head(model, x).__dict__, "input_layer": "layer2.1.relu#2"}),
        parametrization="network", upsample=False)
    ref = gi.class_activation_maps(model, x, classes=0, parametrization="network", upsample=False)
    np.testing.assert_allclose(cam.maps, ref.maps, atol=1e-12)
