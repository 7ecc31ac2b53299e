"""Figures for class activation maps: overlays and the CAM / GLM-CAM / uncertainty gallery.

Plotting only: every number shown comes from a :class:`glminterp.maps.cam.CAMResult`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from glminterp.maps.cam import CAMResult


def _image_2d(image) -> np.ndarray:
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    return arr


def overlay(
    image,
    cam: np.ndarray,
    *,
    ax: Axes | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    title: str | None = None,
    mask: np.ndarray | None = None,
) -> Axes:
    """Draw ``cam`` (same size as the image; see ``upsample=True``) over ``image``.

    Parameters
    ----------
    image : Tensor or array, (C, H, W) or (H, W)
    cam : array (H, W)
    alpha : float
        Opacity of the map.
    mask : bool array (H, W), optional
        Outlined in white (e.g. a significance mask).
    """
    ax = ax or plt.subplots(figsize=(3, 3))[1]
    img = _image_2d(image)
    if img.shape[:2] != cam.shape:
        raise ValueError(
            f"cam shape {cam.shape} differs from the image's {img.shape[:2]}; compute the maps "
            "with upsample=True."
        )
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
    ax.imshow(cam, cmap=cmap, alpha=alpha)
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=1.0)
    if title:
        ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    return ax


def cam_gallery(
    images,
    network: CAMResult,
    glm: CAMResult,
    classes,
    *,
    rows=None,
    simultaneous: bool = True,
) -> Figure:
    """One row per image: image, network CAM, GLM CAM, SE, z and the significance mask.

    Parameters
    ----------
    images : Tensor (N, C, H, W)
        The images the results were computed on (same order).
    network, glm : CAMResult
        Maps from the network's weights and from the refit (with uncertainty), same images.
    classes : sequence of labels, one per image (e.g. the predicted class)
    rows : sequence of int positions, optional
        Images to show (default: all).
    simultaneous : bool
        Show the simultaneous mask (else the pointwise one).
    """
    if not glm.has_uncertainty:
        raise ValueError("glm has no SE/z; compute it with coefficients that carry a covariance.")
    rows = list(range(len(glm.sample_ids))) if rows is None else list(rows)
    kind = "mask_simultaneous" if simultaneous and glm.mask_simultaneous is not None else (
        "mask_pointwise"
    )
    cols = ["image", f"network CAM ({network.parametrization})",
            f"GLM CAM ({glm.parametrization})", "SE", "z", kind.replace("mask_", "significant, ")]
    fig, axes = plt.subplots(len(rows), 6, figsize=(12, 2.1 * len(rows)), squeeze=False)
    for r, n in enumerate(rows):
        c = str(classes[n])
        j = glm.class_index(c)
        img = _image_2d(images[n])
        ax = axes[r]
        ax[0].imshow(img, cmap="gray" if img.ndim == 2 else None)
        ax[0].set_ylabel(f"{glm.sample_ids[n]}\nclass {c}", fontsize=7)
        overlay(images[n], network.maps[n, network.class_index(c)], ax=ax[1])
        overlay(images[n], glm.maps[n, j], ax=ax[2])
        im = ax[3].imshow(glm.se[n, j], cmap="magma")
        fig.colorbar(im, ax=ax[3], fraction=0.046)
        zmax = float(np.nanmax(np.abs(glm.z[n, j]))) or 1.0
        im = ax[4].imshow(glm.z[n, j], cmap="RdBu_r", vmin=-zmax, vmax=zmax)
        fig.colorbar(im, ax=ax[4], fraction=0.046)
        m = getattr(glm, kind)[n, j]
        overlay(images[n], np.where(m, np.sign(glm.z[n, j]), 0.0), ax=ax[5], cmap="bwr", alpha=0.6)
        for k, a in enumerate(ax):
            a.set_xticks([])
            a.set_yticks([])
            if r == 0:
                a.set_title(cols[k], fontsize=8)
    fig.tight_layout()
    return fig
