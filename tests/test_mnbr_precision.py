"""Multinomial bias reduction: the accelerated and mixed-precision paths equal the plain iteration.

The plain reference is Fisher scoring on the adjusted score, ``b <- b + I^-1 (U + A)`` with step
halving on ``l*``, written out here from the module's pieces (no acceleration, no pseudo-data
solve, float64 throughout) and run to ``1e-13``. The fit's Anderson-accelerated path and its
float32 evaluations (``precision="mixed"``, glminterp.refit.mnbr_single) must land on the same
estimate to 1e-8, with float64 standard errors.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_mnbr import _sim

from glminterp.engine import fit_multinomial, null_start_multinomial
from glminterp.refit import mnbr
from glminterp.refit.mnbr import fit_multinomial_br
from glminterp.refit.mnbr_single import SingleDesign


def _plain_fisher(x, y, k, tol=1e-13, max_iter=20_000):
    n = x.shape[0]
    onehot = np.eye(k)[y][:, 1:]
    b = null_start_multinomial(y, k, x.shape[1] + 1)
    pt = mnbr._evaluate(x, onehot, b, chunk=n)
    for _ in range(max_iter):
        step = pt.solve(mnbr._adjusted_score(x, pt, pt.hats(x, n)))
        if np.max(np.abs(step)) <= tol:
            return pt.beta + step
        t = 1.0
        while True:
            cand = mnbr._evaluate(x, onehot, pt.beta + t * step, chunk=n)
            if cand.pll >= pt.pll - 1e-12 * abs(pt.pll) or t < 1e-8:
                break
            t *= 0.5
        pt = cand
    raise AssertionError("plain Fisher iteration did not converge")


def _separated(n=90, p=3, k=3, seed=5):
    """Labels from a noise-free linear head: complete separation."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p))
    return x, np.argmax(x @ rng.standard_normal((p, k)), axis=1)


DESIGNS = {"overlapping": lambda: _sim(n=300, p=4, k=4, seed=1), "separated": _separated}


@pytest.mark.parametrize("name", list(DESIGNS))
@pytest.mark.parametrize("precision", ["double", "mixed"])
def test_accelerated_path_equals_plain_fisher_iteration(name, precision):
    x, y = DESIGNS[name]()
    k = int(y.max()) + 1
    plain = _plain_fisher(x, y, k)
    fit = fit_multinomial_br(x, y, k, tol=1e-11, method="fisher", precision=precision,
                             max_iter=5000)
    assert fit.converged
    np.testing.assert_allclose(fit.params, plain, rtol=1e-8, atol=1e-8)
    if precision == "mixed":
        assert fit.n_single > 0


