"""The default study's training recipe: BatchNorm GAP CNN, seeded shifts, AdamW, one cycle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchcam.methods as torchcam_methods  # noqa: E402 - test-only dependency

import glminterp as gi
from glminterp.maps.cam import class_activation_maps
from glminterp.train import accuracy, affine_images, shift_images

RECIPE = {"optimizer": "adamw", "schedule": "onecycle", "augment": "shift", "max_shift": 1,
          "weight_decay": 1e-4, "batch_size": 32}


def test_shifts_move_each_image_by_whole_pixels_with_zero_fill():
    x = torch.arange(2 * 1 * 5 * 6, dtype=torch.float32).reshape(2, 1, 5, 6) + 1
    gen = torch.Generator().manual_seed(3)
    out = shift_images(x, 2, torch.Generator().manual_seed(3))
    dy, dx = torch.randint(-2, 3, (2, 2), generator=gen)  # the same draws, by hand
    for b in range(2):
        want = torch.zeros(5, 6)
        for r in range(5):
            for c in range(6):
                rs, cs = r - int(dy[b]), c - int(dx[b])
                if 0 <= rs < 5 and 0 <= cs < 6:
                    want[r, c] = x[b, 0, rs, cs]
        assert torch.equal(out[b, 0], want)
    assert torch.equal(shift_images(x, 0, torch.Generator()), x)


def test_affine_without_motion_is_the_identity():
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = affine_images(x, 0, torch.Generator().manual_seed(1), degrees=0.0, scale=0.0)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)


def _trained(digits, seed=5, **model_kw):
    model = gi.build_model("gap_cnn", seed=0, widths=(8, 16, 8), batchnorm=True, **model_kw)
    hist = gi.train_model(model, digits.get_split("train"), epochs=4, lr=5e-3, seed=seed,
                          progress=False, **RECIPE)
    return model, hist


def test_recipe_is_deterministic_learns_and_is_recorded(digits):
    (a, ha), (b, hb) = _trained(digits), _trained(digits)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and any("bn3.running_mean" in k for k in sa)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # weights and BatchNorm statistics
    assert ha.curve.equals(hb.curve)
    assert not torch.are_deterministic_algorithms_enabled()  # restored
    assert accuracy(a, digits.get_split("test")) > 0.5  # chance: 0.1 (8x8 images, 4 epochs)
    assert ha.curve["loss"].iloc[-1] < ha.curve["loss"].iloc[0]
    assert ha.config["optimizer"] == "AdamW" and ha.config["schedule"] == "onecycle"
    assert ha.config["augment"] == "shift" and ha.config["max_shift"] == 1
    _, other = _trained(digits, seed=6)
    assert not other.curve.equals(ha.curve)  # the seed drives shuffling and the shifts


def test_plain_adam_records_what_it_always_did(digits):
    model = gi.build_model("mlp", seed=0, n_inputs=64, n_hidden=5, n_classes=10)
    h = gi.train_model(model, digits.get_split("train"), epochs=1, progress=False)
    assert set(h.config) == {"epochs", "batch_size", "lr", "weight_decay", "seed", "link",
                             "optimizer"}
    assert h.config["optimizer"] == "Adam"


@pytest.mark.parametrize(("kw", "name"), [({"optimizer": "sgd"}, "optimizer"),
                                          ({"schedule": "step"}, "schedule"),
                                          ({"augment": "flip"}, "augment"),
                                          ({"label_smoothing": 1.0}, "label_smoothing")])
def test_unknown_options_are_named(digits, kw, name):
    model = gi.build_model("mlp", seed=0, n_inputs=64, n_hidden=5, n_classes=10)
    with pytest.raises(ValueError, match=name):
        gi.train_model(model, digits.get_split("train"), epochs=1, progress=False, **kw)


def test_batchnorm_gap_cnn_keeps_the_cam_head_and_is_left_as_found(digits):
    model, _ = _trained(digits, dropout=0.25)
    names = [n for n, _ in model.named_children()]
    assert names[:4] == ["conv1", "bn1", "relu1", "pool1"] and names[-2:] == ["drop", "fc"]
    head = gi.detect_head(model, digits.images[:2])
    assert head.name == "fc" and head.gap and head.input_layer == "relu3"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    acts = gi.extract_activations(model, digits, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training
    # the head's regressors are the channel means of relu3 (eval-mode BatchNorm, no dropout)
    with torch.inference_mode():
        x = digits.images[:7]
        maps = model.relu3(model.bn3(model.conv3(model.pool2(model._block(2, model.pool1(
            model._block(1, x)))))))
    np.testing.assert_allclose(acts.head_features().to_numpy()[:7],
                               maps.mean((2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    ours = class_activation_maps(model, x, classes=3, parametrization="network", upsample=False)
    with torchcam_methods.CAM(model, "relu3", fc_layer="fc") as ex:
        with torch.inference_mode():
            model(x)
        theirs = ex(class_idx=3)[0].numpy()
    np.testing.assert_allclose(ours.maps[:, 0], theirs, atol=1e-5)


def test_bad_dropout_is_named():
    with pytest.raises(ValueError, match="dropout"):
        gi.GapCNN(dropout=1.0)


def test_old_checkpoints_without_batchnorm_still_load(tmp_path, gap_cnn_digits, digits):
    path = gi.save_checkpoint(gap_cnn_digits, tmp_path / "m.pt", architecture="gap_cnn",
                              widths=[8, 16, 8])
    back = gi.load_checkpoint(path)
    assert not hasattr(back, "bn1") and not hasattr(back, "drop")
    with torch.no_grad():
        torch.testing.assert_close(back(digits.images[:4]), gap_cnn_digits(digits.images[:4]))
