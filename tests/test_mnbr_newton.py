"""Multinomial bias reduction by Newton's method: the exact Hessian, few iterations, equal to R.

The Hessian of ``l + 1/2 log det I`` (glminterp.refit.mnbr_hessian) is checked against central
differences of the adjusted score; Newton's iteration count on separated data against the
Fisher-metric iteration's; its estimates against R brglm2::brmultinom (tests/fixtures/r).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_mnbr import _sim
from test_mnbr_r_reference import _load, _matrix

from glminterp.refit import mnbr
from glminterp.refit.mnbr import fit_multinomial_br
from glminterp.refit.mnbr_hessian import hessian_flops, penalized_hessian


def _grad(x, onehot, beta):
    pt = mnbr._evaluate(x, onehot, beta, chunk=29)
    return mnbr._adjusted_score(x, pt, pt.hats(x, 29)), pt


def test_hessian_equals_differences_of_the_adjusted_score():
    x, y = _sim(n=70, p=3, k=4, scale=2.0, seed=3)
    onehot = np.eye(4)[y][:, 1:]
    beta = np.random.default_rng(2).normal(0, 0.5, (4, 3))
    _, pt = _grad(x, onehot, beta)
    hess = penalized_hessian(x, pt.probs, pt.fisher_matrix(), pt.inverse_fisher(), chunk=13)
    num = np.empty_like(hess)
    for r in range(beta.size):
        e = np.zeros(beta.size)
        e[r] = 1e-6
        e = e.reshape(beta.shape, order="F")
        num[:, r] = ((_grad(x, onehot, beta + e)[0] - _grad(x, onehot, beta - e)[0])
                     / 2e-6).ravel(order="F")
    np.testing.assert_allclose(hess, num, rtol=1e-5, atol=1e-6 * np.abs(hess).max())
    assert np.max(np.linalg.eigvalsh(hess)) < np.max(np.linalg.eigvalsh(-pt.fisher_matrix()))


@pytest.mark.parametrize("name", ["realsep", "complete", "quasi"])
def test_newton_equals_brmultinom_in_few_iterations_on_separated_data(name):
    x, y, ref = _load(name)
    k = int(y.max()) + 1
    newton = fit_multinomial_br(x.to_numpy(), y, k, tol=1e-11, method="newton")
    fisher = fit_multinomial_br(x.to_numpy(), y, k, tol=1e-11, method="fisher", max_iter=5000)
    assert newton.converged and newton.method == "newton"
    terms = ["const", *x.columns]
    np.testing.assert_allclose(newton.params, _matrix(ref, "coef", terms), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(newton.bse, _matrix(ref, "se", terms), rtol=1e-6)
    assert newton.n_iter <= 20 and newton.n_hessian == newton.n_iter
    assert newton.n_iter < fisher.n_iter


@pytest.mark.parametrize("name", ["realsep", "complete"])
def test_newton_converges_quadratically(name):
    """Near the optimum each Fisher-metric step is at most about the square of the previous."""
    x, y, _ = _load(name)
    res = fit_multinomial_br(x.to_numpy(), y, int(y.max()) + 1, tol=1e-10, method="newton")
    steps = [h[1] for h in res.history]
    assert steps[-1] <= 1e-10
    tail = [s for s in steps if 1e-10 < s < 1e-2]  # above the rounding floor
    assert 2 <= len(tail) <= 3
    assert all(b <= 10 * a * a for a, b in zip(tail, tail[1:]))


def test_wide_separated_head_converges_where_fisher_steps_stall():
    """More parameters than rows, tiny unit scales, every class separated (the flatten-head CNN
    case of tests/test_analysis_api.py, 179 rows, 234 parameters): Newton converges."""
    rng = np.random.default_rng(0)
    n, p, k = 60, 12, 6
    y = np.arange(n) % k
    x = 0.01 * (rng.standard_normal((n, p)) + 1.5 * np.eye(k)[y] @ rng.standard_normal((k, p)))
    assert (p + 1) * (k - 1) > n
    res = fit_multinomial_br(x, y, k, max_iter=200, method="newton")
    assert res.converged and res.n_iter <= 20
    auto = fit_multinomial_br(x, y, k, max_iter=200)
    fisher = fit_multinomial_br(x, y, k, max_iter=200, method="fisher")
    assert auto.method == "fisher+newton" and auto.converged
    assert auto.n_iter < fisher.n_iter
    np.testing.assert_allclose(auto.params, fisher.params, rtol=1e-6, atol=1e-6)
    grad, _ = _grad(x, np.eye(k)[y][:, 1:], res.params)
    assert np.max(np.abs(grad)) < 1e-6 * max(1.0, np.max(np.abs(res.params)))


def test_auto_method_uses_newton_only_where_a_hessian_is_cheap():
    assert mnbr._choose_method("auto", 179, 10, 234) == "fisher+newton"  # the flatten head
    assert mnbr._choose_method("auto", 10_000, 10, 2313) == "fisher"  # N=10k, p=256, K=10
    assert hessian_flops(10_000, 10, 2313) > 1e13
    with pytest.raises(ValueError, match="method="):
        fit_multinomial_br(np.zeros((5, 1)), np.arange(5) % 2, 2, method="bfgs")


def test_start_fisher_is_checked_and_reused():
    x, y = _sim(n=200, p=3, k=3, seed=4)
    a = fit_multinomial_br(x, y, 3, tol=1e-11)
    start = a.params * 0.9
    pt = mnbr._evaluate(x, np.eye(3)[y][:, 1:], start, chunk=64)
    b = fit_multinomial_br(x, y, 3, tol=1e-11, start=start, start_fisher=pt.fisher_matrix())
    np.testing.assert_allclose(b.params, a.params, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="start_fisher"):
        fit_multinomial_br(x, y, 3, start=start, start_fisher=np.eye(3))
