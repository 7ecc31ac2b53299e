"""Pre-fit checks: dead units, collinearity, EPP, training overlap, option validation."""

from __future__ import annotations

import numpy as np
import pytest
from test_glm_synth import make_acts, simulate_multinomial

import glminterp as gi
from glminterp.refit.diagnostics import CollinearityError, events_per_parameter, rank_report


@pytest.fixture
def base(rng):
    coef = np.array([[0.0, 0.3, -0.3], [0.0, 1.0, -1.0], [0.0, -0.5, 0.8]])
    return simulate_multinomial(rng, 400, coef)


def test_dead_unit_dropped_and_network_folded(base):
    x, y = base
    x3 = np.column_stack([x, np.zeros(len(x)), np.full(len(x), 0.5)])  # dead, constant 0.5
    w = np.arange(12, dtype=float).reshape(3, 4) / 10
    b = np.array([0.1, 0.2, 0.3])
    res = gi.refit_output_layer(make_acts(x3, y, w, b), progress=False)
    assert res.terms == ("const", "h:000", "h:001")
    d = res.dropped_units.set_index("unit")["reason"]
    assert d["h:002"] == "dead (all zero)" and d["h:003"] == "constant"
    # Constant unit's weight joins the intercept: b_k + 0.5 * w_k3, then reference contrasts.
    full_intercept = b + 0.5 * w[:, 3]
    np.testing.assert_allclose(
        res.network_params().loc["const"].to_numpy(), full_intercept[1:] - full_intercept[0]
    )
    np.testing.assert_allclose(res.params().to_numpy(), gi.refit_output_layer(
        make_acts(x, y), progress=False).params().to_numpy(), rtol=1e-9)


def test_collinear_units_named_or_dropped(base):
    x, y = base
    x3 = np.column_stack([x, 2 * x[:, 0] - x[:, 1] + 1.0])
    acts = make_acts(x3, y, np.ones((3, 3)), np.zeros(3))
    with pytest.raises(CollinearityError) as e:
        gi.refit_output_layer(acts, progress=False)
    assert set(e.value.dependencies) <= {"h:000", "h:001", "h:002"}
    assert len(e.value.dependencies) == 1 and "rank 3 < 4" in str(e.value)
    with pytest.warns(gi.glm.RefitWarning, match="collinear"):
        res = gi.refit_output_layer(acts, on_collinear="drop", progress=False)
    assert len(res.dropped_units) == 1 and "collinear" in res.dropped_units["reason"][0]
    # Folding keeps the network's linear predictor: rows of X @ network equal the full one's.
    full = np.column_stack([np.ones(len(x)), x3]) @ np.vstack([np.zeros(3), np.ones((3, 3)).T])
    kept = np.column_stack([np.ones(len(x)), acts.features[list(res.units)].to_numpy()])
    net = res.network_params("sum_to_zero").to_numpy()
    np.testing.assert_allclose(kept @ net, full - full.mean(axis=1, keepdims=True), atol=1e-9)


def test_rank_report_exact():
    x = np.random.default_rng(1).standard_normal((50, 3))
    import pandas as pd

    df = pd.DataFrame(np.column_stack([x, x[:, 0] + x[:, 2] - 3]), columns=list("abcd"))
    r = rank_report(df)
    assert r.rank == 4 and r.dependent and not r.full_rank
    (dep, combo), = r.dependencies.items()
    assert combo.get("const") == pytest.approx(-3 if dep == "d" else combo["const"], abs=1e-8)


def test_events_per_parameter():
    assert events_per_parameter(np.array([0] * 30 + [1] * 50 + [2] * 20), 4) == 5.0
    assert events_per_parameter(np.eye(3)[[0, 0, 1, 2, 2, 2]], 1) == 1.0


def test_low_epp_and_training_overlap_warn(rng):
    x, y = simulate_multinomial(rng, 120, np.array([[0, 0.2, 0.1], [0, 0.5, -0.5]]))
    split = np.where(np.arange(120) < 10, "train", "refit")
    acts = make_acts(x, y, split=split)
    with pytest.warns(gi.glm.RefitWarning) as rec:
        res = gi.refit_output_layer(acts, split=None, progress=False)
    msgs = [str(w.message) for w in rec]
    assert any("TRAINING ROWS: 10 of 120" in m for m in msgs)
    assert res.diagnostics["train_overlap"] == 10
    assert any("TRAINING ROWS" in w for w in res.warnings)
    # Held-out rows only: no overlap; explicit train_ids are also honoured.
    r2 = gi.refit_output_layer(acts, progress=False)
    assert r2.diagnostics["train_overlap"] == 0
    with pytest.warns(gi.glm.RefitWarning, match="TRAINING ROWS: 2 of 110"):
        gi.refit_output_layer(acts, train_ids=["s00050", "s00051"], progress=False)
    assert res.diagnostics["events_per_parameter"] == pytest.approx(np.bincount(y).min() / 1)


def test_epp_warning(rng):
    x, y = simulate_multinomial(rng, 150, np.zeros((9, 3)))
    with pytest.warns(gi.glm.RefitWarning, match="events per parameter"):
        gi.refit_output_layer(make_acts(x, y), progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cov_type": "HC1"}, "silently returns HC0"),
        ({"cov_type": "HC3"}, "silently returns HC0"),
        ({"cov_type": "cluster"}, "groups"),
        ({"family": "poisson"}, "family"),
        ({"parametrization": "network"}, "parametrization"),
        ({"alpha": 1.5}, "alpha"),
        ({"on_collinear": "ignore"}, "on_collinear"),
    ],
)
def test_bad_options(base, kwargs, match):
    x, y = base
    with pytest.raises(ValueError, match=match):
        gi.refit_output_layer(make_acts(x, y), progress=False, **kwargs)


def test_missing_class_in_refit_rows(base):
    x, y = base
    acts = make_acts(x, np.minimum(y, 1), np.zeros((3, 2)), np.zeros(3), n_outputs=3)
    with pytest.raises(ValueError, match="no rows"):
        gi.refit_output_layer(acts, progress=False)


def test_reference_baseline_has_no_class_cov(base):
    res = gi.refit_output_layer(make_acts(*base), progress=False)
    with pytest.raises(KeyError, match="baseline"):
        res.class_cov("0")
    assert res.class_cov("0", "sum_to_zero").shape == (3, 3)
