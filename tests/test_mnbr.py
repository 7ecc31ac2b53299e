"""Multinomial mean bias reduction: the penalised likelihood it maximises, K = 2 = Firth, layout."""

from __future__ import annotations

import numpy as np
import pytest

from glminterp.engine import FisherSingularError, add_const, fit_multinomial
from glminterp.head import reference_to_sum_to_zero_map
from glminterp.refit import mnbr
from glminterp.refit.firth import fit_firth
from glminterp.refit.mnbr import fit_multinomial_br


def _sim(n=300, p=3, k=4, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p))
    eta = np.c_[np.zeros(n), x @ rng.normal(0, scale, (p, k - 1))]
    prob = np.exp(eta - eta.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    y = (prob.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return x, y


def _pll(x, y, k, beta):
    """Brute force l + 1/2 log det I with the Fisher information summed row by row."""
    x1 = add_const(x)
    eta = np.c_[np.zeros(len(y)), x1 @ beta]
    lp = eta - np.logaddexp.reduce(eta, axis=1, keepdims=True)
    p = np.exp(lp[:, 1:])
    info = sum(np.kron(np.diag(pn) - np.outer(pn, pn), np.outer(xn, xn)) for pn, xn in zip(p, x1))
    return lp[np.arange(len(y)), y].sum() + 0.5 * np.linalg.slogdet(info)[1]


def test_adjusted_score_is_gradient_of_penalised_loglik():
    x, y = _sim(n=60, p=2, k=3)
    beta = np.random.default_rng(1).normal(0, 0.5, (3, 2))
    onehot = np.eye(3)[y][:, 1:]
    pt = mnbr._evaluate(x, onehot, beta, chunk=17)
    grad = mnbr._adjusted_score(x, pt, pt.hats(x, 17))
    num = np.zeros_like(beta)
    for i in np.ndindex(beta.shape):
        e = np.zeros_like(beta)
        e[i] = 1e-6
        num[i] = (_pll(x, y, 3, beta + e) - _pll(x, y, 3, beta - e)) / 2e-6
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7)
    assert pt.pll == pytest.approx(_pll(x, y, 3, beta), rel=1e-12)


def test_zero_slope_start_uses_exact_kronecker_quantities():
    x, y = _sim(n=80, p=3, k=4)
    onehot = np.eye(4)[y][:, 1:]
    b0 = mnbr.null_start_multinomial(y, 4, 4)
    kron = mnbr._evaluate_zero_slopes(x, onehot, b0)
    full = mnbr._evaluate(x, onehot, b0, chunk=30)
    assert kron.pll == pytest.approx(full.pll, rel=1e-12)
    np.testing.assert_allclose(kron.hats(x, 30), full.hats(x, 30), rtol=1e-9, atol=1e-14)
    r = np.random.default_rng(0).standard_normal((4, 3))
    np.testing.assert_allclose(kron.solve(r), full.solve(r), rtol=1e-9)


def test_maximises_penalised_likelihood_and_hats_sum_to_dim():
    x, y = _sim()
    res = fit_multinomial_br(x, y, 4, tol=1e-11)
    assert res.converged and res.score_norm < 1e-8
    base = _pll(x, y, 4, res.params)
    assert res.pll == pytest.approx(base, rel=1e-10)
    rng = np.random.default_rng(3)
    for _ in range(5):
        assert _pll(x, y, 4, res.params + rng.normal(0, 1e-3, res.params.shape)) < base
    onehot = np.eye(4)[y][:, 1:]
    pt = mnbr._evaluate(x, onehot, res.params, chunk=64)
    assert pt.hats(x, 64).sum() == pytest.approx(res.params.size, rel=1e-10)


def test_two_classes_equal_binomial_firth():
    x, y = _sim(n=150, p=3, k=2, scale=2.0, seed=4)
    res = fit_multinomial_br(x, y, 2, tol=1e-12)
    firth = fit_firth(x, y, tol=1e-12)
    np.testing.assert_allclose(res.params[:, 0], firth.params.to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(res.bse[:, 0], firth.bse.to_numpy(), rtol=1e-9)
    assert res.pll == pytest.approx(firth.pll, rel=1e-12)


def test_shrinks_toward_zero_relative_to_mle_and_cov_is_inverse_fisher():
    x, y = _sim(n=200, p=3, k=3, scale=1.5, seed=2)
    br = fit_multinomial_br(x, y, 3, tol=1e-11)
    ml = fit_multinomial(x, y)
    assert np.linalg.norm(br.params) < np.linalg.norm(ml.params)
    np.testing.assert_allclose(br.cov @ br.fisher, np.eye(br.cov.shape[0]), atol=1e-8)
    assert br.llf < ml.llf


def test_sum_to_zero_mapping():
    x, y = _sim(n=120, p=2, k=3)
    res = fit_multinomial_br(x, y, 3)
    g = res.params_sum_to_zero()
    np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(g[:, 1:] - g[:, :1], res.params, atol=1e-12)
    c = reference_to_sum_to_zero_map(3)
    lmap = np.kron(c, np.eye(3))
    np.testing.assert_allclose(res.cov_sum_to_zero(), lmap @ res.cov @ lmap.T, atol=1e-12)
    assert res.bse_sum_to_zero().shape == (3, 3)


def test_start_and_chunking_do_not_change_the_estimate():
    x, y = _sim(n=200, p=3, k=4, seed=5)
    a = fit_multinomial_br(x, y, 4, tol=1e-11)
    b = fit_multinomial_br(x, y, 4, tol=1e-11, chunk_size=7, start=a.params * 0.5)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(a.cov, b.cov, rtol=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x": np.ones((5, 2, 1))}, "2-D"),
        ({"codes": np.array([0, 1, 2, 1, 5])}, "codes must be integers"),
        ({"codes": np.array([0.0, 1, 1, 0, 1])}, "codes must be integers"),
        ({"codes": np.array([0, 1])}, "one entry per row"),
        ({"n_classes": 1}, "n_classes"),
        ({"type": "AS_median"}, "type="),
        ({"start": np.zeros(3)}, "start must hold"),
        ({"tol": 0.0}, "tol must be"),
    ],
)
def test_bad_input_is_named(kwargs, match):
    args = {"x": np.random.default_rng(0).standard_normal((5, 2)),
            "codes": np.array([0, 1, 2, 1, 0]), "n_classes": 3}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fit_multinomial_br(args.pop("x"), args.pop("codes"), args.pop("n_classes"), **args)


def test_collinear_units_raise_fisher_singular():
    x, y = _sim(n=50, p=2, k=3)
    with pytest.raises(FisherSingularError, match="collinear"):
        fit_multinomial_br(np.c_[x, x[:, 0] * 2.0], y, 3)
