"""Matrix-free contrast SEs, class-subset refits and one-vs-rest against dense computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from _glm_sim import relu_features

from glminterp import engine as E
from glminterp.refit.class_subset import fit_class_subset
from glminterp.refit.contrasts import contrast_matrix, fit_contrasts
from glminterp.refit.one_vs_rest import fit_one_vs_rest
from glminterp.refit.separation import SeparationError


@pytest.fixture(scope="module")
def data():
    return relu_features(3000, 10, 6, seed=3)


@pytest.fixture(scope="module")
def dense(data):
    return E.fit_multinomial(*data, method="newton", tol=1e-10)


def test_contrast_ses_equal_dense_inverse(data, dense):
    x, y = data
    spec = [(1, "x3"), (5, "const"), (2, 4, "x1"), (0, 3, "x7"), (3, 0, "x10")]
    res = fit_contrasts(x, y, spec, rtol=1e-12)
    c, labels = contrast_matrix(spec, dense.classes, dense.terms)
    assert res.labels == labels == ("1:x3", "5:const", "2 - 4:x1", "0 - 3:x7", "3 - 0:x10")
    assert res.converged and res.convergence["n_hvp_solve"] > 0
    np.testing.assert_allclose(res.cov, c @ dense.cov @ c.T, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(res.se, np.sqrt(np.diag(c @ dense.cov @ c.T)), rtol=1e-8)
    np.testing.assert_allclose(res.estimates, c @ dense.params.ravel(order="F"), rtol=1e-8,
                               atol=1e-10)
    assert res.llf == pytest.approx(dense.llf, rel=1e-12)
    t = res.table
    assert list(t.columns) == ["estimate", "se", "z", "p", "ci_low", "ci_high"]
    np.testing.assert_allclose(t["p"], 2 * (1 - __import__("scipy").stats.norm.cdf(
        np.abs(res.estimates / res.se))), rtol=1e-10)
    # a raw contrast matrix gives the same numbers
    raw = fit_contrasts(x, y, c, rtol=1e-12)
    np.testing.assert_allclose(raw.se, res.se, rtol=1e-10)


def test_contrast_spec_errors(dense):
    with pytest.raises(ValueError, match="baseline"):
        contrast_matrix([(0, "x1")], dense.classes, dense.terms)
    with pytest.raises(ValueError, match="term"):
        contrast_matrix([(1, "nope")], dense.classes, dense.terms)
    with pytest.raises(ValueError, match="class"):
        contrast_matrix([(9, "x1")], dense.classes, dense.terms)
    with pytest.raises(ValueError, match="columns"):
        contrast_matrix(np.ones((1, 3)), dense.classes, dense.terms)


def test_contrasts_stop_early_on_separated_data():
    x, y = relu_features(3000, 64, 50, seed=0, effect=3.0)
    with pytest.raises(SeparationError, match="separated"):
        fit_contrasts(x, y, [(1, "x1")])


def test_class_subset_equals_statsmodels_on_subset_rows(data):
    x, y = data
    df = pd.DataFrame(x, columns=[f"u{i}" for i in range(x.shape[1])])
    labels = np.array(list("abcdef"))[y]
    res = fit_class_subset(df, labels, ["e", "b", "c"])
    keep = np.isin(labels, ["b", "c", "e"])
    assert res.classes == ("b", "c", "e") and res.n_obs == keep.sum() and res.n_obs_total == 3000
    own = sm.MNLogit(labels[keep], sm.add_constant(df[keep])).fit(method="newton", disp=0,
                                                                   tol=1e-12)
    np.testing.assert_allclose(res.params, own.params, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(res.bse, own.bse, rtol=1e-8)
    assert res.llf == pytest.approx(own.llf, rel=1e-12)
    # contrast c - b per term equals the dense covariance computation
    tab = res.contrast("c", "b")
    np.testing.assert_allclose(tab["estimate"], np.asarray(own.params)[:, 0], rtol=1e-8)
    np.testing.assert_allclose(tab["se"], np.asarray(own.bse)[:, 0], rtol=1e-8)
    q = len(res.terms)
    cov = np.asarray(own.cov_params())
    d = np.asarray(own.params)[:, 1] - np.asarray(own.params)[:, 0]  # e - c
    v = cov[q:, q:] + cov[:q, :q] - cov[q:, :q] - cov[:q, q:]
    np.testing.assert_allclose(res.contrast("e", "c")["se"], np.sqrt(np.diag(v)), rtol=1e-8)
    w = res.wald_test("e", "c")
    stat = d[1:] @ np.linalg.solve(v[1:, 1:], d[1:])
    assert w["df"] == q - 1 and w["statistic"] == pytest.approx(stat, rel=1e-8)
    assert len(res.pairwise) == 3
    # another baseline: same contrasts
    other = fit_class_subset(df, labels, ["b", "c", "e"], baseline="e")
    assert other.classes == ("e", "b", "c")
    np.testing.assert_allclose(other.contrast("c", "b")["se"], tab["se"], rtol=1e-7)
    with pytest.raises(ValueError, match="at least two"):
        fit_class_subset(df, labels, ["b"])
    with pytest.raises(ValueError, match="do not occur"):
        fit_class_subset(df, labels, ["b", "z"])


def test_one_vs_rest_equals_logit_per_class(data):
    x, y = data
    res = fit_one_vs_rest(x, y, classes=[0, 4])
    assert "different model" in res.note
    for j, c in enumerate(res.classes):
        own = sm.Logit((y == c).astype(float), sm.add_constant(x)).fit(disp=0, tol=1e-12)
        np.testing.assert_allclose(res.params[:, j], own.params, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(res.cov_block(c), own.cov_params(), rtol=1e-7)
    assert res.convergence["converged"].all()
