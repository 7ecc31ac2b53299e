"""The design and optimum checks take their cheap routes only where the answer is the same."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from glminterp import engine as eng
from glminterp.refit import acceptance as acc
from glminterp.refit import diagnostics as dg


def _frame(x: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(x, columns=[f"u{j}" for j in range(x.shape[1])])


@pytest.mark.parametrize("shape", [(400, 12), (60, 59), (2000, 40)])
def test_shared_factor_gives_the_pivoted_qr_answer_and_the_svd_condition(shape):
    rng = np.random.default_rng(shape[1])
    x = np.maximum(rng.standard_normal(shape) + rng.normal(0, 0.5, shape[1]), 0.0)
    df = _frame(x)
    factor = dg.design_factor(df)
    fast, slow = dg.rank_report(df, factor=factor), dg.rank_report(df)
    assert fast == slow and fast.full_rank
    assert dg.condition_number(df, factor=factor) == pytest.approx(
        dg.condition_number(df), rel=1e-12)


@pytest.mark.parametrize("noise", [1e-3, 1e-7, 1e-11, 0.0])
def test_near_collinear_designs_fall_back_to_the_pivoted_qr(noise):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((500, 5))
    df = _frame(np.column_stack([x, x[:, 0] - 2 * x[:, 3] + noise * rng.standard_normal(500)]))
    factor = dg.design_factor(df)
    certified = dg._certified_full_rank(factor, len(df), dg._RANK_RTOL)
    assert certified == (noise >= 1e-3)  # only a design far from rank deficiency skips it
    fast, slow = dg.rank_report(df, factor=factor), dg.rank_report(df)
    assert fast.rank == slow.rank and fast.dependent == slow.dependent
    assert fast.full_rank == (noise >= 1e-7)
    assert dg.condition_number(df, factor=factor) == pytest.approx(
        dg.condition_number(df), rel=1e-6)


def test_units_with_a_large_mean_are_not_certified_by_rounding():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((300, 3))
    # the third unit is the sum of the others up to 1e-13, riding on a mean of 1e6
    x = np.column_stack([base[:, :2], base[:, 0] + base[:, 1] + 1e-13 * base[:, 2]]) + 1e6
    df = _frame(x)
    assert dg.rank_report(df, factor=dg.design_factor(df)) == dg.rank_report(df)
    assert not dg.rank_report(df).full_rank


def test_fewer_rows_than_columns_has_no_factor():
    assert dg.design_factor(_frame(np.ones((3, 5)))) is None


def test_to_statsmodels_without_its_rank_check_is_the_same_results():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 4))
    y = rng.integers(0, 3, 300)
    er = eng.fit_multinomial(x, y)
    a, b = er.to_statsmodels(x, y), er.to_statsmodels(x, y, check_rank=False)
    assert a.df_model == b.df_model and a.df_resid == b.df_resid
    np.testing.assert_array_equal(np.asarray(a.bse), np.asarray(b.bse))
    ref = sm.MNLogit(y, sm.add_constant(x)).fit(method="newton", disp=0, tol=1e-12)
    np.testing.assert_allclose(np.asarray(b.bse), np.asarray(ref.bse), rtol=1e-6)


@pytest.mark.parametrize("order", ["F", "C"])
def test_condition_check_scales_in_either_memory_order(order):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((40, 120))
    info = np.asarray(a @ a.T * np.outer(np.arange(1, 41), np.arange(1, 41)), order=order)
    d = np.sqrt(np.diag(info))
    ev = np.linalg.eigvalsh(info / d[:, None] / d[None, :])
    ok, cond = acc._condition(info)
    assert ok and cond == pytest.approx(ev[-1] / ev[0], rel=1e-12)
    info[0, 0] = -1.0
    assert acc._condition(info) == (False, None)
