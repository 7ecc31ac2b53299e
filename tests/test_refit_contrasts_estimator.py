"""method='contrasts' and method='auto' through refit_output_layer, against the dense inverse."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_glm_synth import make_acts, simulate_multinomial

from glminterp import engine as E
from glminterp.refit import refit_output_layer
from glminterp.refit.results_partial import ContrastRefitResult, NotComputedError

SPEC = [("2", "h:001"), ("4", "const"), ("1", "3", "h:000"), ("0", "2", "h:004")]


@pytest.fixture(scope="module")
def acts():
    rng = np.random.default_rng(11)
    coef = np.column_stack([np.zeros(7), rng.normal(0, 0.4, (7, 4))])
    x, y = simulate_multinomial(rng, 3000, coef)
    return make_acts(x, y, weight=coef[1:].T * 0.9, bias=coef[0] * 0.9)


@pytest.fixture(scope="module")
def dense(acts):
    return refit_output_layer(acts, method="ml", progress=False)


@pytest.fixture(scope="module")
def partial(acts):
    return refit_output_layer(acts, method="contrasts", contrasts=SPEC, classes=["3"],
                              remedy_kwds={"tol": 1e-10, "rtol": 1e-12}, progress=False)


def _rows(dense, spec):
    """The dense contrast vectors over the reference parameters (class outer)."""
    q = len(dense.terms)
    classes = list(dense.model.all_classes)
    out = []
    for item in spec:
        row = np.zeros(q * (len(classes) - 1))
        for cls, sign in zip(item[:-1], (1.0, -1.0)):
            k = classes.index(cls)
            if k:
                row[(k - 1) * q + list(dense.terms).index(item[-1])] += sign
        out.append(row)
    return np.array(out)


def test_contrast_ses_equal_the_dense_inverse(dense, partial):
    assert isinstance(partial, ContrastRefitResult)
    spec = SPEC + [("3", t) for t in dense.terms]
    c = _rows(dense, spec)
    cov = c @ dense.cov_params().to_numpy() @ c.T
    beta = dense.params().to_numpy().ravel(order="F")
    tab = partial.coefficients
    assert len(tab) == len(spec) == 4 + 7
    np.testing.assert_allclose(tab["coef"], c @ beta, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(tab["se"], np.sqrt(np.diag(cov)), rtol=1e-8)
    np.testing.assert_allclose(partial.contrast_cov.to_numpy(), cov, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(partial.params().to_numpy(), dense.params().to_numpy(),
                               rtol=1e-8, atol=1e-10)
    # the rows for single coefficients equal the dense table's rows
    dt = dense.coefficients.set_index(["class", "term"])
    one = tab[tab["class"] == "3"].set_index(["class", "term"])
    for col in ("coef", "se", "z", "ci_lower", "ci_upper", "network_weight"):
        np.testing.assert_allclose(one[col], dt.loc[one.index, col], rtol=1e-7, atol=1e-10)
    assert list(tab["contrast"][:3]) == ["2:h:001", "4:const", "1 - 3:h:000"]
    assert list(tab["class"][:4]) == ["2", "4", "1 - 3", "0 - 2"]
    z = tab["coef"] / tab["se"]
    np.testing.assert_allclose(tab["p"], 2 * stats.norm.sf(np.abs(z)), rtol=1e-12)
    assert partial.fit_stats["llf"] == pytest.approx(dense.fit_stats["llf"], rel=1e-12)
    assert partial.fit_stats["lr_statistic"] == pytest.approx(dense.fit_stats["lr_statistic"],
                                                              rel=1e-9)


def test_tables_name_what_was_not_computed(partial):
    n = 7 * 4
    tab = partial.coefficients
    assert (tab["inference"] == partial.inference).all()
    assert f"other {n - 11} SEs were not computed" in partial.inference
    assert "not computed" in tab.attrs["not_computed"] and tab["se"].notna().all()
    assert partial.summary.attrs["not_computed"] == partial.not_computed
    fs = partial.fit_stats
    assert fs["estimator"] == "contrasts" and fs["n_contrasts"] == 11
    assert fs["not_computed"].startswith(f"standard errors of the other {n - 11} of {n}")
    for call in (lambda: partial.cov_params(), lambda: partial.unit_tests,
                 lambda: partial.class_cov("3"),
                 lambda: partial.coefficient_table("sum_to_zero")):
        with pytest.raises(NotComputedError, match="not computed by method='contrasts'"):
            call()


def test_wald_tests_on_the_chosen_contrasts(dense, partial):
    c = _rows(dense, SPEC[:2])
    b = dense.params().to_numpy().ravel(order="F")
    v = c @ dense.cov_params().to_numpy() @ c.T
    want = float(c @ b @ np.linalg.solve(v, c @ b))
    got = partial.wald_test(["2:h:001", "4:const"])
    assert got["df"] == 2 and got["statistic"] == pytest.approx(want, rel=1e-7)
    agree = partial.agreement_test
    assert agree["df"] == 11 and "chosen contrasts" in agree["interpretation"]
    with pytest.raises(KeyError, match="was not computed"):
        partial.wald_test(["9:h:001"])


def test_contrast_spec_errors(acts):
    with pytest.raises(ValueError, match="needs contrasts="):
        refit_output_layer(acts, method="contrasts", progress=False)
    with pytest.raises(ValueError, match="baseline"):
        refit_output_layer(acts, method="contrasts", classes=["0"], progress=False)
    with pytest.raises(ValueError, match="not among the terms"):
        refit_output_layer(acts, method="contrasts", contrasts=[("1", "nope")], progress=False)
    with pytest.raises(ValueError, match="used by method='contrasts'"):
        refit_output_layer(acts, method="ml", contrasts=SPEC, progress=False)
    with pytest.raises(ValueError, match="give one"):
        refit_output_layer(acts, method="ovr", remedy="firth", progress=False)
    with pytest.raises(ValueError, match="bootstrap"):
        refit_output_layer(acts, method="contrasts", contrasts=SPEC, bootstrap=5,
                           progress=False)


def test_auto_keeps_the_full_covariance_when_it_fits(acts, dense):
    res = refit_output_layer(acts, method="auto", progress=False)
    fs = res.fit_stats
    assert fs["estimator"] == "ml" and "fits; maximum likelihood" in fs["estimator_choice"]
    np.testing.assert_allclose(res.cov_params().to_numpy(), dense.cov_params().to_numpy(),
                               rtol=1e-10)
    assert res.contrast_table is None
    asked = refit_output_layer(acts, method="auto", contrasts=SPEC, progress=False)
    c = _rows(dense, SPEC)
    tab = asked.contrast_table
    np.testing.assert_allclose(tab["se"], np.sqrt(np.diag(
        c @ dense.cov_params().to_numpy() @ c.T)), rtol=1e-10)
    assert list(tab["contrast"]) == ["2:h:001", "4:const", "1 - 3:h:000", "0 - 2:h:004"]


def test_auto_switches_to_contrasts_past_the_memory_limit(acts, dense, monkeypatch):
    monkeypatch.setattr(E, "available_memory_bytes", lambda: 10_000)
    res = refit_output_layer(acts, contrasts=SPEC, progress=False)  # method None -> auto
    assert isinstance(res, ContrastRefitResult)
    pd.testing.assert_frame_equal(res.contrast_table, res.coefficients)
    fs = res.fit_stats
    assert fs["estimator"] == "contrasts"
    assert fs["estimator_choice"] == (
        "auto: the full covariance of 28 parameters needs 0.00 GiB, more than allowed; chose "
        "method='contrasts' (exact Wald SEs of the requested coefficients / contrasts, "
        "matrix-free)")
    assert fs["estimator_choice"] in res.diagnostics["notes"]
    c = _rows(dense, SPEC)
    np.testing.assert_allclose(res.coefficients["se"], np.sqrt(np.diag(
        c @ dense.cov_params().to_numpy() @ c.T)), rtol=1e-6)
    with pytest.raises(E.CovarianceMemoryError, match=r"contrasts=\[.*method='class_subset'.*"
                                                      r"method='ovr'"):
        refit_output_layer(acts, method="auto", progress=False)


def test_auto_choice_is_in_fit_json(acts, monkeypatch):
    from glminterp.report.builder import refit_fit_record

    monkeypatch.setattr(E, "available_memory_bytes", lambda: 10_000)
    res = refit_output_layer(acts, method="auto", classes=["4"], progress=False)
    rec = refit_fit_record(res)
    assert rec["fit"]["estimator"] == "contrasts"
    assert rec["fit"]["estimator_choice"].startswith("auto: the full covariance of 28")
    assert "unit_tests" not in rec  # not computed: left out, not NaN


def test_auto_switches_when_the_engine_itself_runs_out(acts, monkeypatch):
    # auto's own estimate passes (max_memory), the engine's check at fit time does not
    monkeypatch.setattr(E, "available_memory_bytes", lambda: 10_000)
    res = refit_output_layer(acts, method="auto", engine="fast", contrasts=SPEC[:1],
                             remedy_kwds={"max_memory": 2**40}, progress=False)
    assert res.fit_stats["estimator"] == "contrasts"
    assert "chose method='contrasts'" in res.fit_stats["estimator_choice"]
