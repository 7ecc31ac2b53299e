"""RefitResult.coefficient_table: the tidy table in another parametrization of the same fit."""

import numpy as np
import pytest
from test_glm_synth import make_acts, simulate_multinomial

import glminterp as gi
from glminterp.refit import p_adjust
from glminterp.saliency._common import class_coefficients


@pytest.fixture(scope="module")
def res():
    rng = np.random.default_rng(7)
    coef = rng.normal(0, 0.8, size=(4, 3))
    x, y = simulate_multinomial(rng, 600, coef)
    return gi.refit_output_layer(make_acts(x, y), progress=False)


def test_sum_to_zero_table_matches_params_and_cov(res):
    own = res.coefficient_table()
    assert own.equals(res.coefficients) and set(own["class"]) == {"1", "2"}
    t = res.coefficient_table("sum_to_zero")
    assert list(dict.fromkeys(t["class"])) == ["0", "1", "2"]
    gamma = res.params("sum_to_zero")
    np.testing.assert_allclose(t["coef"], gamma.to_numpy().ravel(order="F"))
    se = np.sqrt(np.diag(res.cov_params("sum_to_zero").to_numpy()))
    np.testing.assert_allclose(t["se"], se)
    np.testing.assert_allclose(t["z"], t["coef"] / t["se"])
    units = t["term"] != "const"
    np.testing.assert_allclose(t.loc[units, "p_holm"], p_adjust(t.loc[units, "p"].to_numpy(), "holm"))
    assert t.loc[~units, "p_holm"].isna().all()
    # the network's head in the same parametrization
    np.testing.assert_allclose(t["network_weight"], res.network_params("sum_to_zero").to_numpy().ravel(order="F"))
    # class contrasts are invariant: gamma_2 - gamma_1 equals beta_2 - beta_1
    b = res.params()
    np.testing.assert_allclose(gamma["2"] - gamma["1"], b["2"] - b["1"], atol=1e-12)


def test_saliency_reads_baseline_class_from_sum_to_zero(res):
    rows = class_coefficients(res, "0")
    t = res.coefficient_table("sum_to_zero")
    expect = t[(t["class"] == "0") & (t["term"] != "const")]
    np.testing.assert_allclose(rows["coef"], expect["coef"])
    np.testing.assert_allclose(rows["p_adj"], expect["p_holm"])
