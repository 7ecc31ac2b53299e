"""The refit's cheap paths give the numbers of the paths they replace.

The Wald statistic by Cholesky above 600 parameters, the acceptance reusing the engine's
factorisation, the design's one copy for the QR, the unwrapped statsmodels covariance and
the tables computed on first access then cached.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_glm_synth import make_acts

import glminterp as gi
from glminterp import engine as eng
from glminterp.refit import acceptance as acc
from glminterp.refit import diagnostics as dg
from glminterp.refit import likelihood as lk

#: 71 terms x 9 free classes = 639 parameters: above the 600 of the eigen paths.
N, P, K = 1500, 70, 10


def _pinv_wald(b, v):
    """The definition the Cholesky path replaces: b' V^+ b, df = numerical rank of V."""
    return (float(b @ np.linalg.pinv(v, hermitian=True) @ b),
            int(np.linalg.matrix_rank(v, hermitian=True)))


def _pd(rng, n, rows_extra=80):
    a = rng.standard_normal((n + rows_extra, n)) * rng.uniform(0.1, 10.0, n)
    return np.linalg.inv(a.T @ a)


@pytest.fixture(scope="module")
def wide():
    rng = np.random.default_rng(11)
    x = np.maximum(rng.standard_normal((N, P)) + rng.normal(0, 0.5, P), 0.0)
    w = rng.normal(0, 0.6 / np.sqrt(P), (P, K))
    eta = x @ w
    prob = np.exp(eta - eta.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    y = (prob.cumsum(axis=1) > rng.random((N, 1))).argmax(axis=1)
    res = gi.refit_output_layer(make_acts(x, y, weight=0.8 * w.T, bias=np.zeros(K)),
                                progress=False)
    return x, y, res


def test_wald_by_cholesky_equals_the_pseudo_inverse_above_600_parameters():
    rng = np.random.default_rng(0)
    n = lk.WALD_EIG_MAX + 50
    v = _pd(rng, n)
    b = rng.standard_normal(n) * np.sqrt(np.diag(v))
    stat, df = lk.wald(b, v)
    ref_stat, ref_df = _pinv_wald(b, v)
    assert df == ref_df == n
    assert stat == pytest.approx(ref_stat, rel=1e-10)


@pytest.mark.parametrize("kind", ["singular", "nearly singular"])
def test_wald_of_a_rank_deficient_covariance_keeps_the_eigen_path(kind):
    rng = np.random.default_rng(1)
    n = lk.WALD_EIG_MAX + 20
    v = _pd(rng, n)
    u = rng.standard_normal(n)
    u /= np.linalg.norm(u)
    proj = np.eye(n) - np.outer(u, u)
    v = proj @ v @ proj  # the sum-to-zero situation: one direction has no variance
    if kind == "nearly singular":
        v += 1e-17 * np.trace(v) / n * np.outer(u, u)
    b = rng.standard_normal(n)
    assert lk.wald(b, v) == _pinv_wald(b, v)  # the same code, the same bits
    assert lk.wald(b, v)[1] == n - 1


def test_small_wald_is_the_pseudo_inverse_bit_for_bit():
    rng = np.random.default_rng(2)
    v = _pd(rng, 9)
    b = rng.standard_normal(9)
    assert lk.wald(b, v) == _pinv_wald(b, v)


def test_agreement_and_unit_tests_are_cached_with_the_same_numbers(wide):
    x, y, res = wide
    assert len(res.terms) * (K - 1) > lk.WALD_EIG_MAX
    first = res.agreement_test
    cov = res.cov_params().to_numpy()
    d = (res.params().to_numpy() - res.network_params().to_numpy()).ravel(order="F")
    ref_stat, ref_df = _pinv_wald(d, cov)
    assert first["df"] == ref_df
    assert first["wald_statistic"] == pytest.approx(ref_stat, rel=1e-9)
    first["statistic"] = -1.0  # the caller's copy: the cached test is not changed
    again = res.agreement_test
    assert again["statistic"] >= 0 and again["wald_statistic"] == first["wald_statistic"]
    units = res.unit_tests
    q = len(res.terms)
    sel = np.arange(K - 1) * q + 5
    stat, df = _pinv_wald(res.params().to_numpy().ravel(order="F")[sel], cov[np.ix_(sel, sel)])
    row = units.loc[units["unit"] == res.terms[5]].iloc[0]
    assert row["df"] == df and row["statistic"] == pytest.approx(stat, rel=1e-12)
    units["statistic"] = np.nan
    pd.testing.assert_frame_equal(res.unit_tests.drop(columns="statistic"),
                                  units.drop(columns="statistic"))
    assert np.isfinite(res.unit_tests["statistic"]).all()


def test_refit_covariance_is_statsmodels_own(wide):
    _, _, res = wide
    assert res.engine == "fast"
    np.testing.assert_array_equal(res.cov_params().to_numpy(),
                                  np.asarray(res.results.cov_params()))


def test_acceptance_with_the_engines_factorisation_gives_the_same_verdict(wide):
    x, y, _ = wide
    er = eng.fit_multinomial(x, y)
    x1 = np.column_stack([np.ones(N), x])
    args = ("multinomial", x1, y, np.asarray(er.params), er.llf,
            lk.null_loglik_multinomial(y, K))
    fresh = acc.check_optimum(*args, er.fisher)
    reused = acc.check_optimum(*args, er.fisher, info_factored=True)
    assert fresh == reused and reused.clean
    # below 600 parameters the flag does not skip the condition number
    info = eng.symmetrize_upper(eng.multinomial_fisher_chunk(x[:, :20], eng.multinomial_probs(
        x[:, :20], np.zeros((21, K - 1)))[0]))
    assert acc._condition(info, factored=True) == acc._condition(info)
    assert acc._condition(info)[1] is not None
    # without the flag a matrix that is not positive definite is still refused
    bad = np.array(er.fisher, order="F")
    bad[0, 0] = -1.0
    assert acc._condition(bad) == (False, None)


def test_design_factor_from_the_built_design_is_the_same_factor():
    rng = np.random.default_rng(3)
    x = np.maximum(rng.standard_normal((700, 30)) + 0.3, 0.0)
    df = pd.DataFrame(x, columns=[f"u{j}" for j in range(30)])
    # as the model builds it (the frame's memory order decides the rounding of the norms)
    x1 = np.column_stack([np.ones(700), df.to_numpy(dtype=np.float64)])
    a, b = dg.design_factor(df), dg.design_factor(df, x1=x1)
    np.testing.assert_array_equal(a.r, b.r)
    np.testing.assert_array_equal(a.norms, b.norms)
    np.testing.assert_array_equal(x1[:, 1:], x)  # the built design is not modified
    # a design in the other memory order: the same factor up to rounding
    c = dg.design_factor(df, x1=np.ascontiguousarray(x1))
    np.testing.assert_allclose(c.r, a.r, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", ["object", "string", "category", "str"])
def test_training_rows_are_found_in_any_split_dtype(dtype):
    ids = [f"s{i}" for i in range(6)]
    split = pd.Series(["train", "refit", "train", "test", "refit", "train"], index=ids,
                      dtype=dtype)
    obs = pd.DataFrame({"split": split})
    assert dg.train_overlap(ids[1:], obs) == ["s2", "s5"]
    assert dg.train_overlap(ids, obs, train_ids=["s1"]) == ["s0", "s1", "s2", "s5"]
    assert dg.train_overlap(ids, pd.DataFrame({"split": ["refit"] * 6}, index=ids)) == []


def test_the_hand_over_to_statsmodels_is_deferred_with_the_same_numbers():
    from glminterp.refit.estimators.base import Deferred
    from glminterp.refit.parametrize import sum_to_zero_cov

    rng = np.random.default_rng(12)
    x = np.maximum(rng.standard_normal((1200, 30)) + 0.2, 0.0)
    y = rng.integers(0, 8, 1200)  # 31 x 7 = 217 parameters: the fast engine under "auto"
    res = gi.refit_output_layer(make_acts(x, y), progress=False)
    assert res.engine == "fast"
    fit = res._fit
    assert isinstance(fit.cov, Deferred) and isinstance(fit.results, Deferred)
    table = res.coefficients  # the table a user reads first: no full covariance, no results
    assert not fit.cov._done and not fit.results._done
    er = eng.fit_multinomial(x, y)
    own = er.to_statsmodels(x, y)  # the eager hand-over, as before
    np.testing.assert_array_equal(table["coef"], np.asarray(own.params).ravel(order="F"))
    np.testing.assert_allclose(table["se"], np.asarray(own.bse).ravel(order="F"), rtol=1e-12)
    cov = res.cov_params().to_numpy()
    np.testing.assert_array_equal(cov, np.asarray(own.cov_params()))
    np.testing.assert_allclose(table["se"], np.sqrt(np.diag(cov)), rtol=1e-12)
    sm_res = res.results  # statsmodels' own results object, built now
    assert type(sm_res) is type(own) and res.results is sm_res  # MultinomialResultsWrapper
    np.testing.assert_array_equal(np.asarray(sm_res.params), np.asarray(own.params))
    np.testing.assert_array_equal(np.asarray(sm_res.bse), np.asarray(own.bse))
    assert sm_res.llf == pytest.approx(own.llf, rel=1e-14)
    stz = res.coefficient_table("sum_to_zero")  # SEs from the full covariance, as before
    ref = np.sqrt(np.diag(sum_to_zero_cov(cov, 8, 31)))
    np.testing.assert_allclose(stz["se"], ref, rtol=1e-12)


def test_a_deferred_result_pickles_and_copies_with_the_same_tables():
    import copy
    import pickle

    rng = np.random.default_rng(13)
    x = np.maximum(rng.standard_normal((900, 25)) + 0.2, 0.0)
    y = rng.integers(0, 9, 900)  # 26 x 8 = 208 parameters: the fast engine
    res = gi.refit_output_layer(make_acts(x, y), progress=False)
    table = res.coefficients
    for other in (pickle.loads(pickle.dumps(res)), copy.deepcopy(res)):
        pd.testing.assert_frame_equal(other.coefficients, table)
        np.testing.assert_array_equal(other.cov_params().to_numpy(),
                                      res.cov_params().to_numpy())
        assert other.agreement_test == res.agreement_test
