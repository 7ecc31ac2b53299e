"""Figures of the study report: training curve, split sizes, image grids (the refit's own
figures are in :mod:`glminterp.plots.refit`).

Every function takes already computed tables (the tidy coefficient DataFrame of a refit, the
training curve) and returns a matplotlib Figure; none computes a statistic. Save them with
:func:`save_png`, which strips the metadata that would make reruns differ.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are written headless; no display is ever needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

_PNG_METADATA = {"Software": None}


def save_png(fig: Figure, path: str | Path | None = None, *, dpi: int = 100) -> bytes:
    """Render ``fig`` as PNG without the "Software" tag (PNG carries no timestamp), close it.

    Parameters
    ----------
    fig : Figure
    path : path, optional
        Where to write the file; the bytes are returned in any case.
    dpi : int

    Returns
    -------
    bytes
        The PNG file content (identical for identical figures).
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata=_PNG_METADATA, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def training_curve(curve: pd.DataFrame) -> Figure:
    """Loss and accuracy per epoch (columns ``epoch``, ``loss``, ``accuracy``)."""
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(curve["epoch"], curve["loss"], marker="o", color="C0", label="loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="C0")
    if "accuracy" in curve:
        ax2 = ax.twinx()
        ax2.plot(curve["epoch"], curve["accuracy"], marker="s", color="C1", label="accuracy")
        ax2.set_ylabel("training accuracy", color="C1")
    ax.set_title("Training curve (train split)")
    fig.tight_layout()
    return fig


def split_counts(counts: pd.DataFrame) -> Figure:
    """Stacked bars of rows per class (index) and split (columns)."""
    fig, ax = plt.subplots(figsize=(6, 3))
    counts.plot.bar(stacked=True, ax=ax, width=0.8)
    ax.set_xlabel("class")
    ax.set_ylabel("rows")
    ax.set_title("Rows per class and split")
    ax.legend(title="split", fontsize=8)
    fig.tight_layout()
    return fig


def cam_gallery(
    images: np.ndarray,
    panels: dict[str, np.ndarray],
    row_labels: list[str],
    *,
    cmaps: dict[str, str] | None = None,
) -> Figure:
    """Grid of images (rows) by panels (columns): the input, then one map per panel.

    Parameters
    ----------
    images : ndarray, shape (N, H, W)
    panels : dict of str to ndarray (N, H, W)
        Column title -> maps (e.g. network CAM, GLM CAM, SE, z, significance mask).
    row_labels : list of str
        One label per image (e.g. "id | class 3").
    cmaps : dict, optional
        Column title -> colormap name (default ``"jet"``; ``"RdBu_r"`` centred for titles
        starting with "z", ``"gray"`` for masks).
    """
    cmaps = dict(cmaps or {})
    n = images.shape[0]
    ncol = 1 + len(panels)
    fig, axes = plt.subplots(n, ncol, figsize=(1.6 * ncol, 1.6 * n + 0.4), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(images[i], cmap="gray")
        axes[i, 0].set_ylabel(row_labels[i], fontsize=7)
        for j, (title, arr) in enumerate(panels.items(), start=1):
            ax = axes[i, j]
            m = np.asarray(arr[i], dtype=float)
            cmap = cmaps.get(title)
            if title.lower().startswith("z"):
                lim = float(np.nanmax(np.abs(m))) or 1.0
                ax.imshow(m, cmap=cmap or "RdBu_r", vmin=-lim, vmax=lim)
            elif "mask" in title.lower():
                ax.imshow(images[i], cmap="gray")
                ax.imshow(np.ma.masked_where(m <= 0, m), cmap=cmap or "autumn", alpha=0.6,
                          vmin=0, vmax=1)
            else:
                ax.imshow(images[i], cmap="gray")
                ax.imshow(m, cmap=cmap or "jet", alpha=0.5)
            if i == 0:
                ax.set_title(title, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("image", fontsize=8)
    fig.tight_layout()
    return fig


def image_grid(images: np.ndarray, titles: list[str], *, ncol: int = 6, cmap: str = "RdBu_r",
               centred: bool = True, suptitle: str = "") -> Figure:
    """Small multiples of 2-D arrays (e.g. hidden units' input weights as images)."""
    n = images.shape[0]
    ncol = max(1, min(ncol, n))
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.7 * ncol, 1.8 * nrow + 0.4), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.axis("off")
            continue
        m = np.asarray(images[k], dtype=float)
        if centred:
            lim = float(np.nanmax(np.abs(m))) or 1.0
            ax.imshow(m, cmap=cmap, vmin=-lim, vmax=lim)
        else:
            ax.imshow(m, cmap=cmap)
        ax.set_title(titles[k], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig
