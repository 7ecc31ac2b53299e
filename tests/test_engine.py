"""The fast Newton engine equals statsmodels' own fits (params, SEs, log-likelihood)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from _glm_sim import relu_features

from glminterp import engine as E


@pytest.fixture(scope="module")
def data():
    return relu_features(1500, 12, 4, seed=1)


@pytest.fixture(scope="module")
def sm_mnlogit(data):
    x, y = data
    return sm.MNLogit(y, sm.add_constant(x)).fit(method="newton", disp=0, tol=1e-12)


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b))))


@pytest.mark.parametrize("method", ["newton", "newton-cg"])
def test_multinomial_equals_statsmodels(data, sm_mnlogit, method):
    x, y = data
    res = E.fit_multinomial(x, y, method=method, chunk_size=200)
    assert res.converged
    assert res.params.shape == (13, 3)
    assert _rel(res.params, sm_mnlogit.params) < 1e-8
    assert _rel(res.bse, sm_mnlogit.bse) < 1e-7
    assert res.llf == pytest.approx(sm_mnlogit.llf, rel=1e-12)
    # cov is the inverse of statsmodels' own Hessian at its optimum
    h = sm_mnlogit.model.hessian(sm_mnlogit.params.ravel(order="F"))
    np.testing.assert_allclose(res.fisher, -h, rtol=1e-6, atol=1e-9)


def test_fisher_chunking_and_hvp_are_exact(data):
    x, y = data
    codes, _ = E.encode_classes(y)
    rng = np.random.default_rng(0)
    beta = rng.normal(0, 0.1, (13, 3)).ravel(order="F")
    full = E.MultinomialObjective(E.array_chunks(x, codes, None, 10_000), 13, 4)
    small = E.MultinomialObjective(E.array_chunks(x, codes, None, 97), 13, 4)
    f_full, f_small = full.fisher(beta), small.fisher(beta)
    np.testing.assert_allclose(f_small, f_full, rtol=1e-12, atol=1e-10)
    np.testing.assert_array_equal(f_full, f_full.T)
    v = rng.standard_normal(39)
    np.testing.assert_allclose(small.hvp(beta, v), f_full @ v, rtol=1e-10, atol=1e-9)
    # statsmodels' own (K-1)^2-block Hessian at an arbitrary point
    h = sm.MNLogit(y, sm.add_constant(x)).hessian(beta)
    np.testing.assert_allclose(f_full, -h, rtol=1e-10, atol=1e-8)


def test_to_statsmodels_both_covariances(data, sm_mnlogit):
    x, y = data
    res = E.fit_multinomial(x, y)
    for cov in ("engine", "statsmodels"):
        out = res.to_statsmodels(x, y, cov=cov)
        assert isinstance(out.model, sm.MNLogit)
        assert out.mle_retvals["converged"] and out.converged
        assert _rel(out.bse, sm_mnlogit.bse) < 1e-7
        assert _rel(out.params, sm_mnlogit.params) < 1e-8
    # the model's hessian method is restored afterwards (not the fixed matrix)
    assert "hessian" not in vars(out.model)
    with pytest.raises(ValueError, match="cov="):
        res.to_statsmodels(x, y, cov="HC3")


def test_to_statsmodels_robust_cov_and_glm(data):
    x, y = data
    x1 = sm.add_constant(x)
    own = sm.MNLogit(y, x1).fit(method="newton", disp=0, tol=1e-12, cov_type="HC0")
    out = E.fit_multinomial(x, y).to_statsmodels(x, y, cov_type="HC0")
    assert out.cov_type == "HC0" and _rel(out.bse, own.bse) < 1e-7
    yb = (y == 0).astype(float)
    bres = E.fit_binomial(x, yb)
    glm_own = sm.GLM(yb, x1, family=sm.families.Binomial()).fit(tol=1e-14, cov_type="HC0")
    glm_out = bres.to_statsmodels(x, yb, model="glm", cov_type="HC0")
    assert isinstance(glm_out.model, sm.GLM)
    assert _rel(glm_out.bse, glm_own.bse) < 1e-8
    assert glm_out.llf == pytest.approx(glm_own.llf, rel=1e-12)


def test_warm_start_from_head_converges_faster(data, sm_mnlogit):
    x, y = data
    cold = E.fit_multinomial(x, y, method="newton")
    warm = E.fit_multinomial(x, y, method="newton", start=np.asarray(sm_mnlogit.params) + 1e-3)
    assert warm.n_iter < cold.n_iter
    assert _rel(warm.params, sm_mnlogit.params) < 1e-8


def test_dataframe_terms_and_label_baseline():
    x, y = relu_features(600, 3, 3, seed=2)
    labels = np.array(["cat", "dog", "eel"])[y]
    df = pd.DataFrame(x, columns=["u:a", "u:b", "u:c"])
    res = E.fit_multinomial(df, labels)
    assert res.terms == ("const", "u:a", "u:b", "u:c")
    assert res.classes == ("cat", "dog", "eel")
    ref = sm.MNLogit(labels, sm.add_constant(df)).fit(disp=0, tol=1e-12)
    assert _rel(res.params, ref.params) < 1e-8
    assert list(res.params_frame.columns) == ["dog", "eel"]


def test_binomial_equals_logit_and_glm(data):
    x, y = data
    yb = (y == 2).astype(float)
    res = E.fit_binomial(x, yb)
    logit = sm.Logit(yb, sm.add_constant(x)).fit(disp=0, tol=1e-12)
    glm = sm.GLM(yb, sm.add_constant(x), family=sm.families.Binomial()).fit(tol=1e-14)
    assert _rel(res.params, logit.params) < 1e-9
    assert _rel(res.bse, logit.bse) < 1e-8
    assert _rel(res.bse, glm.bse) < 1e-6
    assert res.llf == pytest.approx(glm.llf, rel=1e-12)
    cg = E.fit_binomial(x, yb, method="newton-cg")
    assert _rel(cg.params, logit.params) < 1e-9
    out = res.to_statsmodels(x, yb)
    assert isinstance(out.model, sm.Logit) and _rel(out.bse, logit.bse) < 1e-8


def test_binomial_frequency_weights_equal_expanded_rows():
    x, y = relu_features(300, 3, 2, seed=3)
    w = np.random.default_rng(4).integers(1, 4, size=300)
    wres = E.fit_binomial(x, y, weights=w)
    rep = E.fit_binomial(np.repeat(x, w, axis=0), np.repeat(y, w))
    np.testing.assert_allclose(wres.params, rep.params, rtol=1e-9)
    np.testing.assert_allclose(wres.bse, rep.bse, rtol=1e-9)
    assert wres.weighted and not rep.weighted
    with pytest.raises(ValueError, match="frequency weights"):
        wres.to_statsmodels(x, y)


def test_input_errors_and_singular_design():
    x, y = relu_features(200, 3, 3, seed=5)
    with pytest.raises(ValueError, match="method"):
        E.fit_multinomial(x, y, method="bfgs")
    with pytest.raises(ValueError, match="rows"):
        E.fit_multinomial(x, y[:-1])
    with pytest.raises(ValueError, match="only 0 and 1"):
        E.fit_binomial(x, y)
    with pytest.raises(ValueError, match="NaN"):
        E.fit_multinomial(np.where(x > 0.5, np.nan, x), y)
    dup = np.column_stack([x, x[:, 0]])
    with pytest.raises(E.FisherSingularError, match="rank deficient"):
        E.fit_multinomial(dup, y, method="newton")


def test_separation_is_not_silently_converged():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((100, 2))
    y = (x[:, 0] > 0).astype(int)
    with pytest.warns(RuntimeWarning, match="separation"):
        res = E.fit_binomial(x, y, max_iter=30)
    assert not res.converged


def test_auto_method_and_newton_cg_on_ill_conditioned_design():
    x, y = relu_features(800, 5, 3, seed=12)
    near = x[:, 0] + 0.02 * np.random.default_rng(0).standard_normal(800)  # near-collinear
    x = np.column_stack([x, near, 100 * x[:, 2] * x[:, 3]])  # and a badly scaled unit
    ref = sm.MNLogit(y, sm.add_constant(x)).fit(method="newton", disp=0, tol=1e-12)
    auto = E.fit_multinomial(x, y)
    assert auto.method == "auto" and auto.n_hvp == 0  # few parameters: full Newton
    cg = E.fit_multinomial(x, y, method="newton-cg")
    assert cg.converged and cg.n_hvp > 0 and cg.n_fisher >= 1
    for res in (auto, cg):
        assert _rel(res.params, ref.params) < 1e-7
        assert _rel(res.bse, ref.bse) < 1e-6
