"""Seeded simulators shared by the engine/remedy/scale tests."""

from __future__ import annotations

import numpy as np


def relu_features(n: int, p: int, k: int, seed: int = 0, effect: float = 0.5):
    """ReLU-like correlated units and labels drawn from a known multinomial logit."""
    rng = np.random.default_rng(seed)
    r = max(2, p // 4)
    z = rng.standard_normal((n, r)) @ rng.standard_normal((r, p)) / np.sqrt(r)
    x = np.maximum(z + 0.7 * rng.standard_normal((n, p)) + rng.normal(0, 0.5, p), 0.0)
    w = rng.normal(0, effect / np.sqrt(p), (p, k))
    eta = x @ w + rng.normal(0, 0.3, k)
    prob = np.exp(eta - eta.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    y = (prob.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return x, y
