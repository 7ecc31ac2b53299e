"""Figures of the classic visualizations (one function per method of :mod:`glminterp.saliency`).

Each function takes a computed result and returns a matplotlib Figure; none computes a
statistic beyond what is needed to draw (reshaping, sorting for display).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def _img(x: np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W) -> something imshow takes (grey for one channel)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 3:
        return x[0] if x.shape[0] == 1 else np.moveaxis(x, 0, -1)
    return x


def _sym(ax, x: np.ndarray, title: str = ""):
    """Diverging image centred at zero."""
    lim = np.nanmax(np.abs(x)) if np.isfinite(x).any() else 1.0
    im = ax.imshow(x, cmap="RdBu_r", vmin=-lim or -1, vmax=lim or 1)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def plot_occlusion(result, images: np.ndarray, index: int = 0) -> Figure:
    """The paper's panels for one image: input, P(target), most probable label, map activation."""
    n_panels = 4 if result.activation is not None else 3
    fig = Figure(figsize=(3 * n_panels, 3))
    axes = fig.subplots(1, n_panels)
    img = np.asarray(images[index].detach().cpu() if hasattr(images[index], "detach") else images[index])
    axes[0].imshow(_img(img), cmap="gray")
    r, c = result.rows[0], result.cols[0]
    axes[0].add_patch(Rectangle((c - 0.5, r - 0.5), result.window[1], result.window[0],
                                fill=False, color="red", lw=1))
    axes[0].set_title(f"input (target {result.target[index]}; window shown at its first place)", fontsize=7)
    im = axes[1].imshow(result.probability[index], vmin=0, vmax=1, cmap="viridis")
    axes[1].set_title(f"P(class {result.target[index]}) (unoccluded {result.base_probability[index]:.3f})", fontsize=8)
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    im = axes[2].imshow(result.label[index], cmap="tab10", vmin=-0.5, vmax=9.5)
    axes[2].set_title("most probable label", fontsize=8)
    fig.colorbar(im, ax=axes[2], fraction=0.046, ticks=range(10))
    if result.activation is not None:
        im = axes[3].imshow(result.activation[index], cmap="magma")
        axes[3].set_title(f"total activation {result.layer}[{result.channel[index]}]", fontsize=8)
        fig.colorbar(im, ax=axes[3], fraction=0.046)
    for ax in axes[1:]:
        ax.set_xlabel("window column")
        ax.set_ylabel("window row")
    fig.tight_layout()
    return fig


def plot_deconvnet(projections: np.ndarray, images: np.ndarray | None = None, *,
                   titles: Sequence[str] | None = None, max_images: int = 8) -> Figure:
    """Deconvnet projections (diverging colours), optionally above their input images."""
    proj = np.asarray(projections)[:max_images]
    rows = 2 if images is not None else 1
    fig = Figure(figsize=(1.8 * len(proj), 1.9 * rows))
    axes = np.atleast_2d(fig.subplots(rows, len(proj), squeeze=False))
    for j, p in enumerate(proj):
        if images is not None:
            im = np.asarray(images[j].detach().cpu() if hasattr(images[j], "detach") else images[j])
            axes[0, j].imshow(_img(im), cmap="gray")
            axes[0, j].set_axis_off()
        _sym(axes[-1, j], _img(p), "" if titles is None else titles[j])
    fig.tight_layout()
    return fig


