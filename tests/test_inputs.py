"""Data an analysis reads: arrays, Datasets, DataLoaders, npz, IDX, image folders, splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _analysis_support import write_rgb_folder

import glminterp as gi
from glminterp.inputs import as_labeled_images, from_arrays, resolve_splits


def test_arrays_channels_last_integers_and_string_labels():
    x = np.arange(4 * 5 * 5 * 3, dtype=np.uint8).reshape(4, 5, 5, 3)
    ds = from_arrays(x, np.array(["cat", "dog", "cat", "dog"]))
    assert ds.images.shape == (4, 3, 5, 5) and ds.classes == ("cat", "dog")
    assert ds.labels.tolist() == [0, 1, 0, 1]
    # integers are divided by 255, channel c of pixel (0, 0) of image 0 is c
    np.testing.assert_allclose(ds.images[0, :, 0, 0].numpy(), np.arange(3) / 255, rtol=1e-6)
    assert ds.preprocessing["scaling"] == "integers divided by 255"
    with pytest.raises(ValueError, match="flat rows"):
        from_arrays(np.zeros((4, 64)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="one per image"):
        from_arrays(np.zeros((4, 8, 8)), [0, 1])


def test_dataset_and_dataloader_materialise_in_order():
    x = torch.randn(10, 1, 4, 4)
    y = torch.arange(10) % 2
    tds = torch.utils.data.TensorDataset(x, y)
    for source in (tds, torch.utils.data.DataLoader(tds, batch_size=3)):
        ds = as_labeled_images(source, classes=("a", "b"))
        assert torch.equal(ds.images, x) and torch.equal(ds.labels, y)
        assert ds.classes == ("a", "b") and len(set(ds.ids)) == 10
    with pytest.raises(ValueError, match="labels=..."):
        as_labeled_images(x)
    with pytest.raises(TypeError, match="data must be"):
        as_labeled_images(42)


def test_npz_with_its_own_split_and_class_names(tmp_path):
    rng = np.random.default_rng(0)
    split = np.array(["refit"] * 6 + ["test"] * 4)
    np.savez(tmp_path / "d.npz", x=rng.random((10, 6, 6)).astype(np.float32),
             y=np.arange(10) % 2, classes=np.array(["no", "yes"]), split=split)
    ds = as_labeled_images(tmp_path / "d.npz")
    assert ds.classes == ("no", "yes") and ds.images.shape == (10, 1, 6, 6)
    assert resolve_splits(ds).split.tolist() == split.tolist()  # the file's split is kept
    np.savez(tmp_path / "bad.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="needs arrays 'x'"):
        gi.load_npz(tmp_path / "bad.npz")


def test_idx_file_pair(tmp_path):
    imgs = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4)
    gi.write_idx(tmp_path / "toy-images-idx3-ubyte", imgs)
    gi.write_idx(tmp_path / "toy-labels-idx1-ubyte", np.array([0, 1, 2, 0, 1, 2], np.uint8))
    ds = gi.load_idx(tmp_path / "toy-images-idx3-ubyte")
    assert ds.images.shape == (6, 1, 4, 4) and ds.classes == ("0", "1", "2")
    np.testing.assert_allclose(ds.images[1, 0].numpy() * 255, imgs[1], atol=1e-4)
    with pytest.raises(FileNotFoundError, match="labels"):
        gi.load_idx(tmp_path / "toy-labels-idx1-ubyte")


def test_image_folder_rgb_sizes_and_given_normalisation(tmp_path):
    folder = write_rgb_folder(tmp_path / "imgs", n_per_class=6)
    ds = gi.load_image_folder(folder, normalize=([0.5, 0.5, 0.5], [0.25, 0.25, 0.25]))
    raw = gi.load_image_folder(folder)
    assert ds.classes == ("blue", "green", "red") and ds.ids[0] == "blue/000.jpg"
    assert raw.preprocessing["mode"] == "RGB" and raw.preprocessing["size"] == "8x8"
    np.testing.assert_allclose(ds.images.numpy(), (raw.images.numpy() - 0.5) / 0.25, atol=1e-5)
    assert "0.5/0.25" in ds.preprocessing["normalization"]
    big = gi.load_image_folder(folder, size=12)
    assert big.images.shape[-2:] == (12, 12) and big.preprocessing["resized"] == "18 of 18 images"
    (tmp_path / "one" / "only").mkdir(parents=True)
    with pytest.raises(ValueError, match="one subfolder per class"):
        gi.load_image_folder(tmp_path / "one")


def test_splits_from_file_series_all_refit_and_fractions(tmp_path):
    ds = from_arrays(np.zeros((8, 2, 2), np.float32), np.arange(8) % 2)
    csv = tmp_path / "s.csv"
    pd.DataFrame({"sample_id": ds.ids, "split": ["train", "refit"] * 4}).to_csv(csv, index=False)
    assert resolve_splits(ds, csv).split.tolist() == ["train", "refit"] * 4
    assert set(resolve_splits(ds, "refit").split) == {"refit"}
    two = resolve_splits(ds, {"refit": 0.5, "test": 0.5}, seed=1)
    assert (two.split == "refit").sum() == 4
    by_id = pd.Series(["test"] * 8, index=ds.ids)
    assert set(resolve_splits(ds, by_id).split) == {"test"}
    with pytest.raises(ValueError, match="sample_id and split"):
        pd.DataFrame({"id": ds.ids}).to_csv(csv, index=False)
        resolve_splits(ds, csv)
    with pytest.raises(ValueError, match="3 names for 8 rows"):
        resolve_splits(ds, ["refit"] * 3)
