"""Engine internals for wide heads: preconditioner, covariance once, memory check, divergence."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from _glm_sim import relu_features

from glminterp import engine as E
from glminterp.refit.separation import SeparationError


@pytest.fixture(scope="module")
def data():
    return relu_features(2000, 30, 5, seed=11)


def test_bohning_bound_dominates_information_and_inverts(data):
    x, y = data
    codes, _ = E.encode_classes(y)
    chunks = E.array_chunks(x, codes, None, 500)
    obj = E.MultinomialObjective(chunks, 31, 5)
    g = E.gram_matrix(chunks)
    j = 4
    b = 0.5 * np.kron(np.eye(j) - np.ones((j, j)) / 5, g)
    rng = np.random.default_rng(0)
    for scale in (0.0, 0.3, 2.0):
        f = obj.fisher(rng.normal(0, scale, 31 * j))
        assert np.linalg.eigvalsh(b - f).min() > -1e-8 * np.abs(b).max()  # I(beta) <= B
    apply = E.bohning_preconditioner(E._gram_inv(chunks), 5)
    r = rng.standard_normal(31 * j)
    np.testing.assert_allclose(apply(r), np.linalg.solve(b, r), rtol=1e-8, atol=1e-10)


def test_preconditioner_same_optimum_fewer_products(data):
    x, y = data
    x = x * np.geomspace(0.1, 10.0, x.shape[1])  # unit scales differ: CG needs the Gram part
    codes, _ = E.encode_classes(y)
    chunks = E.array_chunks(x, codes, None, 500)
    obj = E.MultinomialObjective(chunks, 31, 5)
    start = E.null_start_multinomial(codes, 5, 31).ravel(order="F")
    factories = {
        "kron": E._kron_precond(obj, E._gram_inv(chunks)),
        "bohning": lambda flat: E.bohning_preconditioner(E._gram_inv(chunks), 5),
        "none": lambda flat: lambda r: r,
    }
    out = {k: E._solve(obj, start, "newton-cg", 1e-9, 100, 2000, f, full=False)
           for k, f in factories.items()}
    dense = E.fit_multinomial(x, y, method="newton").params.ravel(order="F")
    for beta, *_, conv, _trace in out.values():
        assert conv
        np.testing.assert_allclose(beta, dense, rtol=1e-6, atol=1e-8)
    hvps = {k: v[-1].n_hvp for k, v in out.items()}
    assert max(hvps["kron"], hvps["bohning"]) < hvps["none"] / 10, hvps


def test_covariance_inverted_once_and_handed_to_statsmodels(data, monkeypatch):
    x, y = data
    calls = {"np_inv": 0}
    real_inv = np.linalg.inv

    def counting_inv(a, *args, **kw):
        if np.ndim(a) == 2 and a.shape[0] > 50:
            calls["np_inv"] += 1
        return real_inv(a, *args, **kw)

    before = E._N_INVERSES
    res = E.fit_multinomial(x, y, method="newton")
    monkeypatch.setattr(np.linalg, "inv", counting_inv)
    out = res.to_statsmodels(x, y)
    assert E._N_INVERSES - before == 1  # the fit's one potri, nothing in to_statsmodels
    assert calls["np_inv"] == 0
    assert out.mle_retvals["Hessian"] is None
    np.testing.assert_array_equal(np.asarray(out.cov_params()), res.cov)
    own = sm.MNLogit(y, sm.add_constant(x)).fit(method="newton", disp=0, tol=1e-12)
    np.testing.assert_allclose(out.bse, own.bse, rtol=1e-7)


def test_memory_estimate_checked_before_allocating(data):
    x, y = data
    n = 31 * 4
    assert E.covariance_bytes(n) == 2 * 8 * n * n
    with pytest.raises(E.CovarianceMemoryError, match="contrasts") as info:
        E.fit_multinomial(x, y, max_memory=E.covariance_bytes(n) - 1)
    assert info.value.n_params == n and info.value.needed == E.covariance_bytes(n)
    assert E.fit_multinomial(x, y, max_memory=E.covariance_bytes(n)).converged


def _separated(n=3000, p=64, k=50):
    return relu_features(n, p, k, seed=0, effect=3.0)


def test_divergence_detected_early_on_separated_data():
    x, y = _separated()
    with pytest.raises(SeparationError, match="separated") as info:
        E.fit_multinomial(x, y, method="newton-cg", detect_separation=True)
    assert "Hessian-vector products" in str(info.value)
    # a perfectly separated binomial problem: stops on the llf plateau, within a few steps
    xb = np.r_[np.linspace(-3, -0.1, 50), np.linspace(0.1, 3, 50)][:, None]
    yb = (xb[:, 0] > 0).astype(float)
    with pytest.raises(SeparationError):
        E.fit_binomial(xb, yb, detect_separation=True, method="newton")


@pytest.mark.parametrize("effect", [3.0, 6.0])
def test_divergence_monitor_keeps_far_finite_optima(effect):
    x, y = relu_features(20000, 8, 3, seed=1, effect=effect)
    for method in ("newton", "newton-cg"):
        on = E.fit_multinomial(x, y, method=method, detect_separation=True)
        off = E.fit_multinomial(x, y, method=method)
        assert on.converged
        np.testing.assert_array_equal(on.params, off.params)
