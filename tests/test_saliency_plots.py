"""Each saliency figure function draws from a computed result and returns a Figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from glminterp.plots import saliency as ps
from glminterp.saliency import (
    deconvnet,
    hidden_unit_fields,
    input_importance,
    occlusion,
    siddhartha,
    top_activations,
)


@pytest.fixture(scope="module")
def few(digits):
    return digits.subset(np.arange(12))


def _coefs(prefix: str, n: int, cls: str = "3") -> pd.DataFrame:
    z = np.linspace(-3, 3, n)
    return pd.DataFrame(
        {"class": cls, "term": ["const"] + [f"{prefix}{j:02d}" for j in range(n)],
         "coef": np.r_[0, z], "se": 1.0, "z": np.r_[0, z], "p": 0.5,
         "p_holm": np.r_[np.nan, np.where(np.abs(z) > 2, 0.01, 0.9)], "p_bh": 0.5}
    )


def test_cnn_figures(gap_cnn_digits, few):
    occ = occlusion(gap_cnn_digits, few, window=3, stride=2, layer="relu3")
    assert isinstance(ps.plot_occlusion(occ, few.images, 1), Figure)
    proj = deconvnet(gap_cnn_digits, few.images[:4], layer="relu3", channel=0)
    assert isinstance(ps.plot_deconvnet(proj, few.images[:4]), Figure)
    top = top_activations(gap_cnn_digits, few, layer="relu3", k=3, refit=_coefs("relu3:c", 8), cls=3)
    assert isinstance(ps.plot_top_patches(top), Figure)
    sid = siddhartha(gap_cnn_digits, few, 3, min_size=3, refit=_coefs("relu3:c", 8), n_boot=9)
    assert isinstance(ps.plot_siddhartha(sid, few.images, 0), Figure)
    assert isinstance(ps.plot_ald_fit(sid), Figure)


def test_mlp_figures(mlp_digits, few):
    fields = hidden_unit_fields(mlp_digits, _coefs("act1:0", 12), "3", image=few.images[0], n=2)
    assert isinstance(ps.plot_hidden_unit_fields(fields), Figure)
    imp = input_importance(mlp_digits, cls=3, shape=(8, 8))
    assert isinstance(ps.plot_input_importance(imp, (8, 8)), Figure)
    torch.manual_seed(0)
