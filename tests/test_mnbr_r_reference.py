"""Multinomial mean bias reduction equals R brglm2::brmultinom(type = "AS_mean") to 1e-6.

Fixtures: tests/fixtures/r/brmultinom_reference.R on the inputs of make_brmultinom_inputs.py
(real MNIST activations, overlapping and separated; constructed complete and quasi-complete
separation). R is never called here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from glminterp.refit.mnbr import fit_multinomial_br

FIX = Path(__file__).parent / "fixtures" / "r"
NAMES = ["real", "realsep", "complete", "quasi"]


def _load(name):
    d = pd.read_csv(FIX / f"brmultinom_{name}_input.csv")
    ref = pd.read_csv(FIX / f"brmultinom_{name}_brglm2.csv", skipinitialspace=True)
    y = d.pop("y").to_numpy()
    return d, y, ref


def _matrix(ref: pd.DataFrame, col: str, terms: list[str]) -> np.ndarray:
    """Long (class, term) R output -> (p + 1, K - 1) matrix in our layout."""
    wide = ref.pivot(index="term", columns="class", values=col)
    return wide.loc[terms].to_numpy()


@pytest.mark.parametrize("name", NAMES)
def test_coefficients_and_ses_match_brmultinom(name):
    x, y, ref = _load(name)
    res = fit_multinomial_br(x.to_numpy(), y, int(y.max()) + 1, tol=1e-11)
    assert res.converged
    terms = ["const", *x.columns]
    assert sorted(ref["class"].unique()) == list(range(1, int(y.max()) + 1))
    np.testing.assert_allclose(res.params, _matrix(ref, "coef", terms), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(res.bse, _matrix(ref, "se", terms), rtol=1e-6)


@pytest.mark.parametrize("name", ["realsep", "complete", "quasi"])
def test_separated_inputs_are_finite_and_moderate(name):
    """Where the MLE is infinite the bias-reduced estimate is finite, with finite SEs."""
    x, y, _ = _load(name)
    res = fit_multinomial_br(x.to_numpy(), y, int(y.max()) + 1)
    assert res.converged
    assert np.all(np.isfinite(res.params)) and np.all(np.isfinite(res.bse))
    assert np.max(np.abs(res.params)) < 50
