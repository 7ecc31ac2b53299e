"""The separation LPs solved by row / constraint generation equal the whole LP (Konis 2007)."""

from __future__ import annotations

import numpy as np
import pytest

from glminterp.refit import separation as sep


def _whole_multinomial_objective(x, y, k):
    """The LP on every one of the N (K - 1) constraints (the former formulation)."""
    xs, _ = sep._scale(x)
    n, q = xs.shape
    obs = np.repeat(np.arange(n), k)
    other = np.tile(np.arange(k), n)
    keep = other != y[obs]
    a = sep._constraints(xs, y, obs[keep], other[keep], k)
    res = sep._solve(-np.asarray(a.sum(axis=0)).ravel(), -a, q * (k - 1))
    return -res.fun


def _sectors(rng, n):
    """Three 120-degree sectors around the origin: an argmax of linear scores separates them
    completely, but no sector is linearly separable from the other two (no one-vs-rest)."""
    ang = rng.uniform(0, 2 * np.pi, n)
    rad = np.sqrt(rng.uniform(0.01, 1, n))
    x = np.column_stack([np.ones(n), rad * np.cos(ang), rad * np.sin(ang)])
    return x, (ang // (2 * np.pi / 3)).astype(int)


def test_separation_without_one_vs_rest_found_by_the_full_phase(rng):
    x, y = _sectors(rng, 600)
    xs, _ = sep._scale(x)
    assert sep._one_vs_rest(xs, y, 3) is None  # the full phase is what decides
    c = sep.check_multinomial(x, y, terms=["const", "a", "b"], classes=["0", "1", "2"])
    assert c.separated and set(c.classes) == {"0", "1", "2"}
    assert c.objective == pytest.approx(_whole_multinomial_objective(x, y, 3), rel=1e-6)
    marg = sep._margins(x, y, c.direction)
    assert marg.min() > -1e-9  # a separating direction in the original units


def test_overlap_after_one_vs_rest_equals_the_whole_lp(rng):
    x, y = _sectors(rng, 600)
    flip = rng.random(600) < 0.1
    y = np.where(flip, (y + 1) % 3, y)  # 10% of rows in a neighbour's sector: overlap
    c = sep.check_multinomial(x, y, terms=["const", "a", "b"], classes=["0", "1", "2"])
    assert not c.separated
    assert _whole_multinomial_objective(x, y, 3) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("separated", [True, False])
def test_binomial_row_generation_equals_the_whole_lp(rng, separated):
    n = 3000  # above the size solved whole
    x = np.column_stack([np.ones(n), rng.standard_normal((n, 6))])
    eta = x[:, 1] - 0.5 * x[:, 2] + (0 if separated else rng.logistic(size=n))
    y = (eta > 0).astype(float)
    c = sep.check_binomial(x, y, terms=["const", *"abcdef"])
    xs, _ = sep._scale(x)
    sx = (2 * y - 1)[:, None] * xs
    whole = -sep._solve(-sx.sum(axis=0), -sx, x.shape[1]).fun
    assert c.separated is separated
    assert c.objective == pytest.approx(whole if separated else 0.0, rel=1e-6, abs=1e-6)
    if separated:
        assert ((2 * y - 1) * (x @ c.direction)).min() > -1e-9


def test_fast_engine_stops_a_separated_fit_early(rng, caplog):
    import logging

    from test_glm_synth import make_acts

    import glminterp as gi

    x = rng.standard_normal((400, 5))
    y = (x @ rng.standard_normal((5, 3))).argmax(axis=1)  # completely separated
    with caplog.at_level(logging.INFO, logger="glminterp"):
        with pytest.raises(sep.SeparationError):
            gi.refit_output_layer(make_acts(x, y), engine="fast", progress=False)
    assert any("stopped after" in r.getMessage() for r in caplog.records)