def plot_top_patches(top, channels: Sequence[int] | None = None, *, max_channels: int = 6) -> Figure:
    """Per channel: the top-k input patches and (if computed) their deconvnet projections."""
    chans = list(top.channels if channels is None else channels)[:max_channels]
    k = top.patches.shape[1]
    per = 2 if top.projections is not None else 1
    fig = Figure(figsize=(1.2 * k, 1.3 * per * len(chans) + 0.3))
    axes = fig.subplots(per * len(chans), k, squeeze=False)
    for r, ch in enumerate(chans):
        ci = list(top.channels).index(ch)
        rows = top.table[top.table["channel"] == ch]
        label = f"ch {ch}"
        if "z" in rows:
            star = "*" if bool(rows["significant"].iloc[0]) else ""
            label += f"\nz={rows['z'].iloc[0]:.2f}{star}"
        for j in range(k):
            ax = axes[per * r, j]
            ax.imshow(_img(top.patches[ci, j]), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{rows['activation'].iloc[j]:.2f}", fontsize=6)
            if j == 0:
                ax.set_ylabel(label, fontsize=7)
            if top.projections is not None:
                _sym(axes[per * r + 1, j], _img(top.projections[ci, j]))
    fig.suptitle(f"top-{k} inputs per channel of {top.layer} (patch = receptive field)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_hidden_unit_fields(fields) -> Figure:
    """Input weights of the units ranked by refit z (and their product with the image)."""
    units = fields.units
    rows = 2 if fields.products is not None else 1
    fig = Figure(figsize=(1.6 * len(units), 1.9 * rows + 0.3))
    axes = fig.subplots(rows, len(units), squeeze=False)
    for j, row in units.reset_index(drop=True).iterrows():
        star = "*" if row["significant"] else ""
        _sym(axes[0, j], fields.weights[j], f"{row['direction'][:3]} #{row['rank']} u{row['unit']}\nz={row['z']:.2f}{star}")
        if fields.products is not None:
            _sym(axes[1, j], fields.products[j], "x image")
    fig.suptitle(f"hidden units ranked by refit z for class {fields.cls} (* significant after correction)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_zero_one(result) -> Figure:
    """The single unit's weight image next to its one-regressor refit."""
    fig = Figure(figsize=(7, 3))
    ax_img, ax_txt = fig.subplots(1, 2)
    im = _sym(ax_img, result.weight_image, "input weights of the hidden unit")
    fig.colorbar(im, ax=ax_img, fraction=0.046)
    unit = result.coefficients[result.coefficients["term"] != "const"].iloc[0]
    lines = [
        f"coef = {unit['coef']:.4g}  (SE {unit['se']:.3g})",
        f"z = {unit['z']:.3g},  p = {unit['p']:.3g}",
        f"95% CI [{unit.get('ci_lower', np.nan):.4g}, {unit.get('ci_upper', np.nan):.4g}]",
        f"network weight = {unit.get('network_weight', np.nan):.4g}",
        f"deviance {result.deviance:.4g} (null {result.null_deviance:.4g})",
        f"network's deviance {result.network_deviance:.4g}",
        f"LR = {result.lr_statistic:.4g}, p = {result.lr_pvalue:.3g}, n = {result.n_obs}",
    ]
    ax_txt.text(0.0, 0.95, "\n".join(lines), va="top", family="monospace", fontsize=8)
    ax_txt.set_axis_off()
    fig.tight_layout()
    return fig


def plot_input_importance(table: pd.DataFrame, shape: Sequence[int]) -> Figure:
    """Olden, Garson and (if present) the GLM-based pixel z as images, side by side."""
    cols = [c for c in ("olden", "garson", "glm_effect", "glm_z") if c in table]
    fig = Figure(figsize=(3 * len(cols), 3))
    axes = fig.subplots(1, len(cols), squeeze=False)[0]
    for ax, col in zip(axes, cols):
        img = table[col].to_numpy(dtype=np.float64).reshape(tuple(shape))
        if col == "garson":
            im = ax.imshow(img, cmap="viridis")
            ax.set_title("Garson (relative, >= 0)", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            im = _sym(ax, img, {"olden": "Olden (network weights)", "glm_effect": "GLM effect",
                                "glm_z": "GLM z"}[col])
            if col == "glm_z" and "glm_significant" in table:
                sig = table["glm_significant"].to_numpy().reshape(tuple(shape))
                r, c = np.nonzero(sig)
                ax.scatter(c, r, s=4, c="k", marker=".")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def plot_ald_fit(result) -> Figure:
    """Siddhartha's log-weight regressions per side and the ALD maximum-likelihood fit."""
    w = np.asarray(result.weights, dtype=np.float64)
    fig = Figure(figsize=(10, 3))
    axes = fig.subplots(1, 3)
    for ax, (side, vals) in zip(axes[:2], (("positive", w[w > 0]), ("negative", -w[w < 0]))):
        v = np.sort(vals)
        x = np.arange(1, len(v) + 1) / max(len(v), 1)
        ax.plot(x, np.log(v), "o", ms=3)
        reg = result.regression.loc[side]
        if np.isfinite(reg["slope"]):
            ax.plot(x, reg["intercept"] + reg["slope"] * x, "-", color="C1")
        ax.set_title(f"{side} weights: R^2 = {reg['r2']:.3f} (n = {int(reg['n'])})", fontsize=8)
        ax.set_xlabel("rank fraction i/L")
        ax.set_ylabel("log |weight|")
    ax = axes[2]
    ax.hist(w, bins=min(30, max(5, len(w) // 3)), density=True, alpha=0.5)
    if result.ald is not None:
        grid = np.linspace(w.min(), w.max(), 200)
        ax.plot(grid, result.ald.distribution.pdf(grid), color="C1")
        ax.set_title(f"ALD MLE: KS D = {result.ald.ks_statistic:.3f}, bootstrap p = "
                     f"{result.ald.ks_pvalue_bootstrap:.3f}", fontsize=8)
    ax.set_xlabel(f"class {result.cls} weights")
    fig.tight_layout()
    return fig


def plot_siddhartha(result, images: np.ndarray, index: int = 0) -> Figure:
    """One image and its class map restricted to each channel set, with the masked score.

    Empty channel sets are not drawn (their map would be blank).
    """
    names = [n for n in result.maps if len(result.sets.get(n, ())) > 0 or n not in result.sets]
    fig = Figure(figsize=(2.2 * (len(names) + 1), 2.6))
    axes = fig.subplots(1, len(names) + 1)
    img = np.asarray(images[index].detach().cpu() if hasattr(images[index], "detach") else images[index])
    axes[0].imshow(_img(img), cmap="gray")
    axes[0].set_title(f"input; P = {result.scores['unmasked'].iloc[index]:.3f}", fontsize=8)
    axes[0].set_axis_off()
    for ax, name in zip(axes[1:], names):
        score = result.scores[name].iloc[index]
        _sym(ax, result.maps[name][index], f"{name} ({len(result.sets[name])} ch)\nP = {score:.3f}")
    fig.tight_layout()
    return fig
