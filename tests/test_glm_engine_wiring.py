"""refit_output_layer(engine="fast") equals statsmodels' own fit; "auto" picks by size."""

from __future__ import annotations

import numpy as np
import pytest
from _glm_sim import relu_features
from test_glm_synth import make_acts

import glminterp as gi
from glminterp.refit import AUTO_ENGINE_MIN_PARAMS


def _both(acts, **kw):
    fast = gi.refit_output_layer(acts, engine="fast", progress=False, **kw)
    slow = gi.refit_output_layer(acts, engine="statsmodels", progress=False, **kw)
    return fast, slow


def _assert_same(fast, slow):
    a, b = fast.coefficients, slow.coefficients
    np.testing.assert_allclose(a["coef"], b["coef"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(a["se"], b["se"], rtol=1e-6)
    cs = slow.cov_params().to_numpy()
    np.testing.assert_allclose(fast.cov_params(), cs, rtol=1e-6, atol=1e-6 * np.abs(cs).max())
    np.testing.assert_allclose(fast.fit_stats["llf"], slow.fit_stats["llf"], rtol=1e-10)
    np.testing.assert_allclose(fast.unit_tests["statistic"], slow.unit_tests["statistic"],
                               rtol=1e-6)


@pytest.mark.parametrize("cov_type", ["nonrobust", "HC0"])
def test_multinomial_fast_equals_statsmodels(cov_type):
    x, y = relu_features(600, 6, 3, seed=1, effect=2.0)
    fast, slow = _both(make_acts(x, y), cov_type=cov_type)
    assert fast.engine == "fast" and slow.engine == "statsmodels"
    assert fast.diagnostics["engine"] == "fast" and fast.fit_stats["engine"] == "fast"
    _assert_same(fast, slow)
    # the statsmodels results object is still there and answers at the optimum
    np.testing.assert_allclose(np.asarray(fast.results.bse), np.asarray(slow.results.bse),
                               rtol=1e-6)


@pytest.mark.parametrize("cov_type", ["nonrobust", "HC0"])
def test_ovr_fast_equals_statsmodels(cov_type):
    x, y = relu_features(600, 5, 3, seed=2, effect=2.0)
    fast, slow = _both(make_acts(x, y), family="ovr", cov_type=cov_type)
    _assert_same(fast, slow)
    for c in fast.results:
        np.testing.assert_allclose(fast.results[c].deviance, slow.results[c].deviance, rtol=1e-9)


@pytest.mark.parametrize("cov_type", ["nonrobust", "HC0"])
def test_sigmoid_fast_equals_statsmodels_with_warm_start(cov_type):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((500, 4))
    w = np.array([[1.0, -0.5, 0.0, 0.3], [-0.4, 0.8, 0.5, 0.0]])
    b = np.array([0.2, -0.3])
    prob = 1 / (1 + np.exp(-(x @ w.T + b)))
    yy = (rng.random((500, 2)) < prob).astype(int)
    y = yy[:, 1] * 1  # labels 0/1 for the one-hot response of a 2-output sigmoid head
    acts = make_acts(x, y, weight=w, bias=b, link="sigmoid", n_outputs=2)
    fast, slow = _both(acts, cov_type=cov_type)
    assert fast.diagnostics["start"] == "network"  # the true head beats the null start
    _assert_same(fast, slow)


def test_cluster_fast_equals_statsmodels():
    x, y = relu_features(600, 6, 3, seed=1, effect=2.0)
    acts = make_acts(x, y)
    kw = {"cov_type": "cluster", "cov_kwds": {"groups": np.arange(600) // 4}}
    _assert_same(*_both(acts, **kw))
    _assert_same(*_both(acts, family="ovr", **kw))


def test_auto_engine_threshold():
    x, y = relu_features(300, 3, 3, seed=5, effect=2.0)
    small = gi.refit_output_layer(make_acts(x, y), progress=False)
    assert small.engine == "statsmodels"  # 8 parameters
    p = AUTO_ENGINE_MIN_PARAMS // 2 + 1  # 2 (p + 1) > 200 parameters
    x, y = relu_features(4000, p, 3, seed=6, effect=1.0)
    big = gi.refit_output_layer(make_acts(x, y), progress=False)
    assert big.engine == "fast" and big.fit_stats["n_params"] > AUTO_ENGINE_MIN_PARAMS


def test_gaussian_always_statsmodels_and_bad_engine_rejected(rng):
    x = rng.standard_normal((80, 2))
    acts = make_acts(x, (x[:, 0] > 0).astype(int), link="identity", n_outputs=1)
    assert gi.refit_output_layer(acts, engine="fast", progress=False).engine == "statsmodels"
    with pytest.raises(ValueError, match="engine"):
        gi.refit_output_layer(acts, engine="numba", progress=False)

