"""Hand-computed CAM, Grad-CAM and Grad-CAM++ maps on tiny linear models; conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from glminterp.head import detect_head
from glminterp.maps.cam import class_activation_maps

# Two 3x3 channel maps and a 3-class head (hand-checked values below).
A1 = np.array([[1, 0, 2], [0, 3, 0], [1, 1, 1]], dtype=float)
A2 = np.array([[0, 1, 0], [2, 0, 1], [0, 0, 3]], dtype=float)
W = np.array([[1.0, 2.0], [-1.0, 0.0], [0.5, -1.0]])
B = np.array([0.3, 0.6, 0.0])
# CAM_c = sum_k W[c, k] A_k, by hand:
CAM0 = np.array([[1, 2, 2], [4, 3, 2], [1, 1, 7]], dtype=float)
CAM1 = np.array([[-1, 0, -2], [0, -3, 0], [-1, -1, -1]], dtype=float)
CAM2 = np.array([[0.5, -1, 1], [-2, 1.5, -1], [0.5, 0.5, -2.5]])


class TinyGap(nn.Module):
    """Optional 2x2 average pool -> identity 'feat' (the CAM layer) -> GAP -> Linear."""

    def __init__(self, pool: bool = False) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2) if pool else nn.Identity()
        self.feat = nn.Identity()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(W))
            self.fc.bias.copy_(torch.tensor(B))

    def forward(self, x):
        return self.fc(self.flatten(self.gap(self.feat(self.pool(x)))))


@pytest.fixture
def tiny():
    x = torch.tensor(np.stack([A1, A2])[None], dtype=torch.float32)
    return TinyGap(), x


def test_cam_network_weights_hand_computed(tiny):
    model, x = tiny
    r = class_activation_maps(
        model, x, parametrization="network", normalize=None, upsample=False
    )
    assert r.layer == "feat" and r.classes == ("0", "1", "2")
    np.testing.assert_allclose(r.maps[0], np.stack([CAM0, CAM1, CAM2]), atol=1e-12)
    np.testing.assert_allclose(r.raw, r.maps)


def test_cam_contrasts_and_intercept_share(tiny):
    model, x = tiny
    stz = class_activation_maps(model, x, normalize=None, upsample=False)
    assert stz.parametrization == "sum_to_zero" and "sum-to-zero" in stz.note
    mean = (CAM0 + CAM1 + CAM2) / 3
    np.testing.assert_allclose(stz.raw[0], np.stack([CAM0, CAM1, CAM2]) - mean, atol=1e-12)
    ref = class_activation_maps(
        model, x, parametrization="reference", normalize=None, upsample=False
    )
    assert ref.classes == ("1", "2")
    np.testing.assert_allclose(ref.raw[0], np.stack([CAM1 - CAM0, CAM2 - CAM0]), atol=1e-12)
    with pytest.raises(ValueError, match="baseline"):
        class_activation_maps(model, x, classes="0", parametrization="reference")
    # intercept spread: the map's spatial mean is the linear predictor (the logit)
    spread = class_activation_maps(
        model, x, parametrization="network", intercept="spread", normalize=None, upsample=False
    )
    np.testing.assert_allclose(spread.raw[0, 1], CAM1 + 0.6, atol=1e-12)
    with torch.no_grad():
        logits = model(x).double().numpy()
    np.testing.assert_allclose(spread.raw.mean(axis=(2, 3)), logits, atol=1e-6)


def test_cam_from_coefficients_equal_to_weights_is_identical(tiny):
    model, x = tiny
    full = np.vstack([B, W.T])  # (p + 1, K), intercept row 0
    for par, coef in [
        ("sum_to_zero", full - full.mean(axis=1, keepdims=True)),
        ("reference", full[:, 1:] - full[:, :1]),
        ("network", full),
    ]:
        net = class_activation_maps(model, x, parametrization=par, intercept="spread")
        glm = class_activation_maps(
            model, x, parametrization=par, intercept="spread", coefficients=coef
        )
        np.testing.assert_allclose(glm.raw, net.raw, rtol=0, atol=1e-6)  # float32 head
        # the head's own parameters as arrays: bit-identical maps
        same = class_activation_maps(
            model, x, parametrization=par, intercept="spread",
            coefficients=detect_head(model, x).params(par),
        )
        np.testing.assert_array_equal(net.maps, same.maps)
        np.testing.assert_array_equal(net.raw, same.raw)
        assert glm.source == "arrays" and net.source == "network"


def test_relu_minmax_and_class_selection(tiny):
    model, x = tiny
    r = class_activation_maps(
        model, x, classes=[2, "0"], parametrization="network", relu=True, upsample=False
    )
    assert r.classes == ("2", "0")
    relu2 = np.maximum(CAM2, 0)
    np.testing.assert_allclose(r.maps[0, 0], relu2 / (relu2.max() + 1e-8), atol=1e-12)
    np.testing.assert_allclose(r.maps[0, 1], (CAM0 - 1) / (6 + 1e-8), atol=1e-12)
    np.testing.assert_allclose(r.map("0"), r.maps[:, 1])
    np.testing.assert_allclose(r.for_targets(["0"])[0], r.maps[0, 1])


def test_bilinear_upsampling_hand_computed():
    model = TinyGap(pool=True)
    # after 2x2 average pooling: A1 = 8i + 4j, A2 = 0 on the 2x2 grid
    a1 = np.array([[0.0, 4.0], [8.0, 12.0]])
    x = torch.tensor(np.kron(a1, np.ones((2, 2))), dtype=torch.float32)
    x = torch.stack([x, torch.zeros_like(x)])[None]
    r = class_activation_maps(model, x, classes="0", parametrization="network", normalize=None)
    assert r.maps.shape == (1, 1, 4, 4)
    # align_corners=False, scale 2: source coordinates clamp to [0, 0.25, 0.75, 1]
    s = np.array([0.0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(r.raw[0, 0], 8 * s[:, None] + 4 * s[None, :], atol=1e-12)


def test_gradcam_on_gap_head_is_relu_cam_over_hw(tiny, digits, gap_cnn_digits):
    model, x = tiny
    g = class_activation_maps(model, x, method="gradcam", layer="feat", normalize=None, upsample=False)
    assert g.relu and g.parametrization == "network"
    np.testing.assert_allclose(g.maps[0], np.maximum(np.stack([CAM0, CAM1, CAM2]), 0) / 9, atol=1e-7)
    # on a trained CNN, in every parametrization
    xb = digits.images[:12]
    for par in ("network", "sum_to_zero", "reference"):
        cam = class_activation_maps(gap_cnn_digits, xb, parametrization=par, normalize=None, upsample=False)
        gc = class_activation_maps(
            gap_cnn_digits, xb, method="gradcam", parametrization=par, normalize=None, upsample=False
        )
        hw = cam.raw.shape[2] * cam.raw.shape[3]
        np.testing.assert_allclose(gc.raw, cam.raw / hw, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gc.maps, np.maximum(cam.raw, 0) / hw, rtol=1e-5, atol=1e-6)


def test_gradcampp_paper_weights_hand_computed(tiny):
    model, x = tiny
    r = class_activation_maps(
        model, x, classes="0", method="gradcam++", layer="feat", normalize=None, upsample=False
    )
    # g_k = W[0, k] / 9 everywhere; alpha = g^2 / (2 g^2 + S_k g^3) = 1 / (2 + S_k g);
    # weight_k = 9 relu(g_k) / (2 + S_k g_k) with S_1 = 9, S_2 = 7: 1/3 and 9/16.
    np.testing.assert_allclose(r.maps[0, 0], np.maximum(A1 / 3 + 9 / 16 * A2, 0), rtol=1e-6)
    tc = class_activation_maps(
        model, x, classes="0", method="gradcam++", layer="feat", normalize=None, upsample=False,
        gradcampp_alpha="torchcam",
    )
    # torchcam 0.5's alpha is g^2: weight_k = 9 g_k^3
    np.testing.assert_allclose(tc.maps[0, 0], (A1 / 81 + 8 * A2 / 81), rtol=1e-6)


def test_gradients_run_inside_inference_mode_and_restore_state(gap_cnn_digits, digits):
    model = gap_cnn_digits
    model.train()
    n_hooks = sum(len(m._forward_hooks) for m in model.modules())
    with torch.inference_mode():
        r = class_activation_maps(model, digits.images[:5], method="gradcam", layer="relu2")
    assert model.training and all(m.training for m in model.modules())
    assert sum(len(m._forward_hooks) for m in model.modules()) == n_hooks
    model.eval()
    assert r.maps.shape == (5, 10, 8, 8) and np.isfinite(r.maps).all()
    assert not r.maps.flags.writeable


def test_batching_does_not_change_maps(gap_cnn_digits, digits):
    x = digits.images[:10]
    for method in ("cam", "gradcam++"):
        a = class_activation_maps(gap_cnn_digits, x, method=method, batch_size=3)
        b = class_activation_maps(gap_cnn_digits, x, method=method, batch_size=64)
        # float32 forward passes differ in the last bits between batch sizes; min-max would
        # amplify that on flat maps, so compare the linear maps
        np.testing.assert_allclose(a.raw, b.raw, rtol=1e-4, atol=1e-6 * np.abs(b.raw).max())


def test_input_validation(tiny, gap_cnn_digits, digits):
    model, x = tiny
    with pytest.raises(ValueError, match="method"):
        class_activation_maps(model, x, method="scorecam")
    with pytest.raises(ValueError, match="GAP|global-average"):
        class_activation_maps(gap_cnn_digits, digits.images[:2], layer="relu2")
    with pytest.raises(ValueError, match="columns"):
        class_activation_maps(model, x, coefficients=np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"\(p \+ 1, K'\)"):
        class_activation_maps(model, x, coefficients=np.zeros((4, 3)))
    with pytest.raises(KeyError, match="feat"):
        class_activation_maps(model, x, method="gradcam", layer="fea")
    with pytest.raises(ValueError, match="coefficients apply"):
        class_activation_maps(model, x, method="gradcam", coefficients=np.zeros((3, 3)))
