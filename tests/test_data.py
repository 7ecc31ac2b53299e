"""Loaders with stable ids, and the stratified three-way split."""

import numpy as np
import pandas as pd
import pytest

import glminterp as gi
from glminterp.data import stratified_split


def test_digits_loader():
    ds = gi.load_digits()
    assert ds.images.shape == (1797, 1, 8, 8)
    assert float(ds.images.max()) == 1.0 and float(ds.images.min()) == 0.0
    assert ds.ids[0] == "digits-0000" and ds.ids[-1] == "digits-1796"
    assert ds.classes == tuple(str(i) for i in range(10))


def test_mnist5k_loader():
    ds = gi.load_mnist5k()
    assert ds.images.shape == (5000, 1, 28, 28)
    np.testing.assert_array_equal(np.bincount(ds.labels.numpy()), np.full(10, 500))
    assert ds.name == "mnist5k" and len(set(ds.ids)) == 5000


def test_split_is_stratified_disjoint_and_complete():
    labels = np.repeat(np.arange(4), [100, 50, 30, 7])
    ids = np.array([f"s{i}" for i in range(len(labels))])
    sp = stratified_split(labels, ids, {"train": 0.5, "refit": 0.3, "test": 0.2}, seed=3)
    assert sp.index.tolist() == ids.tolist()  # every id exactly once, input order
    counts = pd.crosstab(labels, sp.to_numpy())
    # largest-remainder allocation per class: 100 -> 50/30/20, 50 -> 25/15/10,
    # 30 -> 15/9/6, 7 -> 3.5/2.1/1.4 -> 4/2/1
    assert counts.loc[0].to_dict() == {"refit": 30, "test": 20, "train": 50}
    assert counts.loc[1].to_dict() == {"refit": 15, "test": 10, "train": 25}
    assert counts.loc[2].to_dict() == {"refit": 9, "test": 6, "train": 15}
    assert counts.loc[3].to_dict() == {"refit": 2, "test": 1, "train": 4}


def test_split_reproducible_by_seed():
    labels = np.tile(np.arange(10), 30)
    ids = np.arange(300).astype(str)
    a = stratified_split(labels, ids, seed=1)
    b = stratified_split(labels, ids, seed=1)
    c = stratified_split(labels, ids, seed=2)
    pd.testing.assert_series_equal(a, b)
    assert (a != c).any()


def test_split_validation():
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split([0, 1], ["a", "b"], {"train": 0.5, "test": 0.4})
    with pytest.raises(ValueError, match="differ in length"):
        stratified_split([0, 1], ["a"])


def test_with_splits_and_subsets(digits):
    parts = {s: digits.get_split(s) for s in ("train", "refit", "test")}
    ids = [set(p.ids) for p in parts.values()]
    assert sum(map(len, ids)) == len(digits)
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    r = parts["refit"]
    # ids travel with their rows
    pos = np.flatnonzero(digits.ids == r.ids[5])[0]
    assert np.array_equal(r.images[5].numpy(), digits.images[pos].numpy())
    assert int(r.labels[5]) == int(digits.labels[pos])
    with pytest.raises(ValueError, match="not present"):
        digits.get_split("validation")


def test_fingerprint_changes_with_data(digits):
    a = digits.fingerprint()
    assert a == gi.load_digits().with_splits(
        stratified_split(digits.labels, digits.ids, seed=0)).fingerprint()
    assert digits.subset(range(10)).fingerprint() != a
