"""Figures of a refit: forest plot, z heatmap, network weights versus GLM coefficients.

Each function takes a :class:`~glminterp.refit.RefitResult` or its tidy ``coefficients`` table,
draws on ``ax`` (a new figure if None) and returns the Figure; none computes a statistic.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure


def _unit_rows(coefficients) -> pd.DataFrame:
    """Unit rows of a RefitResult's (or its ``coefficients`` DataFrame's) tidy table."""
    table = getattr(coefficients, "coefficients", coefficients)
    if not isinstance(table, pd.DataFrame):
        raise TypeError(
            "coefficients must be a RefitResult or its `coefficients` DataFrame, got "
            f"{type(coefficients).__name__}."
        )
    return table[table["term"] != "const"]


def _axes(ax, figsize) -> tuple[Figure, plt.Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def forest_plot(coefficients, *, top: int = 20, alpha: float = 0.05, ax=None) -> Figure:
    """Forest plot of the ``top`` unit coefficients by |z|, with their confidence intervals.

    Parameters
    ----------
    coefficients : RefitResult or DataFrame
        The refit, or its tidy table (columns class, term, coef, z, ci_lower, ci_upper, p_holm).
    top : int
    alpha : float
        Level the intervals were computed at (axis label; Holm significance colouring).
    ax : matplotlib Axes, optional

    Returns
    -------
    Figure
    """
    if top < 1:
        raise ValueError(f"top must be positive, got {top}.")
    rows = _unit_rows(coefficients).dropna(subset=["z"])
    rows = rows.reindex(rows["z"].abs().sort_values(ascending=False).index).head(top)
    labels = [f"{c} | {t}" for c, t in zip(rows["class"], rows["term"])]
    fig, ax = _axes(ax, (6.5, 0.28 * max(len(rows), 4) + 1.2))
    y = np.arange(len(rows))
    signif = rows["p_holm"].to_numpy() < alpha if "p_holm" in rows else np.zeros(len(rows), bool)
    ax.hlines(y, rows["ci_lower"], rows["ci_upper"], color="0.4", lw=1.5)
    sns.scatterplot(
        x=rows["coef"].to_numpy(),
        y=y,
        hue=np.where(signif, "Holm-significant", "not significant"),
        hue_order=["Holm-significant", "not significant"],
        palette={"Holm-significant": "C3", "not significant": "C0"},
        ax=ax,
        zorder=3,
    )
    ax.axvline(0.0, color="0.2", lw=0.8, ls="--")
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"GLM coefficient with {100 * (1 - alpha):g}% CI")
    ax.set_title(f"Top {len(rows)} unit coefficients by |z| (class | unit)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def z_heatmap(coefficients, *, ax=None) -> Figure:
    """Heatmap of z by unit (rows) and class (columns), diverging around zero."""
    rows = _unit_rows(coefficients)
    classes = list(dict.fromkeys(rows["class"]))
    terms = list(dict.fromkeys(rows["term"]))
    z = rows.pivot(index="term", columns="class", values="z").reindex(index=terms, columns=classes)
    lim = float(np.nanmax(np.abs(z.to_numpy()))) if np.isfinite(z.to_numpy()).any() else 1.0
    fig, ax = _axes(ax, (0.5 * len(classes) + 2.5, 0.22 * len(terms) + 1.5))
    sns.heatmap(
        z, cmap="RdBu_r", center=0.0, vmin=-lim, vmax=lim, ax=ax,
        cbar_kws={"label": "z = coef / SE"}, yticklabels=True,
    )
    ax.tick_params(axis="y", labelsize=6)
    ax.set_xlabel("class")
    ax.set_ylabel("unit")
    ax.set_title("Wald z of each unit's coefficient")
    fig.tight_layout()
    return fig


def network_vs_glm(coefficients, *, title: str = "", ax=None) -> Figure:
    """Network weight (x) against the GLM coefficient (y) in the same parametrization.

    Error bars are the coefficients' confidence intervals; the dashed line is y = x.
    """
    rows = _unit_rows(coefficients).dropna(subset=["network_weight", "coef"])
    fig, ax = _axes(ax, (5, 4.5))
    err = np.vstack([rows["coef"] - rows["ci_lower"], rows["ci_upper"] - rows["coef"]])
    ax.errorbar(
        rows["network_weight"], rows["coef"], yerr=np.abs(err), fmt="o", ms=3, lw=0.6,
        color="C0", ecolor="0.6", alpha=0.8,
    )
    both = np.concatenate([rows["network_weight"].to_numpy(), rows["coef"].to_numpy()])
    if both.size:
        lo, hi = float(np.nanmin(both)), float(np.nanmax(both))
        ax.plot([lo, hi], [lo, hi], ls="--", color="0.2", lw=0.8, label="y = x")
        ax.legend(fontsize=8)
    ax.set_xlabel("network weight")
    ax.set_ylabel("GLM coefficient (refit split)")
    ax.set_title(title or "Network head versus GLM refit")
    fig.tight_layout()
    return fig
