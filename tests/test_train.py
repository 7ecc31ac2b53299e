"""Deterministic training and safe checkpoints."""

import numpy as np
import pytest
import torch

import glminterp as gi
from glminterp.train import accuracy


def test_training_is_deterministic_and_learns(digits):
    train = digits.get_split("train").subset(range(300))
    runs = []
    for _ in range(2):
        m = gi.build_model("mlp", seed=3, n_inputs=64, n_hidden=10, n_classes=10)
        h = gi.train_model(m, train, epochs=3, lr=1e-2, seed=7, progress=False)
        runs.append((m, h))
    for (a, ha), (b, hb) in [runs]:
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa, pb)
        assert ha.curve.equals(hb.curve)
    curve = runs[0][1].curve
    assert curve["loss"].iloc[-1] < curve["loss"].iloc[0]
    assert runs[0][1].train_ids == tuple(train.ids)
    assert not torch.are_deterministic_algorithms_enabled()  # restored


def test_sigmoid_outputs_train_with_bce(digits):
    m = gi.build_model("mlp", seed=0, n_inputs=64, n_hidden=10, n_classes=10, output="sigmoid")
    h = gi.train_model(m, digits.get_split("train"), epochs=10, lr=3e-2, progress=False)
    assert h.config["link"] == "sigmoid"
    assert accuracy(m, digits.get_split("test")) > 0.5


def test_checkpoint_round_trip(tmp_path, gap_cnn_digits, digits):
    path = gi.save_checkpoint(gap_cnn_digits, tmp_path / "m.pt", architecture="gap_cnn", widths=[8, 16, 8])
    back = gi.load_checkpoint(path)
    with torch.no_grad():
        np.testing.assert_array_equal(back(digits.images[:5]).numpy(), gap_cnn_digits(digits.images[:5]).numpy())
    assert not back.training
    (tmp_path / "m.json").unlink()
    with pytest.raises(FileNotFoundError, match="architecture"):
        gi.load_checkpoint(path)
    assert isinstance(gi.load_checkpoint(path, "gap_cnn", widths=(8, 16, 8)), gi.GapCNN)


def test_build_model_rejects_unknown():
    with pytest.raises(ValueError, match="gap_cnn"):
        gi.build_model("resnet")
