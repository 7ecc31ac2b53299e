"""Figures of the analysis report: per-class network-versus-GLM panels, patch grids.

Every function draws already computed columns (see :func:`glminterp.report.analysis.
comparison_frame`); none computes a statistic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from glminterp.plots import report as _report  # noqa: F401 - selects the Agg backend


def agreement_panels(frame: pd.DataFrame, *, ncol: int = 5) -> Figure:
    """One panel per class: network weight against GLM estimate, both on the GLM's z scale.

    ``frame`` has columns ``class, term, x, y, y_lo, y_hi, significant`` (see
    :func:`glminterp.report.analysis.comparison_frame`): ``x`` the network's weight divided by
    the GLM standard error, ``y`` the GLM's z and ``y_lo, y_hi`` its CI on that scale. The
    dashed line is agreement (y = x); a bar crossing it means the network's weight lies in the
    GLM's CI.
    """
    classes = list(dict.fromkeys(frame["class"].astype(str)))
    n = max(len(classes), 1)
    ncol = max(1, min(ncol, n))
    nrow = int(np.ceil(n / ncol))
    fig = Figure(figsize=(2.3 * ncol + 0.4, 2.2 * nrow + 0.5))
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    for ax, cls in zip(axes, classes):
        sub = frame[frame["class"].astype(str) == cls]
        sig = sub["significant"].astype(bool).to_numpy()
        err = np.vstack([sub["y"] - sub["y_lo"], sub["y_hi"] - sub["y"]])
        for mask, colour in ((~sig, "0.55"), (sig, "C3")):
            if mask.any():
                ax.errorbar(sub["x"][mask], sub["y"][mask], yerr=np.abs(err[:, mask]), fmt="o",
                            ms=2.5, lw=0.6, color=colour, ecolor=colour, alpha=0.85)
        both = np.concatenate([sub["x"], sub["y_lo"], sub["y_hi"]])
        both = both[np.isfinite(both)]
        lo, hi = (float(both.min()), float(both.max())) if both.size else (-1.0, 1.0)
        ax.plot([lo, hi], [lo, hi], ls="--", color="0.2", lw=0.7)
        ax.axhline(0, color="0.85", lw=0.5, zorder=0)
        ax.set_title(f"class {cls}", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes[len(classes):]:
        ax.axis("off")
    fig.supxlabel("network weight / GLM SE", fontsize=8)
    fig.supylabel("GLM z (bars: CI)", fontsize=8)
    fig.tight_layout()
    return fig


def _show(ax, patch: np.ndarray) -> None:
    p = np.nan_to_num(np.asarray(patch, dtype=float))
    if p.shape[0] == 1:
        ax.imshow(p[0], cmap="gray")
    else:
        img = np.moveaxis(p[:3], 0, -1)
        lo, span = img.min(), img.max() - img.min()
        ax.imshow((img - lo) / (span if span > 0 else 1.0))
    ax.set_xticks([])
    ax.set_yticks([])


def patch_grid(patches: np.ndarray, projections: np.ndarray | None, titles: list[str], *,
               ncol: int = 3) -> Figure:
    """Per channel (a row block): its top-k input patches beside their deconvnet projections.

    ``patches`` and ``projections`` are ``(n_channels, k, C, h, w)`` (as in
    :class:`glminterp.saliency.patches.TopPatches`); each channel's k patches form a small
    grid of ``ncol`` columns, the projections the same grid to its right (Zeiler & Fergus 2014,
    Fig. 2).
    """
    n_ch, k = patches.shape[:2]
    ncol = max(1, min(ncol, k))
    nrow = int(np.ceil(k / ncol))
    blocks = 2 if projections is not None else 1
    fig = Figure(figsize=(blocks * ncol * 0.75 + 0.6 * blocks, n_ch * (nrow * 0.75 + 0.35)))
    outer = fig.add_gridspec(n_ch, blocks, wspace=0.15, hspace=0.35)
    for ci in range(n_ch):
        for b in range(blocks):
            inner = outer[ci, b].subgridspec(nrow, ncol, wspace=0.05, hspace=0.05)
            src = patches if b == 0 else projections
            for r in range(k):
                ax = fig.add_subplot(inner[r // ncol, r % ncol])
                _show(ax, src[ci, r])
                if r == 0:
                    what = "patches" if b == 0 else "deconvnet"
                    ax.set_title(f"{titles[ci]}: {what}", fontsize=7, loc="left")
    return fig
