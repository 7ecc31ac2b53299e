"""Hostile refit options and inputs: each refused with the right exception naming the argument."""

from __future__ import annotations

import numpy as np
import pytest
from test_glm_synth import make_acts, simulate_multinomial

import glminterp as gi
from glminterp.refit import OutputLayerGLM


@pytest.fixture(scope="module")
def acts():
    rng = np.random.default_rng(11)
    coef = np.array([[0.0, 0.3, -0.3], [0.0, 1.0, -1.0], [0.0, -0.5, 0.8]])
    x, y = simulate_multinomial(rng, 240, coef)
    return make_acts(x, y)


BAD_OPTIONS = [
    ({"maxiter": 0}, ValueError, "maxiter"),
    ({"maxiter": -3}, ValueError, "maxiter"),
    ({"maxiter": 2.5}, TypeError, "maxiter"),
    ({"maxiter": "10"}, TypeError, "maxiter"),
    ({"maxiter": True}, TypeError, "maxiter"),
    ({"bootstrap": 2.7}, TypeError, "bootstrap"),
    ({"bootstrap": "x"}, TypeError, "bootstrap"),
    ({"bootstrap": -1}, ValueError, "bootstrap"),
    ({"bootstrap": None}, TypeError, "bootstrap"),
    ({"alpha": "0.05"}, TypeError, "alpha"),
    ({"alpha": 0.0}, ValueError, "alpha"),
    ({"alpha": 1.0}, ValueError, "alpha"),
    ({"alpha": -0.1}, ValueError, "alpha"),
    ({"alpha": None}, TypeError, "alpha"),
    ({"alpha": True}, TypeError, "alpha"),
    ({"seed": -1}, ValueError, "seed"),
    ({"seed": 1.5}, TypeError, "seed"),
    ({"seed": "0"}, TypeError, "seed"),
    ({"family": "poisson"}, ValueError, "family"),
    ({"family": 3}, ValueError, "family"),
    ({"engine": "numba"}, ValueError, "engine"),
    ({"engine": None}, ValueError, "engine"),
    ({"remedy": "lasso"}, ValueError, "remedy"),
    ({"remedy": 1}, ValueError, "remedy"),
    ({"cov_type": "HC3"}, ValueError, "cov_type"),
    ({"cov_type": "robust"}, ValueError, "cov_type"),
    ({"parametrization": "effect"}, ValueError, "parametrization"),
    ({"on_collinear": "ignore"}, ValueError, "on_collinear"),
    ({"on_separation": "ignore"}, ValueError, "on_separation"),
    ({"remedy": "ridge", "cov_type": "HC0"}, ValueError, "cov_type"),
    ({"remedy": "ridge", "bootstrap": 5}, ValueError, "bootstrap"),
    ({"remedy_kwds": {"lam": 1.0}}, ValueError, "remedy_kwds"),
    ({"remedy": "ridge", "remedy_kwds": {"alpha": 1.0}}, ValueError, "remedy_kwds"),
    ({"cov_kwds": {"groups": np.arange(3)}}, ValueError, "cov_kwds"),
    ({"cov_type": "cluster"}, ValueError, "cov_kwds"),
    ({"cov_type": "cluster", "cov_kwds": {"groups": np.arange(5)}}, ValueError, "groups"),
    ({"cov_type": "cluster", "cov_kwds": {"groups": np.zeros(240)}}, ValueError, "single cluster"),
    ({"cov_type": "cluster", "cov_kwds": {"groups": "no_such_column"}}, KeyError, "groups"),
    ({"cov_type": "cluster", "cov_kwds": "groups"}, ValueError, "cov_kwds"),
    ({"split": "nonexistent"}, ValueError, "split"),
    ({"response": "label"}, ValueError, "response"),
]


@pytest.mark.parametrize("kwargs, exc, word", BAD_OPTIONS, ids=[str(k) for k, _, _ in BAD_OPTIONS])
def test_bad_option_is_refused_naming_it(acts, kwargs, exc, word):
    with pytest.raises(exc) as e:
        gi.refit_output_layer(acts, progress=False, **kwargs)
    assert word in str(e.value)


def _with_labels(acts, labels):
    a = make_acts(acts.features.to_numpy(), np.zeros(len(acts.obs), dtype=int), n_outputs=3)
    a.obs["label"] = labels
    return a


@pytest.mark.parametrize("make, exc, word", [
    (lambda y: y + 0.7, ValueError, "integral"),
    (lambda y: y.astype(float) + 0.5, ValueError, "integral"),
    (lambda y: np.where(y == 0, "cat", "dog"), TypeError, "labels"),
    (lambda y: y.astype(str), TypeError, "labels"),
    (lambda y: y + 5, ValueError, "labels"),
    (lambda y: y - 1, ValueError, "labels"),
    (lambda y: np.where(np.arange(len(y)) == 3, np.nan, y), ValueError, "no label"),
])
def test_bad_labels_are_refused(acts, make, exc, word):
    y = acts.obs["label"].to_numpy(dtype=np.int64)
    bad = _with_labels(acts, make(y))
    with pytest.raises(exc) as e:
        gi.refit_output_layer(bad, progress=False)
    assert word in str(e.value)


def test_integral_float_labels_are_accepted(acts):
    y = acts.obs["label"].to_numpy(dtype=np.int64)
    good = _with_labels(acts, y.astype(float))
    ref = gi.refit_output_layer(acts, progress=False)
    got = gi.refit_output_layer(good, progress=False)
    np.testing.assert_allclose(got.params().to_numpy(), ref.params().to_numpy(), rtol=1e-10)


def test_not_activations_is_refused():
    with pytest.raises(TypeError, match="acts"):
        gi.refit_output_layer(np.zeros((3, 3)), progress=False)
    with pytest.raises(TypeError, match="acts"):
        OutputLayerGLM.from_activations({"features": 1})


def test_cluster_groups_by_series_of_wrong_index_are_refused(acts):
    import pandas as pd

    g = pd.Series(np.arange(10), index=[f"x{i}" for i in range(10)])
    with pytest.raises(ValueError, match="groups"):
        gi.refit_output_layer(acts, cov_type="cluster", cov_kwds={"groups": g}, progress=False)


def test_one_truth_about_convergence(acts):
    """fit_stats says converged and why; no statsmodels ConvergenceWarning for an accepted fit."""
    import warnings

    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        res = gi.refit_output_layer(acts, progress=False, maxiter=100)
    assert not [w for w in rec if issubclass(w.category, ConvergenceWarning)]
    fs = res.fit_stats
    assert fs["converged"] is True and res.converged
    assert fs["convergence_criterion"].startswith("optimum: max scaled score")
    assert res.diagnostics["convergence_criterion"] == fs["convergence_criterion"]
    # too few iterations: not an optimum, so no result claims convergence; the error says why
    with pytest.raises(gi.glm.FitError, match="score does not vanish"):
        gi.refit_output_layer(acts, progress=False, maxiter=1, engine="statsmodels")
    with pytest.raises(gi.glm.FitError, match="score does not vanish"):
        gi.refit_output_layer(acts, progress=False, maxiter=1)
