"""The refit figures draw what the result holds."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from test_glm_synth import make_acts, simulate_multinomial

import glminterp as gi
from glminterp.plots.refit import forest_plot, network_vs_glm, z_heatmap


def test_refit_plots():
    rng = np.random.default_rng(0)
    x, y = simulate_multinomial(rng, 300, np.array([[0, 0.5, -0.5], [0, 1.0, -1.0], [0, 0.3, 0.9]]))
    res = gi.refit_output_layer(make_acts(x, y, np.ones((3, 2)), np.zeros(3)), progress=False)
    ax = forest_plot(res, top=3)
    assert len(ax.get_yticklabels()) == 3
    c = res.coefficients
    best = c[c["term"] != "const"].sort_values("z", key=abs).iloc[-1]
    assert ax.get_yticklabels()[-1].get_text() == f"{best['class']} | {best['term']}"
    ax = z_heatmap(res)
    assert ax.collections[0].get_array().size == 4
    ax = network_vs_glm(res)
    assert ax.collections[0].get_offsets().shape == (4, 2)
    plt.close("all")
