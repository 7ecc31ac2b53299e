"""Separation is detected (Konis LP) and raises; overlapping data never do."""

from __future__ import annotations

import numpy as np
import pytest
from test_glm_synth import make_acts, simulate_multinomial

import glminterp as gi
from glminterp.refit.separation import SeparationError, check_binomial, check_multinomial


def test_complete_binomial_separation_raises(rng):
    x = rng.standard_normal((200, 3))
    y = (x[:, 1] > 0.2).astype(int)  # unit h:001 separates the two classes
    acts = make_acts(x, y, link="sigmoid", n_outputs=1)
    with pytest.raises(SeparationError) as e:
        gi.refit_output_layer(acts, progress=False)
    assert e.value.units[0] == "h:001" and "separated" in str(e.value)
    assert isinstance(e.value, ValueError)


def test_quasi_complete_multinomial_separation_names_classes(rng):
    x, y = simulate_multinomial(rng, 400, np.array([[0, 0.2, -0.2], [0, 1.0, -1.0], [0, 0.5, 0.5]]))
    # Class 2 is exactly the rows with h:002 > 1: separated from classes 0 and 1.
    y = np.where(x[:, 1] > 1.0, 2, np.minimum(y, 1))
    acts = make_acts(x, y)
    with pytest.raises(SeparationError) as e:
        gi.refit_output_layer(acts, progress=False)
    assert "2" in e.value.classes
    assert "h:001" in e.value.units
    check = check_multinomial(np.column_stack([np.ones(400), x]), y, terms=["const", "a", "b"],
                              classes=["0", "1", "2"])
    assert check.separated and check.n_rows_separated >= (y == 2).sum()


def test_ovr_separation_names_the_class(rng):
    x, y = simulate_multinomial(rng, 300, np.array([[0, 0.0, 0.0], [0, 1.0, -1.0], [0, 0.5, 0.5]]))
    y = np.where(x[:, 0] < -1.0, 0, np.where(y == 0, 1, y))  # class 0 <=> h:000 < -1
    with pytest.raises(SeparationError) as e:
        gi.refit_output_layer(make_acts(x, y), family="ovr", progress=False)
    assert "0" in e.value.classes and "binomial: 0" in str(e.value)


@pytest.mark.parametrize("seed", range(6))
def test_overlapping_data_never_raise(seed):
    rng = np.random.default_rng(seed)
    coef = np.array([[0.0, 0.3, -0.3, 0.1], [0.0, 1.0, -1.0, 0.5], [0.0, -0.5, 0.8, 0.0]])
    x, y = simulate_multinomial(rng, 300, coef)
    res = gi.refit_output_layer(make_acts(x, y), progress=False)
    assert np.isfinite(res.coefficients[["coef", "se"]].to_numpy()).all()
    assert res.diagnostics["separation"][0]["separated"] is False
    res = gi.refit_output_layer(make_acts(x, y), family="ovr", progress=False)
    assert not any(c["separated"] for c in res.diagnostics["separation"])


def test_binomial_check_direction_separates(rng):
    x = np.column_stack([np.ones(100), rng.standard_normal((100, 2))])
    y = (x[:, 1] + 0.5 * x[:, 2] > 0).astype(float)
    c = check_binomial(x, y, terms=["const", "a", "b"])
    assert c.separated
    margin = (2 * y - 1) * (x @ c.direction)
    assert (margin >= -1e-9).all() and (margin > 1e-6).sum() > 50


def test_real_training_rows_of_the_fixture_network_are_separated(mlp_digits_acts):
    """statsmodels returns NaN with converged=True here; the refit raises instead."""
    with pytest.raises(SeparationError) as e:
        gi.refit_output_layer(mlp_digits_acts, progress=False)
    assert e.value.classes and e.value.n_units > 0


def test_on_separation_warn_fits_anyway(rng):
    x = rng.standard_normal((100, 2))
    y = (x[:, 0] > 0).astype(int)
    with pytest.warns(gi.glm.RefitWarning, match="SEPARATED"):
        res = gi.refit_output_layer(make_acts(x, y, link="sigmoid", n_outputs=1),
                                    on_separation="warn", progress=False)
    assert any("SEPARATED" in w for w in res.warnings)


def test_firth_on_multiclass_multinomial_is_refused(rng):
    acts = make_acts(rng.standard_normal((60, 2)), np.arange(60) % 3)
    with pytest.raises(ValueError, match="family='ovr'.*remedy='ridge'"):
        gi.refit_output_layer(acts, remedy="firth", progress=False)
