"""Engine solver choices: the cost model, the recorded plan, and separation caught early on a
K=100, p=256 head."""

from __future__ import annotations

import re

import numpy as np
import pytest
import statsmodels.api as sm
from _glm_sim import relu_features

from glminterp import engine as E
from glminterp.refit.contrasts import fit_contrasts
from glminterp.refit.separation import SeparationError


@pytest.fixture(scope="module")
def data():
    return relu_features(3000, 40, 6, seed=3)


def test_cost_model_scales_as_flop_counts():
    small, wide = E.solver_costs(10_000, 257, 10), E.solver_costs(10_000, 1025, 10)
    assert small["n_params"] == 257 * 9 and wide["n_params"] == 1025 * 9
    # one information matrix is ~N m^2 flops, one product ~N m: their ratio grows like m
    assert wide["fisher"] / small["fisher"] == pytest.approx(1025 / 257, rel=0.01)
    # the Cholesky (m^3) over a product (N m) grows like m^2, and the inverse costs twice it
    assert wide["cholesky"] / small["cholesky"] == pytest.approx((1025 / 257) ** 2, rel=0.01)
    assert wide["inverse"] == pytest.approx(2 * wide["cholesky"])
    plan = E.solver_plan("auto", 10_000, 1025, 10)
    assert plan["method"] == "newton-cg"
    assert plan["hvp_budget"] == int(E._CG_SHARE * (wide["fisher"] + wide["cholesky"]))
    assert E.solver_plan("auto", 10_000, 11, 3)["method"] == "newton"
    assert E.solver_plan("auto", 10_000, 11, 3)["hvp_budget"] == 0


def test_plan_recorded_and_cg_reaches_the_optimum_alone(data):
    x, y = data
    auto = E.fit_multinomial(x, y)  # 205 parameters: plain Newton
    assert auto.plan["method"] == "newton" and auto.n_hvp == 0
    res = E.fit_multinomial(x, y, method="newton-cg")
    assert res.plan["method"] == "newton-cg" and res.plan["hvp_budget"] >= 50
    # Newton-CG gets within the tolerance by itself: one information matrix, the one the
    # covariance needs, and the same optimum and SEs as statsmodels
    assert res.plan["handover"].startswith("converged") and res.n_fisher == 1
    own = sm.MNLogit(y, sm.add_constant(x)).fit(method="newton", disp=0, tol=1e-12)
    np.testing.assert_allclose(res.params, own.params, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(res.bse, own.bse, rtol=1e-7)


def test_separation_at_k100_p256_caught_within_a_few_data_passes():
    x, y = relu_features(3000, 256, 100, seed=0, effect=3.0)  # 25k parameters, 3000 rows
    with pytest.raises(SeparationError, match="separated") as info:
        fit_contrasts(x, y, [(1, "x1")])
    it, hvp = map(int, re.search(r"after (\d+) iterations and (\d+) Hessian", str(info.value))
                  .groups())
    # before: 20 iterations and 319 products (the per-step rule); the window rule sees the
    # log-likelihood vanish geometrically while the coefficients keep growing
    assert it <= 16 and hvp <= 160, (it, hvp)
