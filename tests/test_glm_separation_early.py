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
    x, y = _separated(seed=1)
    with pytest.warns(RefitWarning, match="SEPARATED DATA"):
        res = gi.refit_output_layer(make_acts(x, y), engine="fast", on_separation="warn",
                                    progress=False)
    assert res.separated and np.isfinite(res.params().to_numpy()).all()


def test_a_signal_on_overlapping_data_is_overruled_by_the_lp(monkeypatch):
    x, y = relu_features(1500, 60, 10, seed=4, effect=1.0)  # 549 parameters, Newton-CG
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
