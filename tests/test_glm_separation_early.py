"""The fast engine stops a separated fit at the divergence signal; the LP still decides.

The engine's DivergenceMonitor watches the first iterations (``ml_fast.PROBE_ITER``): on
separated data the fit stops before any exact Newton step (no information matrix is built),
the separation LP confirms, and the SeparationError is the LP's. A signal on data that
overlap (the LP disagrees) refits from the start; ``on_separation="warn"`` still returns the
fit's estimates.
"""

from __future__ import annotations

import numpy as np
import pytest
from _glm_sim import relu_features
from test_glm_synth import make_acts

import glminterp as gi
from glminterp import engine as eng
from glminterp.refit import separation as sep
from glminterp.refit.errors import RefitWarning


def _separated(n=1500, p=60, k=10, seed=0):
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal((n, p)) + 0.2, 0.0)
    return x, (x @ rng.standard_normal((p, k))).argmax(axis=1)


def _count_fisher(monkeypatch):
    calls = []
    real = eng.MultinomialObjective.fisher

    def counted(self, flat):
        calls.append(1)
        return real(self, flat)

    monkeypatch.setattr(eng.MultinomialObjective, "fisher", counted)
    return calls


def test_separated_newton_cg_fit_stops_before_any_information_matrix(monkeypatch):
    x, y = _separated()
    acts = make_acts(x, y)
    fisher = _count_fisher(monkeypatch)
    with pytest.raises(sep.SeparationError) as err:
        gi.refit_output_layer(acts, engine="fast", progress=False)
    assert not fisher  # stopped in the matrix-free iterations
    # the error is the LP's own (the same check, classes and units as the LP alone)
    from glminterp.refit.model import OutputLayerGLM

    lp = OutputLayerGLM.from_activations(acts).separation_check(0)
    assert lp.separated and err.value.classes == lp.classes
    assert err.value.n_units == len(lp.units)


def test_warn_on_separated_data_still_returns_the_fits_estimates():
    x, y = _separated(n=600, p=12, k=4, seed=1)
    with pytest.warns(RefitWarning, match="SEPARATED DATA"):
        res = gi.refit_output_layer(make_acts(x, y), engine="fast", on_separation="warn",
                                    progress=False)
    assert res.separated and np.isfinite(res.params().to_numpy()).all()


def test_a_signal_on_overlapping_data_is_overruled_by_the_lp(monkeypatch):
    x, y = relu_features(600, 12, 4, seed=4, effect=1.0)
    acts = make_acts(x, y)
    clean = gi.refit_output_layer(acts, engine="fast", progress=False)
    real = eng.fit_multinomial

    def false_alarm(*a, detect_separation=False, **kw):
        if detect_separation:
            raise sep.SeparationError("diverges (test)", classes=(), n_units=0, units=(),
                                      checks=[])
        return real(*a, **kw)

    monkeypatch.setattr(eng, "fit_multinomial", false_alarm)
    res = gi.refit_output_layer(acts, engine="fast", progress=False)
    assert not res.separated and res.converged
    assert res.diagnostics["separation"][0]["method"] == "lp"  # the LP decided
    np.testing.assert_allclose(res.params().to_numpy(), clean.params().to_numpy(),
                               rtol=1e-8, atol=1e-10)


def test_an_ill_conditioned_optimum_stops_at_the_probe_with_the_same_fit(monkeypatch, caplog):
    import logging

    from glminterp.refit.estimators import ml_fast

    x, y = relu_features(600, 12, 4, seed=5, effect=1.0)  # 39 parameters
    rng = np.random.default_rng(6)
    x[:, -1] = x[:, 0] + x[:, 1] + 1e-6 * rng.standard_normal(len(x))  # condition ~1e13+
    acts = make_acts(x, y)
    with caplog.at_level(logging.INFO, logger="glminterp"), pytest.warns(RefitWarning):
        quick = gi.refit_output_layer(acts, engine="fast", progress=False)
    assert any("beyond the step criterion" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(ml_fast, "_stalled_at_optimum", lambda *a: False)
    with pytest.warns(RefitWarning):
        full = gi.refit_output_layer(acts, engine="fast", progress=False)  # to maxiter
    for res in (quick, full):
        assert res.converged and not res.separated
    assert quick.fit_stats["llf"] == pytest.approx(full.fit_stats["llf"], rel=1e-10)
    # the well-determined coefficients (not the collinear trio) and their SEs agree; the
    # SEs to the rounding of inverting this information (two runs to maxiter from starts
    # 1e-7 apart differ by 4e-5)
    a, b = quick.coefficients, full.coefficients
    keep = ~a["term"].isin(["const", quick.terms[1], quick.terms[2], quick.terms[-1]])
    np.testing.assert_allclose(a.loc[keep, "coef"], b.loc[keep, "coef"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(a.loc[keep, "se"], b.loc[keep, "se"], rtol=1e-4)
