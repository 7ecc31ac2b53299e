"""Figures for a :class:`~glminterp.glm.RefitResult`: forest plot, z heatmap, network vs GLM.

Every function reads the result's tables (``coefficients``) and draws; none computes statistics.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns


def _ax(ax, figsize):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _units_only(result):
    c = result.coefficients
    return c[c["term"] != "const"]


def forest_plot(result, *, top: int = 20, ax=None):
    """Top ``top`` unit coefficients by |z| with their Wald confidence intervals.

    Parameters
    ----------
    result : RefitResult
    top : int
        Number of (class, unit) coefficients to show.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    if top < 1:
        raise ValueError(f"top must be positive, got {top}.")
    c = _units_only(result)
    c = c.reindex(c["z"].abs().sort_values(ascending=False).index).head(top).iloc[::-1]
    ax = _ax(ax, (6, 0.3 * len(c) + 1.5))
    labels = [f"{k} | {t}" for k, t in zip(c["class"], c["term"])]
    y = np.arange(len(c))
    ax.errorbar(c["coef"], y, xerr=[c["coef"] - c["ci_lower"], c["ci_upper"] - c["coef"]],
                fmt="o", color="C0", capsize=2, label=f"GLM {1 - result.alpha:.0%} CI")
    if c["network_weight"].notna().any():
        ax.scatter(c["network_weight"], y, marker="x", color="C3", label="network", zorder=3)
    ax.axvline(0, color="0.5", lw=0.8)
    ax.set_yticks(y, labels)
    ax.set_xlabel(f"coefficient ({result.parametrization})")
    ax.set_title(f"Top {len(c)} unit coefficients by |z|")
    ax.legend(loc="best", fontsize="small")
    return ax


def z_heatmap(result, *, ax=None, vmax: float | None = None):
    """Wald z of every unit x class coefficient (diverging colours, centred at 0)."""
    c = _units_only(result)
    z = c.pivot(index="term", columns="class", values="z").loc[list(result.units), list(result.classes)]
    ax = _ax(ax, (0.5 * z.shape[1] + 2, 0.25 * z.shape[0] + 1.5))
    lim = vmax if vmax is not None else float(np.nanmax(np.abs(z.to_numpy()))) or 1.0
    sns.heatmap(z, cmap="RdBu_r", center=0, vmin=-lim, vmax=lim, ax=ax,
                cbar_kws={"label": "z"})
    ax.set_xlabel("class")
    ax.set_ylabel("unit")
    ax.set_title("Wald z by unit and class")
    return ax


def network_vs_glm(result, *, ax=None):
    """The network's weights against the refit MLE, one point per coefficient, with y = x."""
    c = _units_only(result)
    ax = _ax(ax, (5, 5))
    sns.scatterplot(data=c, x="network_weight", y="coef", hue="class", ax=ax, s=20)
    finite = c[["network_weight", "coef"]].to_numpy()
    finite = finite[np.isfinite(finite).all(axis=1)]
    if len(finite):
        lo, hi = finite.min(), finite.max()
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--", label="y = x")
    ax.set_xlabel(f"network weight ({result.parametrization})")
    ax.set_ylabel("GLM estimate (held-out MLE)")
    ax.set_title("Network head vs refit")
    return ax
