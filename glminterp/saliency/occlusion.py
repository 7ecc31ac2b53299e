"""Occlusion sensitivity (Zeiler & Fergus 2014, section 4.2).

A square of a baseline value (the data mean by default, the paper's "grey square") is slid over
each input; at every position the network is re-run and three panels are recorded: the
probability of the target class, the most probable label, and the total activation of one
feature map of a chosen layer (by default the map that is strongest on the unoccluded image).
With ``layer`` set to the head's input layer of a GAP network, the activation panel is
``H * W`` times one GLM regressor, so the occlusion shows how a refit's regressor moves.

The window positions are those of ``captum.attr.Occlusion``: top-left corners at
``0, s, 2s, ...`` up to ``ceil((H - h) / s) * s``, the last window clipped at the border, so
:meth:`OcclusionResult.pixel_attribution` equals captum's attribution on the same settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from glminterp.hooks import model_device
from glminterp.saliency._common import (
    apply_link,
    as_images,
    eval_mode,
    forward_with_layer,
    get_module,
    resolve_link,
)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        out = (int(value), int(value))
    else:
        vals = tuple(int(v) for v in value)
        if len(vals) != 2:
            raise ValueError(f"{name} must be an int or a pair (height, width), got {value!r}.")
        out = vals
    if min(out) < 1:
        raise ValueError(f"{name} must be positive, got {value!r}.")
    return out


def window_positions(size: int, window: int, stride: int) -> np.ndarray:
    """Top-left offsets of the sliding window along one axis (captum's grid).

    ``ceil((size - window) / stride) + 1`` positions starting at 0; the last window may extend
    past the border and is clipped there, so every pixel is covered when ``stride <= window``.
    """
    if window > size:
        raise ValueError(f"window ({window}) is larger than the input ({size}).")
    n = int(np.ceil((size - window) / stride)) + 1
    return np.arange(n) * stride


def class_probabilities(logits: torch.Tensor, link: str) -> torch.Tensor:
    """``(B, K)`` probabilities; a single sigmoid output becomes the two columns ``1-p, p``."""
    prob = apply_link(logits.reshape(logits.shape[0], -1), link)
    if prob.shape[1] == 1:
        prob = torch.cat([1 - prob, prob], dim=1)
    return prob


@dataclass(frozen=True)
class OcclusionResult:
    """The occlusion panels of Zeiler & Fergus (2014, Fig. 7) for a batch of images.

    Attributes
    ----------
    probability : ndarray, shape (N, n_rows, n_cols)
        Probability of the target class with the window at each position.
    label : ndarray of int, shape (N, n_rows, n_cols)
        Most probable class with the window at each position.
    activation : ndarray or None, shape (N, n_rows, n_cols)
        Total (summed) activation of feature map ``channel[n]`` of ``layer``.
    channel : ndarray of int or None, shape (N,)
        The tracked feature map per image (the strongest on the unoccluded image unless given).
    target : ndarray of int, shape (N,)
    base_probability, base_activation : ndarray, shape (N,)
        The same quantities on the unoccluded image.
    rows, cols : ndarray of int
        Top-left pixel of the window at each grid position.
    window, stride : tuple of int
    input_shape : tuple of int
        ``(C, H, W)``.
    baseline : ndarray
        The value written under the window, broadcast to ``(C, 1, 1)`` or ``(C, H, W)``.
    layer : str or None
    """

    probability: np.ndarray = field(repr=False)
    label: np.ndarray = field(repr=False)
    activation: np.ndarray | None = field(repr=False)
    channel: np.ndarray | None = field(repr=False)
    target: np.ndarray = field(repr=False)
    base_probability: np.ndarray = field(repr=False)
    base_activation: np.ndarray | None = field(repr=False)
    rows: np.ndarray = field(repr=False)
    cols: np.ndarray = field(repr=False)
    window: tuple[int, int]
    stride: tuple[int, int]
    input_shape: tuple[int, int, int]
    baseline: np.ndarray = field(repr=False)
    layer: str | None

    @property
    def n_images(self) -> int:
        return int(self.probability.shape[0])

    def pixel_attribution(self, panel: str = "probability") -> np.ndarray:
        """Per-pixel mean of ``base - occluded`` over the windows covering each pixel.

        This is the quantity ``captum.attr.Occlusion`` returns (its forward function being the
        network's probabilities, or the tracked map's total activation for
        ``panel="activation"``). Pixels no window covers (``stride > window``) are NaN.

        Returns
        -------
        ndarray, shape (N, H, W)
        """
        if panel == "probability":
            values, base = self.probability, self.base_probability
        elif panel == "activation":
            if self.activation is None:
                raise ValueError("No activation panel: run occlusion(..., layer=<name>).")
            values, base = self.activation, self.base_activation
        else:
            raise ValueError(f"panel={panel!r}; use 'probability' or 'activation'.")
        _, h, w = self.input_shape
        total = np.zeros((self.n_images, h, w))
        count = np.zeros((h, w))
        diff = base[:, None, None] - values
        for i, r in enumerate(self.rows):
            for j, c in enumerate(self.cols):
                total[:, r : r + self.window[0], c : c + self.window[1]] += diff[:, i, j, None, None]
                count[r : r + self.window[0], c : c + self.window[1]] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    @property
    def summary(self) -> pd.DataFrame:
        """One row per image: target, unoccluded probability, the most damaging position."""
        flat = self.probability.reshape(self.n_images, -1)
        worst = flat.argmin(axis=1)
        i, j = np.unravel_index(worst, self.probability.shape[1:])
        changed = (self.label != self.target[:, None, None]).reshape(self.n_images, -1)
        out = pd.DataFrame(
            {
                "target": self.target,
                "base_probability": self.base_probability,
                "min_probability": flat.min(axis=1),
                "min_row": self.rows[i],
                "min_col": self.cols[j],
                "frac_label_changed": changed.mean(axis=1),
            }
        )
        if self.channel is not None:
            out["channel"] = self.channel
            out["base_activation"] = self.base_activation
        return out

    def _repr_html_(self) -> str:
        return self.summary.to_html(float_format=lambda v: f"{v:.4g}")


def _baseline_tensor(baseline: Any, images: torch.Tensor) -> torch.Tensor:
    c, h, w = images.shape[1:]
    if baseline is None:
        return images.mean(dim=(0, 2, 3)).reshape(c, 1, 1)  # per-channel data mean
    b = torch.as_tensor(np.asarray(baseline), dtype=images.dtype)
    if b.dim() == 0:
        return b.reshape(1, 1, 1).expand(c, 1, 1).clone()
    if b.dim() == 1 and b.shape[0] == c:
        return b.reshape(c, 1, 1)
    if tuple(b.shape) == (c, h, w):
        return b
    raise ValueError(
        f"baseline must be None (data mean), a scalar, one value per channel ({c}) or an image "
        f"of shape {(c, h, w)}; got shape {tuple(b.shape)}."
    )


def _targets(target: Any, labels: torch.Tensor | None, pred: np.ndarray, n: int) -> np.ndarray:
    if target is None:
        return labels.cpu().numpy().astype(int) if labels is not None else pred.astype(int)
    if isinstance(target, str):
        if target == "true":
            if labels is None:
                raise ValueError("target='true' needs LabeledImages inputs (labels are unknown).")
            return labels.cpu().numpy().astype(int)
        if target == "pred":
            return pred.astype(int)
        raise ValueError(f"target={target!r}; use None, 'true', 'pred', an int or one per image.")
    t = np.asarray(target, dtype=int).reshape(-1)
    if t.size == 1:
        return np.full(n, int(t[0]))
    if t.size != n:
        raise ValueError(f"target has {t.size} entries for {n} images; give one per image.")
    return t


def occlusion(
    model: nn.Module,
    inputs: Any,
    *,
    window: int | Sequence[int],
    stride: int | Sequence[int],
    baseline: Any = None,
    target: Any = None,
    layer: str | None = None,
    channel: int | Sequence[int] | None = None,
    link: str | None = None,
    batch_size: int = 256,
) -> OcclusionResult:
    """Slide an occluding square over each image and record the paper's three panels.

    Parameters
    ----------
    model : nn.Module
        Returns logits (its link is detected as in :func:`glminterp.detect_head`).
    inputs : Tensor (N, C, H, W) or LabeledImages
    window, stride : int or (int, int)
        Side(s) of the occluding square and the step between positions, in pixels.
    baseline : None, float, per-channel values or (C, H, W) image
        Value written under the square; None uses the per-channel mean of ``inputs``.
    target : None, "true", "pred", int or sequence of int
        Class whose probability is mapped; None means the true label for LabeledImages and the
        predicted class (on the unoccluded image) otherwise.
    layer : str, optional
        Module whose feature map's total activation is recorded (third panel).
    channel : int or sequence of int, optional
        Feature map of ``layer`` to track; default: the one with the largest total activation
        on each unoccluded image.
    link : {"softmax", "sigmoid", "identity"}, optional
        Override the detected inverse link.
    batch_size : int
        Occluded images per forward pass.

    Returns
    -------
    OcclusionResult
    """
    images, labels = as_images(inputs)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if layer is not None:
        get_module(model, layer)
    n, c, h, w = images.shape
    wh, ww = _pair(window, "window")
    sh, sw = _pair(stride, "stride")
    rows, cols = window_positions(h, wh, sh), window_positions(w, ww, sw)
    device = model_device(model)
    base_img = _baseline_tensor(baseline, images)
    link_used = resolve_link(model, images[:1].to(device), link)
    positions = [(r, col) for r in rows for col in cols]
    run = partial(_forward, model, layer=layer, link=link_used)

    with eval_mode(model), torch.inference_mode():
        # Unoccluded pass: target, base probability and the strongest map per image.
        prob0, acts0 = _unoccluded_pass(run, images, device, batch_size)
        targets = _targets(target, labels, prob0.argmax(axis=1), n)
        if targets.min() < 0 or targets.max() >= prob0.shape[1]:
            raise ValueError(f"target classes must lie in 0..{prob0.shape[1] - 1}.")
        chan = act0 = None
        if acts0 is not None:
            chan = _tracked_channel(acts0, channel, n)
            act0 = acts0[np.arange(n), chan]
        prob, label, act = _occluded_pass(
            run, images, base_img, positions, (wh, ww), targets, chan, device, batch_size
        )

    shape = (n, len(rows), len(cols))
    return OcclusionResult(
        probability=prob.reshape(shape),
        label=label.reshape(shape),
        activation=None if act is None else act.reshape(shape),
        channel=chan,
        target=targets,
        base_probability=prob0[np.arange(n), targets],
        base_activation=act0,
        rows=rows,
        cols=cols,
        window=(wh, ww),
        stride=(sh, sw),
        input_shape=(c, h, w),
        baseline=base_img.numpy().astype(np.float64),
        layer=layer,
    )


def _forward(
    model: nn.Module, x: torch.Tensor, *, layer: str | None, link: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class probabilities of ``x`` and, with a ``layer``, each feature map's total activation."""
    if layer is None:
        return class_probabilities(model(x), link), None
    out, act = forward_with_layer(model, x, layer)
    act = act.reshape(act.shape[0], act.shape[1], -1).sum(dim=2) if act.dim() > 2 else act
    return class_probabilities(out, link), act


def _unoccluded_pass(
    run: Callable, images: torch.Tensor, device: torch.device, batch_size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities (N, K) and total activations per map (N, M) or None on the clean images."""
    base_p, base_a = [], []
    for s in range(0, images.shape[0], batch_size):
        p, a = run(images[s : s + batch_size].to(device))
        base_p.append(p.cpu().double())
        if a is not None:
            base_a.append(a.cpu().double())
    return torch.cat(base_p).numpy(), torch.cat(base_a).numpy() if base_a else None


def _tracked_channel(acts0: np.ndarray, channel: int | Sequence[int] | None, n: int) -> np.ndarray:
    """The feature map tracked per image: the given one(s) or the most active one."""
    if channel is None:
        return acts0.argmax(axis=1)
    chan = np.broadcast_to(np.asarray(channel, dtype=int), (n,)).copy()
    if chan.min() < 0 or chan.max() >= acts0.shape[1]:
        raise ValueError(f"channel must lie in 0..{acts0.shape[1] - 1}.")
    return chan


def _occluded_pass(
    run: Callable, images: torch.Tensor, base_img: torch.Tensor,
    positions: list[tuple[int, int]], window: tuple[int, int], targets: np.ndarray,
    chan: np.ndarray | None, device: torch.device, batch_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Target probability, predicted label and tracked activation (N, positions) per window."""
    wh, ww = window
    n, n_pos = images.shape[0], len(positions)
    prob = np.empty((n, n_pos))
    label = np.empty((n, n_pos), dtype=int)
    act = np.empty((n, n_pos)) if chan is not None else None
    total = n * n_pos
    for s in range(0, total, batch_size):
        flat = np.arange(s, min(s + batch_size, total))
        img_idx, pos_idx = flat // n_pos, flat % n_pos
        x = images[torch.as_tensor(img_idx)].clone()
        for b, k in enumerate(pos_idx):
            r, col = positions[k]
            patch = base_img if base_img.shape[1] == 1 else base_img[:, r : r + wh, col : col + ww]
            x[b, :, r : r + wh, col : col + ww] = patch
        p, a = run(x.to(device))
        p = p.cpu().double().numpy()
        prob[img_idx, pos_idx] = p[np.arange(len(flat)), targets[img_idx]]
        label[img_idx, pos_idx] = p.argmax(axis=1)
        if act is not None:
            a = a.cpu().double().numpy()
            act[img_idx, pos_idx] = a[np.arange(len(flat)), chan[img_idx]]
    return prob, label, act