@pytest.mark.parametrize("name", list(DESIGNS))
def test_mixed_precision_result_is_float64_exact(name):
    """float32 only far away: the stopping point, the estimate and the SEs are float64."""
    x, y = DESIGNS[name]()
    k = int(y.max()) + 1
    double = fit_multinomial_br(x, y, k, tol=1e-11, method="fisher", max_iter=5000)
    mixed = fit_multinomial_br(x, y, k, tol=1e-11, method="fisher", precision="mixed",
                               max_iter=5000)
    assert double.n_single == 0 and 0 < mixed.n_single < mixed.n_fisher
    assert mixed.cov.dtype == np.float64 and mixed.fisher.dtype == np.float64
    np.testing.assert_allclose(mixed.params, double.params, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(mixed.bse, double.bse, rtol=1e-9)
    # the information returned is the float64 one at the estimate (to its last step, <= tol)
    pt = mnbr._evaluate(x, np.eye(k)[y][:, 1:], mixed.params, chunk=64)
    np.testing.assert_allclose(mixed.fisher, pt.fisher_matrix(), rtol=1e-8, atol=1e-12)
    assert mixed.pll == pytest.approx(double.pll, rel=1e-12)


def test_mixed_precision_from_the_mle_and_its_inverse():
    """The public route: start at the MLE with its information and covariance reused."""
    x, y = _sim(n=400, p=5, k=3, seed=7)
    ml = fit_multinomial(x, y, tol=1e-10)
    ref = fit_multinomial_br(x, y, 3, tol=1e-11, precision="double")
    for precision in ("double", "mixed"):
        res = fit_multinomial_br(x, y, 3, tol=1e-11, start=ml.params, start_fisher=ml.fisher,
                                 start_cov=ml.cov, precision=precision, method="fisher")
        np.testing.assert_allclose(res.params, ref.params, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(res.bse, ref.bse, rtol=1e-9)
    with pytest.raises(ValueError, match="start_cov"):
        fit_multinomial_br(x, y, 3, start=ml.params, start_fisher=ml.fisher,
                           start_cov=np.eye(2))


def test_centred_float32_pieces_match_float64():
    x, y = _sim(n=250, p=4, k=4, seed=2)
    x = x + 3.0  # offset units: centring matters for float32
    onehot = np.eye(4)[y][:, 1:]
    beta = np.random.default_rng(3).normal(0, 0.3, (5, 3))
    design = SingleDesign(x, 4)
    full = mnbr._evaluate(x, onehot, beta, chunk=64)
    fc = design.center_fisher(full.fisher_matrix())
    # exact maps: the centred information inverts to the centred covariance
    np.testing.assert_allclose(np.linalg.inv(fc), design.center_cov(full.inverse_fisher()),
                               rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(design.fisher(full.probs, 64), fc, rtol=1e-4,
                               atol=1e-5 * np.abs(fc).max())
    single = mnbr._evaluate_single(design, x, onehot, beta, chunk=64)
    assert single.single is design and single.noise > 0
    np.testing.assert_allclose(single.hats(x, 64), full.hats(x, 64), rtol=1e-4, atol=1e-8)
    r = np.random.default_rng(4).standard_normal(beta.shape)
    np.testing.assert_allclose(single.solve(r), full.solve(r), rtol=1e-4,
                               atol=1e-5 * np.abs(full.solve(r)).max())
    assert single.logdet == pytest.approx(full.logdet, abs=1e-3)
    with pytest.raises(RuntimeError, match="float32"):
        single.inverse_fisher()


def test_float32_failure_falls_back_to_float64(monkeypatch):
    """Where the float32 Cholesky fails, the point is evaluated in float64; the fit goes on."""
    x, y = _sim(n=300, p=3, k=3, seed=8)
    x = np.c_[x, x[:, 0] + 1e-2 * np.random.default_rng(9).standard_normal(300)]
    double = fit_multinomial_br(x, y, 3, tol=1e-10, method="fisher", max_iter=5000)
    real = mnbr.cho_factor

    def no_float32(a, *args, **kw):
        if a.dtype == np.float32:
            raise np.linalg.LinAlgError("not positive definite")
        return real(a, *args, **kw)

    monkeypatch.setattr(mnbr, "cho_factor", no_float32)
    onehot = np.eye(3)[y][:, 1:]
    pt = mnbr._evaluate_single(SingleDesign(x, 3), x, onehot, double.params, chunk=64)
    assert pt.single is None
    assert pt.pll == mnbr._evaluate(x, onehot, double.params, chunk=64).pll
    mixed = fit_multinomial_br(x, y, 3, tol=1e-10, method="fisher", precision="mixed",
                               max_iter=5000)
    assert mixed.converged
    np.testing.assert_allclose(mixed.params, double.params, rtol=1e-8, atol=1e-10)


def test_precision_option_is_checked_and_auto_picks_by_cost():
    with pytest.raises(ValueError, match="precision="):
        fit_multinomial_br(np.zeros((5, 1)), np.arange(5) % 2, 2, precision="half")
    assert not mnbr._single_pays(1500, 64, 10)  # the default study head: float64
    assert mnbr._single_pays(10_000, 256, 10)  # the size: float32 far away
    x = np.random.default_rng(0).random((2000, 100))
    assert mnbr._single_pays(2000, 100, 10)
    choose = mnbr._choose_precision
    assert isinstance(choose("auto", "fisher", x, 10, from_mle=True), SingleDesign)
    assert choose("auto", "fisher", x, 10, from_mle=False) is None  # null start: float64
    assert choose("auto", "fisher+newton", x, 10, from_mle=True) is None
    assert choose("mixed", "newton", x, 10, from_mle=True) is None
    assert isinstance(choose("mixed", "fisher", x, 10, from_mle=False), SingleDesign)
