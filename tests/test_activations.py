"""extract_activations: values equal a hand-written forward pass; ids, obs and I/O."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import glminterp as gi


def _hand_mlp(model, x):
    h = torch.sigmoid(x.flatten(1) @ model.fc1.weight.T + model.fc1.bias)
    return h, h @ model.out.weight.T + model.out.bias


def _hand_cnn(m, x):
    f = nn.functional
    a1 = f.max_pool2d(f.relu(f.conv2d(x, m.conv1.weight, m.conv1.bias, padding=1)), 2)
    a2 = f.max_pool2d(f.relu(f.conv2d(a1, m.conv2.weight, m.conv2.bias, padding=1)), 2)
    pre3 = f.conv2d(a2, m.conv3.weight, m.conv3.bias, padding=1)
    return pre3, f.relu(pre3)


def test_mlp_hidden_layer_and_head_input_equal_hand_forward(mlp_digits, digits):
    acts = gi.extract_activations(mlp_digits, digits, ["fc1", "act1"], batch_size=100, progress=False)
    with torch.no_grad():
        h, logits = _hand_mlp(mlp_digits, digits.images)
        pre = digits.images.flatten(1) @ mlp_digits.fc1.weight.T + mlp_digits.fc1.bias
    np.testing.assert_allclose(acts.features[acts.columns("fc1")].to_numpy(), pre.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acts.head_features().to_numpy(), h.numpy(), rtol=1e-5, atol=1e-6)
    probs = torch.softmax(logits, 1).numpy()
    np.testing.assert_allclose(acts.obs[acts.prob_columns].to_numpy(), probs, rtol=1e-5, atol=1e-7)
    assert acts.obs["pred"].tolist() == probs.argmax(1).tolist()
    assert acts.columns("act1")[:2] == ["act1:000", "act1:001"]


def test_conv_pooled_and_maps_equal_hand_forward(gap_cnn_digits, digits):
    sub = digits.subset(range(64))
    acts = gi.extract_activations(
        gap_cnn_digits, sub, ["conv3", "relu3"], keep_maps=True, batch_size=20, progress=False
    )
    with torch.no_grad():
        pre3, post3 = _hand_cnn(gap_cnn_digits, sub.images)
    np.testing.assert_allclose(acts.maps["conv3"], pre3.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acts.maps["relu3"], post3.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        acts.features[acts.columns("relu3")].to_numpy(), post3.mean((2, 3)).numpy(), rtol=1e-5, atol=1e-6
    )
    assert acts.columns("relu3")[0] == "relu3:c00"
    mx = gi.extract_activations(gap_cnn_digits, sub, "conv3", pool="max", progress=False)
    np.testing.assert_allclose(mx.features.to_numpy(), pre3.amax((2, 3)).numpy(), rtol=1e-5, atol=1e-6)


def test_default_layer_is_head_input_for_gap_head(gap_cnn_digits_acts, gap_cnn_digits, digits):
    acts = gap_cnn_digits_acts
    assert acts.layers == ("relu3",) and acts.head.gap and acts.head.name == "fc"
    # the GLM's linear predictor reproduces the network's logits
    w, b = acts.head.weight, acts.head.bias
    eta = acts.head_features().to_numpy(np.float64) @ w.T + b
    with torch.no_grad():
        logits = gap_cnn_digits(digits.images).double().numpy()
    np.testing.assert_allclose(eta, logits, rtol=1e-4, atol=1e-5)


def test_ids_labels_and_splits_travel(gap_cnn_digits_acts, digits):
    acts = gap_cnn_digits_acts
    assert acts.features.index.tolist() == digits.ids.tolist()
    assert acts.obs["label"].tolist() == digits.labels.tolist()
    assert acts.obs["split"].tolist() == digits.split.tolist()
    refit = acts.subset("refit")
    assert set(refit.obs.index) == set(digits.get_split("refit").ids)
    assert refit.maps["relu3"].shape[0] == len(refit)


def test_inputs_dataloader_tuple_and_tensor_agree(mlp_digits, digits):
    sub = digits.subset(range(50))
    a = gi.extract_activations(mlp_digits, sub, progress=False)
    b = gi.extract_activations(mlp_digits, torch.utils.data.DataLoader(sub, batch_size=7), progress=False)
    c = gi.extract_activations(mlp_digits, (sub.images, sub.labels, sub.ids), progress=False)
    d = gi.extract_activations(mlp_digits, sub.images, progress=False, split="refit")
    pd.testing.assert_frame_equal(a.features, b.features)
    pd.testing.assert_frame_equal(a.features, c.features)
    np.testing.assert_array_equal(a.features.to_numpy(), d.features.to_numpy())
    assert d.features.index[0] == "0" and d.obs["label"].isna().all() and (d.obs["split"] == "refit").all()


def test_wrong_layer_lists_valid_names_closest_first(gap_cnn_digits, digits):
    with pytest.raises(KeyError, match=r"'conv4' is not a module of GapCNN.*closest first: conv\d, conv\d, conv\d, "):
        gi.extract_activations(gap_cnn_digits, digits.images[:4], "conv4", progress=False)


def test_parquet_round_trip(tmp_path, gap_cnn_digits_acts):
    acts = gap_cnn_digits_acts.subset("refit")
    acts.to_parquet(tmp_path / "a.parquet")
    back = gi.Activations.read_parquet(tmp_path / "a.parquet")
    pd.testing.assert_frame_equal(back.features, acts.features)
    pd.testing.assert_frame_equal(back.obs, acts.obs)
    np.testing.assert_array_equal(back.maps["relu3"], acts.maps["relu3"])
    np.testing.assert_array_equal(back.head.weight, acts.head.weight)
    assert back.metadata["versions"]["torch"].startswith("2.")
    assert back.layers == acts.layers
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_csv_export(tmp_path, mlp_digits_acts):
    folder = mlp_digits_acts.subset("test").to_csv(tmp_path / "csv")
    f = pd.read_csv(folder / "features.csv", index_col=0)
    np.testing.assert_allclose(f.to_numpy(), mlp_digits_acts.subset("test").features.to_numpy(), rtol=1e-7)
    assert (folder / "metadata.json").is_file() and (folder / "obs.csv").is_file()


def test_extraction_is_deterministic(mlp_digits, digits):
    a = gi.extract_activations(mlp_digits, digits.subset(range(100)), progress=False)
    b = gi.extract_activations(mlp_digits, digits.subset(range(100)), progress=False)
    pd.testing.assert_frame_equal(a.features, b.features)
