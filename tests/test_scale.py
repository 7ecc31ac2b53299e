"""Out-of-core (Parquet shards) and Dask refits equal the in-memory engine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _glm_sim import relu_features

import glminterp as gi
from glminterp import engine as E
from glminterp.scale import (
    dask_arrays_from_parquet,
    dask_fit_multinomial,
    fit_binomial_parquet,
    fit_multinomial_parquet,
    shard_files,
    write_parquet_shards,
)


@pytest.fixture(scope="module")
def frame():
    x, y = relu_features(1000, 8, 4, seed=9)
    df = pd.DataFrame(x, columns=[f"u{i}" for i in range(8)])
    df["label"] = y
    return df


@pytest.fixture(scope="module")
def shards(frame, tmp_path_factory):
    return write_parquet_shards(frame, tmp_path_factory.mktemp("acts") / "shards", 230)


@pytest.fixture(scope="module")
def in_memory(frame):
    """In-memory fits by method (paths are compared iterate for iterate, same method)."""
    x, y = frame.drop(columns="label"), frame["label"]
    return {m: E.fit_multinomial(x, y, method=m) for m in ("newton", "newton-cg")}


def _close(a, b, tol=1e-10):
    np.testing.assert_allclose(a.params, b.params, rtol=tol, atol=tol)
    np.testing.assert_allclose(a.cov, b.cov, rtol=tol, atol=tol * 1e-3)
    assert a.llf == pytest.approx(b.llf, rel=1e-12)


def test_shards_written_in_order(frame, shards):
    assert [p.name for p in shards] == [f"part-{i:05d}.parquet" for i in range(5)]
    back = pd.concat([pd.read_parquet(p) for p in shards], ignore_index=True)
    pd.testing.assert_frame_equal(back, frame)
    assert shard_files(shards[0].parent) == shards


@pytest.mark.parametrize("method", ["newton", "newton-cg"])
def test_parquet_multinomial_equals_in_memory(shards, in_memory, method):
    res = fit_multinomial_parquet(shards[0].parent, batch_size=97, method=method)
    assert res.converged and res.n_obs == 1000
    assert res.terms == in_memory[method].terms
    _close(res, in_memory[method])


def test_parquet_binomial_equals_in_memory(frame, shards):
    yb = (frame["label"] == 3).astype(float)
    ref = E.fit_binomial(frame.drop(columns="label"), yb)
    res = fit_binomial_parquet(shards, positive=3, batch_size=128)
    _close(res, ref)


def test_activations_round_trip(mlp_digits_acts, tmp_path):
    acts = mlp_digits_acts.subset(split="refit")
    files = write_parquet_shards(acts, tmp_path / "s", 100)
    back = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    feats = acts.head_features()
    np.testing.assert_array_equal(back[list(feats.columns)].to_numpy(), feats.to_numpy())
    np.testing.assert_array_equal(back["label"].to_numpy(), acts.obs["label"].to_numpy())
    assert len(files) == -(-len(acts) // 100)


def test_dask_local_cluster_equals_in_memory(shards, in_memory, frame):
    from dask import distributed

    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        x, y, feats = dask_arrays_from_parquet(shards[0].parent)
        res = dask_fit_multinomial(x, y, client=client, feature_names=feats)
        _close(res, in_memory["newton"])
        yb = (frame["label"].to_numpy() == 1).astype(float)
        ref = E.fit_binomial(frame.drop(columns="label"), yb)
        bres = dask_fit_multinomial(frame.drop(columns="label").to_numpy(), yb,
                                    family="binomial", client=client)
        _close(bres, ref)


def test_errors(shards, tmp_path):
    with pytest.raises(FileNotFoundError):
        shard_files(tmp_path)
    with pytest.raises(KeyError, match="label"):
        fit_multinomial_parquet(shards, label="nope")
    with pytest.raises(ValueError, match="rows_per_shard"):
        write_parquet_shards(pd.DataFrame({"a": [1]}), tmp_path / "x", 0)


def test_extraction_streams_to_split_shards_and_refits_like_memory(tmp_path, digits):
    from glminterp.engine import fit_multinomial
    from glminterp.scale import extract_to_shards, fit_multinomial_parquet

    # briefly trained: its features do not separate any class, so the MLE exists
    mlp_digits = gi.build_model("mlp", seed=0, n_inputs=64, n_hidden=4, n_classes=10)
    gi.train_model(mlp_digits, digits.get_split("train"), epochs=2, lr=1e-2, progress=False)

    shards = extract_to_shards(mlp_digits, digits, tmp_path / "shards", rows_per_shard=400,
                               progress=False)
    assert sorted(shards) == ["refit", "test", "train"]
    assert len(shards["refit"]) == 5  # one shard per 400-row chunk that holds refit rows
    assert (tmp_path / "shards" / "head.json").is_file()
    acts = gi.extract_activations(mlp_digits, digits, progress=False).subset("refit")
    back = pd.concat([pd.read_parquet(f) for f in shards["refit"]]).set_index("obs.sample_id")
    assert back.index.tolist() == acts.obs.index.tolist()  # ids and row order travel
    cols = list(acts.head_features().columns)
    # chunked forward passes agree with one pass to float32 rounding (batch composition)
    np.testing.assert_allclose(back[cols].to_numpy(), acts.head_features().to_numpy(), rtol=1e-5, atol=1e-6)
    assert back["label"].tolist() == acts.obs["label"].tolist()
    mem = fit_multinomial(back[cols].to_numpy(np.float64), back["label"].to_numpy(), method="newton",
                          tol=1e-12)
    ooc = fit_multinomial_parquet(tmp_path / "shards" / "refit", method="newton", batch_size=97,
                                  tol=1e-12)
    assert ooc.n_obs == len(back)
    # this refit is nearly separated (coefficients ~70-100, a flat likelihood), so the order of
    # the chunked sums moves the optimum by ~1e-8 relative: compare on the scale of the SEs
    np.testing.assert_array_less(np.abs(ooc.params - mem.params) / mem.bse, 1e-6)
    np.testing.assert_allclose(ooc.bse, mem.bse, rtol=1e-6)
    with pytest.raises(TypeError, match="LabeledImages"):
        extract_to_shards(mlp_digits, digits.images, tmp_path / "x")
