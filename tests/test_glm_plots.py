"""The refit figures draw what the result holds."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from test_glm_synth import make_acts, simulate_multinomial

import glminterp as gi
from glminterp.plots.refit import forest_plot, network_vs_glm, z_heatmap


def test_refit_plots():
    rng = np.random.default_rng(0)
    x, y = simulate_multinomial(rng, 300, np.array([[0, 0.5, -0.5], [0, 1.0, -1.0], [0, 0.3, 0.9]]))
    res = gi.refit_output_layer(make_acts(x, y, np.ones((3, 2)), np.zeros(3)), progress=False)
    fig = forest_plot(res, top=3)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 3
    c = res.coefficients
    best = c[c["term"] != "const"].sort_values("z", key=abs).iloc[-1]
    assert labels[0] == f"{best['class']} | {best['term']}"  # largest |z| on top
    # the same figure from the bare table, drawn on given axes
    _, given = plt.subplots()
    assert forest_plot(res.coefficients, top=3, ax=given).axes[0] is given
    heat = z_heatmap(res).axes[0]
    assert heat.collections[0].get_array().size == 4  # 2 units x 2 classes
    np.testing.assert_allclose(
        np.sort(heat.collections[0].get_array().ravel()), np.sort(c.loc[c["term"] != "const", "z"])
    )
    scatter = network_vs_glm(res).axes[0]
    xy = np.vstack([line.get_xydata() for line in scatter.lines if len(line.get_xydata()) == 4])
    np.testing.assert_allclose(np.sort(xy[:, 1]), np.sort(c.loc[c["term"] != "const", "coef"]))
    with pytest.raises(TypeError, match="RefitResult"):
        forest_plot([1, 2])
    plt.close("all")
