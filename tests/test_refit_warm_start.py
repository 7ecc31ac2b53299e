"""Where the refit starts from the network's head, and that the start never changes the optimum.

The fast engine starts plain Newton (up to 500 parameters) from the head when it beats the
intercept-only fit, and Newton-CG from the intercept-only fit (where its preconditioner is
the exact inverse information; measured in ``benchmarks/separation_check.py``). A start whose
fit is rejected falls back to the intercept-only start.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_glm_synth import make_acts

import glminterp as gi
from glminterp import engine as eng
from glminterp.refit.estimators import ml_fast


def _data(n, p, k, seed, effect=1.0):
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal((n, p)) + rng.normal(0, 0.5, p), 0.0)
    w = rng.normal(0, effect / np.sqrt(p), (k, p))
    b = rng.normal(0, 0.3, k)
    eta = x @ w.T + b
    prob = np.exp(eta - eta.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    y = (prob.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return x, y, w, b


def _refit(x, y, w=None, b=None):
    return gi.refit_output_layer(make_acts(x, y, weight=w, bias=b), engine="fast",
                                 progress=False)


def _same_optimum(a, b):
    np.testing.assert_allclose(a.params().to_numpy(), b.params().to_numpy(), rtol=1e-8,
                               atol=1e-10)
    np.testing.assert_allclose(a.coefficients["se"], b.coefficients["se"], rtol=1e-8)
    assert a.fit_stats["llf"] == pytest.approx(b.fit_stats["llf"], rel=1e-12)


def test_plain_newton_starts_at_a_good_head_with_the_same_optimum():
    x, y, w, b = _data(800, 8, 4, seed=0)  # 27 parameters: plain Newton
    warm, cold = _refit(x, y, w, b), _refit(x, y)
    assert warm.diagnostics["start"] == "network" and cold.diagnostics["start"] == "null"
    _same_optimum(warm, cold)
    assert warm.converged and cold.converged


def test_a_head_worse_than_the_intercept_only_fit_is_not_used():
    x, y, w, b = _data(800, 8, 4, seed=1)
    bad = _refit(x, y, -8.0 * w, -b)  # confidently wrong: below the null log-likelihood
    assert bad.diagnostics["start"] == "null"
    _same_optimum(bad, _refit(x, y))


def test_newton_cg_keeps_the_intercept_only_start_and_the_heads_start_agrees():
    x, y, w, b = _data(1500, 70, 10, seed=2)  # 639 parameters: Newton-CG
    assert ml_fast._newton_cg(1500, 71, 9)
    res = _refit(x, y, w, b)
    assert res.diagnostics["start"] == "null"
    head_start = make_acts(x, y, weight=w, bias=b).head.params("reference")
    from_head = eng.fit_multinomial(x, y, start=head_start)
    from_null = eng.fit_multinomial(x, y)
    np.testing.assert_allclose(from_head.params, from_null.params, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(res.params().to_numpy(), from_head.params, rtol=1e-8,
                               atol=1e-10)
    np.testing.assert_allclose(from_head.bse, from_null.bse, rtol=1e-7)


def test_a_rejected_start_from_the_head_falls_back_to_the_intercept_only_start(monkeypatch):
    x, y, w, b = _data(800, 8, 4, seed=3)
    real = ml_fast.fit_target

    def fails_from_the_head(model, target, ctx, start=None):
        if start is not None:
            raise np.linalg.LinAlgError("the head's start failed (test)")
        return real(model, target, ctx, start)

    monkeypatch.setattr(ml_fast, "fit_target", fails_from_the_head)
    res = _refit(x, y, w, b)
    assert res.converged and res.diagnostics["start"] == "null"
    assert any("rejected fast (network start)" in n for n in res.diagnostics["notes"])
    monkeypatch.undo()
    _same_optimum(res, _refit(x, y))
