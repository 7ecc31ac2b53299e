"""The refit against an independent implementation: R nnet::multinom and glm(binomial).

Fixtures in tests/fixtures/r: activations.csv (real MNIST-5k refit-split activations of a
5-unit MLP, from export_activations.py) and the outputs of refit_reference.R.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_glm_synth import make_acts

import glminterp as gi

FIX = Path(__file__).parent / "fixtures" / "r"


@pytest.fixture(scope="module")
def mnist_acts():
    d = pd.read_csv(FIX / "activations.csv", dtype={"sample_id": str}).set_index("sample_id")
    head = json.loads((FIX / "head.json").read_text())
    x = d.drop(columns="label").to_numpy(np.float64)
    acts = make_acts(x, d["label"].to_numpy(), np.array(head["weight"]), np.array(head["bias"]),
                     layer="act1")
    return acts


@pytest.fixture(scope="module")
def r_coef():
    return pd.read_csv(FIX / "refit_reference_coefficients.csv", dtype={"class": str})


@pytest.fixture(scope="module")
def r_fit():
    return pd.read_csv(FIX / "refit_reference_fit.csv", dtype={"class": str}).set_index(
        ["model", "class"]
    )


def _merge(res, r_coef, model):
    ours = res.coefficients[["class", "term", "coef", "se"]]
    ref = r_coef[r_coef["model"] == model]
    m = ours.merge(ref, on=["class", "term"], how="outer", validate="1:1")
    assert len(m) == len(ours) == len(ref)
    return m


def test_multinomial_matches_nnet_multinom(mnist_acts, r_coef, r_fit):
    res = gi.refit_output_layer(mnist_acts, progress=False)
    m = _merge(res, r_coef, "multinomial")
    # nnet's BFGS stops within ~4e-7 of the optimum (measured); its Hessian is analytic.
    np.testing.assert_allclose(m["coef"], m["estimate"], rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(m["se"], m["std_error"], rtol=1e-6)
    fs = res.fit_stats
    ref = r_fit.loc[("multinomial", "all")]
    np.testing.assert_allclose(fs["llf"], ref["loglik"], rtol=1e-8)
    np.testing.assert_allclose(fs["deviance"], ref["deviance"], rtol=1e-8)
    np.testing.assert_allclose(fs["null_deviance"], ref["null_deviance"], rtol=1e-8)
    np.testing.assert_allclose(fs["aic"], ref["aic"], rtol=1e-8)
    assert fs["n_params"] == ref["n_params"]


def test_ovr_matches_r_glm(mnist_acts, r_coef, r_fit):
    res = gi.refit_output_layer(mnist_acts, family="ovr", progress=False)
    m = _merge(res, r_coef, "ovr")
    np.testing.assert_allclose(m["coef"], m["estimate"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(m["se"], m["std_error"], rtol=1e-6)
    per = res.class_fit_stats
    ref = r_fit.loc["ovr"]
    np.testing.assert_allclose(per["deviance"], ref.loc[per.index, "deviance"], rtol=1e-8)
    np.testing.assert_allclose(per["null_deviance"], ref.loc[per.index, "null_deviance"], rtol=1e-8)
    np.testing.assert_allclose(per["llf"], ref.loc[per.index, "loglik"], rtol=1e-8)
    np.testing.assert_allclose(per["aic"], ref.loc[per.index, "aic"], rtol=1e-8)
    np.testing.assert_allclose(res.fit_stats["deviance"], ref["deviance"].sum(), rtol=1e-8)
