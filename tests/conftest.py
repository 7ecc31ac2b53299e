"""Shared fixtures: small real data and small trained networks, built once per session.

Everything is seeded; torch and BLAS run single-threaded so results do not depend on the core count.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

import glminterp as gi

matplotlib.use("Agg")
torch.set_num_threads(1)
# One BLAS thread: results do not depend on the core count, and two pytest workers do not
# oversubscribe two cores.
threadpool_limits(1)


@pytest.fixture(scope="session")
def digits():
    """UCI digits (8x8) with the default train/refit/test split attached (seed 0)."""
    ds = gi.load_digits()
    return ds.with_splits(gi.stratified_split(ds.labels, ds.ids, seed=0))


@pytest.fixture(scope="session")
def gap_cnn_digits(digits):
    """A GAP -> Linear CNN trained for a few epochs on the digits train split."""
    model = gi.build_model("gap_cnn", seed=0, widths=(8, 16, 8))
    gi.train_model(model, digits.get_split("train"), epochs=8, lr=3e-3, seed=0, progress=False)
    return model


@pytest.fixture(scope="session")
def mlp_digits(digits):
    """A 64 -> 12 (sigmoid) -> 10 softmax MLP trained on the digits train split."""
    model = gi.build_model("mlp", seed=0, n_inputs=64, n_hidden=12, n_classes=10)
    gi.train_model(model, digits.get_split("train"), epochs=15, lr=5e-3, seed=0, progress=False)
    return model


@pytest.fixture(scope="session")
def mlp_digits_acts(mlp_digits, digits):
    """Head-input activations (the GLM regressors) of ``mlp_digits`` on all digits rows."""
    return gi.extract_activations(mlp_digits, digits, progress=False)


@pytest.fixture(scope="session")
def gap_cnn_digits_acts(gap_cnn_digits, digits):
    """Pooled channel activations of ``relu3`` (the GAP head's inputs), maps kept."""
    return gi.extract_activations(gap_cnn_digits, digits, keep_maps=True, progress=False)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
