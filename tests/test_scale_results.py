"""Out-of-core and Dask fits return the same results class as in-memory refits (issue 12)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _glm_sim import relu_features
from test_glm_synth import make_acts

import glminterp as gi
from glminterp.refit.engine_fit import results_from_engine
from glminterp.scale import (
    dask_arrays_from_parquet,
    dask_fit_multinomial,
    refit_dask,
    refit_parquet,
    write_parquet_shards,
)

COLS = ["coef", "se", "z", "p", "ci_lower", "ci_upper", "p_holm", "p_bh"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    x, y = relu_features(1000, 8, 4, seed=9)
    df = pd.DataFrame(x, columns=[f"h:{i:03d}" for i in range(8)])
    df["label"] = y
    shards = write_parquet_shards(df, tmp_path_factory.mktemp("acts") / "shards", 230)
    mem = gi.refit_output_layer(make_acts(x, y), engine="fast", progress=False)
    return shards[0].parent, mem


@pytest.mark.parametrize("parametrization", ["reference", "sum_to_zero"])
def test_parquet_refit_is_a_refit_result_equal_to_memory(data, parametrization):
    folder, mem = data
    res = refit_parquet(folder, batch_size=97, parametrization=parametrization)
    assert isinstance(res, gi.RefitResult) and res.n_obs == 1000
    a = res.coefficients[COLS].to_numpy()
    b = mem.coefficient_table(parametrization)[COLS].to_numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(res.unit_tests["statistic"], mem.unit_tests["statistic"], rtol=1e-6)
    assert res.fit_stats["llf"] == pytest.approx(mem.fit_stats["llf"], rel=1e-10)
    assert res.fit_stats["converged"] is True and res.agreement_test["p_value"] is None


def test_dask_fit_gives_the_same_results_class(data):
    folder, mem = data
    x, y, _ = dask_arrays_from_parquet(folder)
    res = results_from_engine(dask_fit_multinomial(x, y, feature_names=list(mem.units)))
    np.testing.assert_allclose(res.coefficients["se"], mem.coefficients["se"], rtol=1e-6)
    pub = refit_dask(x, y, feature_names=list(mem.units), parametrization="sum_to_zero")
    assert isinstance(pub, gi.RefitResult) and pub.n_obs == 1000
    np.testing.assert_allclose(pub.coefficients[COLS].to_numpy(),
                               mem.coefficient_table("sum_to_zero")[COLS].to_numpy(),
                               rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="family"):
        refit_parquet(folder, family="gaussian")
