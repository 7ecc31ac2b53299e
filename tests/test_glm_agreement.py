"""The Wald test of H0: the network's head equals the refit MLE."""

from __future__ import annotations

import numpy as np
import pytest
from test_glm_synth import make_acts, simulate_multinomial

import glminterp as gi


@pytest.fixture(scope="module")
def sim():
    rng = np.random.default_rng(7)
    coef = np.array([[0.0, 0.5, -0.3], [0.0, 1.0, -1.0], [0.0, -0.5, 0.8]])
    x, y = simulate_multinomial(rng, 600, coef)
    mle = gi.refit_output_layer(make_acts(x, y), progress=False)
    return x, y, mle


@pytest.mark.parametrize("parametrization", ["reference", "sum_to_zero"])
def test_head_at_mle_passes(sim, parametrization):
    x, y, mle = sim
    # The network's head is the MLE in the sum-to-zero form plus an arbitrary common shift
    # (softmax is invariant to it).
    w = mle.params("sum_to_zero").to_numpy() + 3.0
    acts = make_acts(x, y, w[1:].T, w[0])
    res = gi.refit_output_layer(acts, parametrization=parametrization, progress=False)
    t = res.agreement_test
    assert t["df"] == 6
    assert t["statistic"] < 1e-8 and t["p_value"] > 0.999999 and t["reject"] is False
    np.testing.assert_allclose(res.coefficients["z_network"], 0, atol=1e-5)
    np.testing.assert_allclose(
        res.network_params().to_numpy(), res.params().to_numpy(), atol=1e-8
    )
    assert "Not rejected" in t["interpretation"]


def test_perturbed_head_fails(sim):
    x, y, mle = sim
    w = mle.params("sum_to_zero").to_numpy().copy()
    se = mle.coefficients.set_index(["class", "term"])["se"]
    w[1, 2] += 5 * se[("2", "h:000")]  # five standard errors on one unit of class 2
    res = gi.refit_output_layer(make_acts(x, y, w[1:].T, w[0]), progress=False)
    t = res.agreement_test
    assert t["reject"] is True and t["p_value"] < 1e-4
    assert "weight decay" in t["interpretation"]
    row = res.coefficients.set_index(["class", "term"]).loc[("2", "h:000")]
    # The perturbed coefficient's own z is about -5 (sum-to-zero shifts it by 2/3 of the step).
    assert row["z_network"] < -2.5 and row["p_network"] < 0.05


def test_shrunk_head_is_rejected_on_real_activations(mlp_digits_acts):
    """A real (early-stopped, not the MLE) network head: the test rejects and says why."""
    acts = mlp_digits_acts
    # 12 units separate the classes; a 3-unit subset of the real head does not.
    sub = acts.features.iloc[:, :3]
    small = make_acts(sub.to_numpy(), acts.obs["label"].to_numpy(), acts.head.weight[:, :3],
                      acts.head.bias, split=acts.obs["split"].to_numpy())
    res = gi.refit_output_layer(small, progress=False)
    assert res.agreement_test["reject"] is True
