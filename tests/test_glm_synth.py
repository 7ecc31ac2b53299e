"""Synthetic Activations for the refit tests (imported by the other test_glm_* files)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from glminterp.activations import Activations
from glminterp.head import Head


def make_acts(
    x: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    *,
    link: str = "softmax",
    n_outputs: int | None = None,
    split: str | np.ndarray = "refit",
    layer: str = "h",
) -> Activations:
    """An Activations object with units ``x`` (N, p), labels ``y`` and a head of ``link``."""
    x = np.asarray(x, dtype=np.float64)
    n, p = x.shape
    k = n_outputs if n_outputs is not None else int(np.max(y)) + 1
    weight = np.zeros((k, p)) if weight is None else np.asarray(weight, dtype=np.float64)
    bias = np.zeros(k) if bias is None else np.asarray(bias, dtype=np.float64)
    head = Head(
        name="out", weight=weight, bias=bias, link=link, link_source="test", input_layer=layer,
        classes=tuple(str(i) for i in range(k)),
    )
    index = pd.Index([f"s{i:05d}" for i in range(n)], name="sample_id")
    features = pd.DataFrame(x, index=index, columns=[f"{layer}:{j:03d}" for j in range(p)])
    obs = pd.DataFrame(index=index)
    obs["label"] = pd.array(np.asarray(y).astype(np.int64), dtype="Int64")
    obs["pred"] = 0
    obs["split"] = np.broadcast_to(np.asarray(split, dtype=object), (n,)).astype(str)
    return Activations(features=features, obs=obs, head=head, layers=(layer,),
                       metadata={"pool": "avg"})


def simulate_multinomial(rng: np.random.Generator, n: int, coef: np.ndarray) -> tuple:
    """Rows from a multinomial logit with ``coef`` (p + 1, K) (full), units ~ N(0, 1)."""
    p = coef.shape[0] - 1
    x = rng.standard_normal((n, p))
    eta = np.column_stack([np.ones(n), x]) @ coef
    prob = np.exp(eta - eta.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    u = rng.random(n)[:, None]
    y = (u > np.cumsum(prob, axis=1)).sum(axis=1)
    return x, np.minimum(y, coef.shape[1] - 1)


def test_simulate_multinomial_frequencies():
    rng = np.random.default_rng(0)
    coef = np.array([[0.0, 1.0, -1.0], [0.0, 0.0, 0.0]])
    _, y = simulate_multinomial(rng, 20000, coef)
    expected = np.exp([0.0, 1.0, -1.0]) / np.exp([0.0, 1.0, -1.0]).sum()
    np.testing.assert_allclose(np.bincount(y) / len(y), expected, atol=0.01)


def test_make_acts_round_trip():
    acts = make_acts(np.ones((3, 2)) * [[1], [2], [3]], [0, 1, 2])
    assert acts.head_features().shape == (3, 2)
    assert list(acts.obs["label"]) == [0, 1, 2]
