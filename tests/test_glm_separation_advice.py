"""Separation is decided by the fit where it can be, and the error says what to do from here."""

from __future__ import annotations

import numpy as np
import pytest
from test_glm_synth import make_acts, simulate_multinomial

import glminterp as gi


def _separated(rng, split="refit"):
    coef = np.array([[0.0, 0.3, -0.3], [0.0, 1.0, -1.0], [0.0, -0.5, 0.8]])
    x, y = simulate_multinomial(rng, 300, coef)
    y = np.where(x[:, 1] > 1.2, 2, np.minimum(y, 1))  # class 2 <=> h:001 > 1.2
    return make_acts(x, y, split=split)


def test_error_on_the_refit_split_does_not_advise_the_refit_split(rng):
    with pytest.raises(gi.SeparationError) as e:
        gi.refit_output_layer(_separated(rng), progress=False)
    msg = str(e.value)
    assert "split='refit'" not in msg and "h:001" in msg
    for remedy in ("family='ovr'", "remedy='firth'", "remedy='ridge'", "remedy='pca'"):
        assert remedy in msg
    assert "shrinks" in msg and "principal components" in msg  # what each remedy changes


def test_error_on_other_rows_advises_held_out_rows(rng):
    acts = _separated(rng, split="test")
    with pytest.raises(gi.SeparationError, match="split='refit'"):
        gi.refit_output_layer(acts, split="test", progress=False)


def test_a_clean_optimum_proves_overlap_without_the_lp(rng):
    coef = np.array([[0.0, 0.3, -0.3], [0.0, 1.0, -1.0], [0.0, -0.5, 0.8]])
    x, y = simulate_multinomial(rng, 300, coef)
    res = gi.refit_output_layer(make_acts(x, y), progress=False)
    (check,) = res.diagnostics["separation"]
    assert check["method"] == "fit" and check["separated"] is False
    # a remedy says whether the data were separated: the clean MLE says so here, no LP
    ridge = gi.refit_output_layer(make_acts(x, y), remedy="ridge", progress=False)
    assert ridge.diagnostics["separation"][0]["method"] == "fit" and not ridge.separated
