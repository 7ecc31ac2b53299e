"""The fit's dual bound on the separation LP, and remedies that decide overlap by the MLE first."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_glm_synth import make_acts, simulate_multinomial

import glminterp as gi
from glminterp import engine as eng
from glminterp.refit import separation as sep

COEF = np.array([[0.0, 0.3, -0.3], [0.0, 1.0, -1.0], [0.0, -0.5, 0.8], [0.0, 0.2, 0.1]])


def _probs(x, beta):
    probs, lse = eng.multinomial_probs(x[:, 1:], beta)
    return np.column_stack([np.exp(-lse), probs])


def _nearly_collinear(rng, n=400, noise=1e-6):
    """Overlapping data whose MLE exists but whose information is ill-conditioned (~1e13)."""
    x, y = simulate_multinomial(rng, n, COEF)
    return np.column_stack([x, x[:, 0] + x[:, 1] + noise * rng.standard_normal(n)]), y


def test_the_bound_is_the_weighted_margins_identity(rng):
    # sum_nk lam_nk m_nk(D) = <A' lam, D> for any D: the bound's one step, checked numerically
    x, y = simulate_multinomial(rng, 200, COEF)
    x1 = np.column_stack([np.ones(200), x])
    xs, _ = sep._scale(x1)
    lam = rng.random((200, 3))
    d = rng.uniform(-1, 1, (xs.shape[1], 2))
    marg = sep._margins(xs, y, d)
    lam[np.arange(200), y] = 0.0
    w = -lam
    w[np.arange(200), y] = lam.sum(axis=1)
    np.testing.assert_allclose((lam * marg).sum(), (xs.T @ w[:, 1:] * d).sum(), rtol=1e-12)


def test_the_bound_is_above_the_lp_optimum_on_separated_data(rng):
    x, y = simulate_multinomial(rng, 300, COEF[:3])
    y = np.where(x[:, 1] > 1.0, 2, np.minimum(y, 1))  # class 2 <=> unit 1 > 1: separated
    x1 = np.column_stack([np.ones(300), x])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        er = eng.fit_multinomial(x, y, max_iter=4)
    lp = sep.check_multinomial(x1, y, terms=("const", "a", "b"), classes=("0", "1", "2"))
    bound = sep.lp_bound_multinomial(x1, y, _probs(x1, np.asarray(er.params)))
    assert lp.separated and bound >= lp.objective
    assert not sep.certifies_overlap(bound, 300)


def test_binomial_bound_at_the_mle_certifies_overlap(rng):
    x = rng.standard_normal((300, 3))
    yb = (x @ [1.0, -0.5, 0.2] + rng.logistic(size=300) > 0).astype(float)
    er = eng.fit_binomial(x, yb)
    x1 = np.column_stack([np.ones(300), x])
    mu = 1.0 / (1.0 + np.exp(-(x1 @ np.asarray(er.params))))
    bound = sep.lp_bound_binomial(x1, yb, mu)
    assert sep.certifies_overlap(bound, 300) and bound < 1e-9
    assert not sep.check_binomial(x1, yb, terms=("const", "a", "b", "c")).separated


def test_an_ill_conditioned_fit_is_decided_by_its_dual_bound_not_the_lp(rng, monkeypatch):
    x, y = _nearly_collinear(rng)
    assert not sep.check_multinomial(np.column_stack([np.ones(len(y)), x]), y,
                                     terms=tuple("const abcd".split()),
                                     classes=("0", "1", "2")).separated

    def no_lp(*a, **k):
        raise AssertionError("the LP ran")

    monkeypatch.setattr(sep, "check_multinomial", no_lp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = gi.refit_output_layer(make_acts(x, y), progress=False, engine="fast")
        ridge = gi.refit_output_layer(make_acts(x, y), remedy="ridge", progress=False)
    (check,) = res.diagnostics["separation"]
    assert check["method"] == "dual" and not check["separated"]
    assert 0 < check["lp_bound"] <= 0.1 * sep._OBJ_TOL * len(y)
    assert "dual bound" in res.diagnostics["convergence_criterion"]
    assert "ill-conditioned" not in res.diagnostics["convergence_criterion"]
    assert ridge.diagnostics["separation"][0]["method"] == "dual"


@pytest.mark.parametrize("remedy", ["ridge", "pca", "firth"])
def test_remedies_on_overlapping_data_decide_by_the_mle_without_the_lp(rng, monkeypatch, remedy):
    x, y = simulate_multinomial(rng, 300, COEF)
    monkeypatch.setattr(sep, "check_multinomial", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("the LP ran")))
    monkeypatch.setattr(sep, "check_binomial", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("the LP ran")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = gi.refit_output_layer(make_acts(x, y), remedy=remedy, progress=False,
                                    family="ovr" if remedy == "firth" else "auto")
    checks = res.diagnostics["separation"]
    assert checks and all(c["method"] == "fit" and not c["separated"] for c in checks)
    assert len(checks) == (3 if remedy == "firth" else 1)


@pytest.mark.parametrize("family", ["auto", "ovr"])
def test_remedies_on_separated_data_still_find_it(rng, family):
    x, y = simulate_multinomial(rng, 300, COEF[:3])
    y = np.where(x[:, 1] > 1.2, 2, np.minimum(y, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = gi.refit_output_layer(make_acts(x, y), remedy="ridge", family=family,
                                    progress=False)
    assert res.separated
    sepd = [c for c in res.diagnostics["separation"] if c["separated"]]
    assert sepd and all(c["method"] == "lp" and "h:001" in c["units"] for c in sepd)


def test_every_lp_phase_is_reported_as_it_runs(rng):
    x, y = simulate_multinomial(rng, 300, COEF[:3])
    x1 = np.column_stack([np.ones(300), x])
    lines: list[str] = []
    c = sep.check_multinomial(x1, y, terms=("const", "a", "b", "c"), classes=("0", "1", "2"),
                              progress=lines.append)
    assert not c.separated
    assert sum("one-vs-rest phase: class" in m for m in lines) == 3
    assert any(m.startswith("separation LP, full phase: LP 1 on") for m in lines)
    assert lines[-1].startswith("separation LP, full phase:") and " s" in lines[-1]
    lines.clear()
    sep.check_binomial(x1, (y == 1).astype(float), terms=("const", "a", "b", "c"),
                       progress=lines.append)
    assert len(lines) == 1 and "LPs on at most" in lines[0]


def test_an_inconclusive_bound_without_a_covariance_leaves_the_lp_to_decide(rng):
    from glminterp.refit.model import OutputLayerGLM

    x, y = simulate_multinomial(rng, 300, COEF)
    model = OutputLayerGLM.from_activations(make_acts(x, y))
    far = np.full((len(model.terms), 2), 5.0)  # far from the optimum: a large score
    assert not model.certify_overlap(0, far, cov=None)
    assert model.checked(0) is None  # nothing recorded: the LP decides
