"""Top-k activating examples per channel, their receptive fields and deconvnet projections.

Zeiler & Fergus (2014, Fig. 2) show, for each feature map, the nine inputs whose strongest unit
in that map is largest, the input patch under that unit's receptive field, and the unit's
deconvnet projection. The receptive field is measured on the real graph
(:func:`receptive_field`: which input rows and columns a NaN probe reaches each unit from, so
residual shortcuts and branches count as they run), never from a hard-coded table; for chains
of modules the kernel / stride / padding arithmetic is reported beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from glminterp.hooks import model_device
from glminterp.saliency._common import (
    as_images,
    capture_layer,
    class_coefficients,
    eval_mode,
    get_module,
)
from glminterp.saliency.deconvnet import deconvnet


def _two(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


@dataclass(frozen=True)
class ReceptiveField:
    """Where the units of a layer look in the input.

    Unit ``(i, j)`` of the layer sees input rows ``offset[0] + i * jump[0]`` to
    ``offset[0] + i * jump[0] + size[0] - 1`` (and likewise for columns); coordinates outside
    ``0..H-1`` are padding.

    Attributes
    ----------
    layer : str
    size, jump, offset : tuple of int
        Field side, distance in pixels between neighbouring units, and the (possibly negative)
        input coordinate of the top-left corner of unit ``(0, 0)``'s field, per axis.
    input_shape : tuple of int
        ``(C, H, W)`` of the input used to trace the model.
    output_shape : tuple of int
        ``(h, w)`` of the layer's map.
    steps : DataFrame
        One row per spatial module walked: kernel, stride, padding, dilation and the field after it.
    """

    layer: str
    size: tuple[int, int]
    jump: tuple[int, int]
    offset: tuple[int, int]
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int]
    steps: pd.DataFrame = field(repr=False)

    def bounds(self, i: int, j: int, *, clip: bool = False) -> tuple[int, int, int, int]:
        """Half-open input box ``(row0, row1, col0, col1)`` of unit ``(i, j)``."""
        r0 = self.offset[0] + i * self.jump[0]
        c0 = self.offset[1] + j * self.jump[1]
        r1, c1 = r0 + self.size[0], c0 + self.size[1]
        if clip:
            h, w = self.input_shape[1:]
            return max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
        return r0, r1, c0, c1

    def patch(self, image: np.ndarray, i: int, j: int, *, fill: float = np.nan) -> np.ndarray:
        """The ``(C, size[0], size[1])`` input patch under unit ``(i, j)``; padding is ``fill``."""
        image = np.asarray(image, dtype=np.float64)
        out = np.full((image.shape[0], *self.size), fill)
        r0, r1, c0, c1 = self.bounds(i, j)
        h, w = image.shape[1:]
        rr0, rr1, cc0, cc1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
        if rr0 < rr1 and cc0 < cc1:
            out[:, rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = image[:, rr0:rr1, cc0:cc1]
        return out


def _trace_order(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module, tuple, tuple]]:
    """(name, module, input shape, output shape) of each leaf module, in execution order."""
    records: list[tuple[str, nn.Module, tuple, tuple]] = []
    handles = []

    def make(name: str):
        def hook(module, inputs, output):
            shape_in = tuple(inputs[0].shape) if inputs and isinstance(inputs[0], torch.Tensor) else ()
            shape_out = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
            records.append((name, module, shape_in, shape_out))

        return hook

    for name, module in model.named_modules():
        if name and not list(module.children()):
            handles.append(module.register_forward_hook(make(name)))
    try:
        with eval_mode(model), torch.inference_mode():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return records


def _conv_geometry(module: nn.Module) -> tuple[tuple[int, int], ...]:
    """(kernel, stride, padding-left, dilation) per axis of a Conv2d/MaxPool2d/AvgPool2d."""
    k = _two(module.kernel_size)
    stride = module.stride if module.stride is not None else module.kernel_size
    s = _two(stride)
    d = _two(getattr(module, "dilation", 1))
    pad = module.padding
    if isinstance(pad, str):  # Conv2d padding="valid" / "same" (stride 1)
        p = (0, 0) if pad == "valid" else tuple((d[a] * (k[a] - 1)) // 2 for a in range(2))
    else:
        p = _two(pad)
    return k, s, p, d


def receptive_field(
    model: nn.Module, layer: str, input_shape: Sequence[int], *, batch_size: int = 256
) -> ReceptiveField:
    """Receptive field of the units of ``layer``, measured on the real graph.

    Which input pixels unit ``(i, j)`` depends on is measured exactly, for any network: the model
    is run (in eval mode, up to ``layer``) on zero images with one pixel set to NaN, and the
    units the NaN reaches are the units whose field holds that pixel (convolutions, pooling,
    normalisation, activations, residual additions and concatenations all propagate it). The
    measured boxes, clipped to the image, are then described as a regular grid: size ``R``,
    jump ``J`` and offset ``L`` per axis, so that unit ``i`` sees ``L + i J`` to
    ``L + i J + R - 1``. When the modules form a chain, ``R, J, L`` come from composing each
    ``Conv2d``/``MaxPool2d``/``AvgPool2d`` (``R + (k - 1) d J``, ``J s``, ``L - p J``; listed
    in ``steps``) and are used if they agree with the measurement; otherwise (residual
    networks, whose shortcuts are not in series with the main path) the grid is fitted to the
    measured boxes, on a larger canvas if the field covers the whole image.

    Parameters
    ----------
    model : nn.Module
    layer : str
        Module name whose output is a ``(N, C, h, w)`` map.
    input_shape : (C, H, W)
    batch_size : int
        One-pixel probe images per forward pass.

    Raises
    ------
    ValueError
        If ``layer`` is not 4-D, an op does not propagate NaN (so the dependency cannot be
        measured), or the measured fields are not a regular grid (e.g. after upsampling); the
        message names the module that breaks the arithmetic when there is one.
    """
    get_module(model, layer)
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {input_shape!r}.")
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    example = torch.zeros((1, *shape), device=model_device(model), dtype=dtype)
    records = _trace_order(model, example)
    idx = [i for i, r in enumerate(records) if r[0] == layer]
    out_shape = records[idx[0]][3] if idx else _layer_shape(model, example, layer)
    if len(out_shape) != 4:
        raise ValueError(f"Layer {layer!r} outputs shape {out_shape}; a (N, C, h, w) map is needed.")
    chain, chain_error = None, None
    if idx:
        try:
            chain = _chain_field(records[: idx[0] + 1])
        except ValueError as e:
            chain_error = str(e)
    boxes = _support_boxes(model, layer, shape, batch_size)
    out_hw = (int(out_shape[2]), int(out_shape[3]))
    if chain is not None and _grid_matches(chain[:3], boxes, shape[1:]):
        size, jump, offset, steps = chain
    else:
        grid = _fit_grid(boxes, shape[1:])
        if grid is None and min(shape[1:]) < 256:
            big = (shape[0], *(3 * v + 8 for v in shape[1:]))
            try:
                grid = _fit_grid(_support_boxes(model, layer, big, batch_size), big[1:])
            except Exception:  # noqa: BLE001 - a model fixed to its input size cannot grow
                grid = None
            if grid is not None and not _grid_matches(grid, boxes, shape[1:]):
                grid = None
        if grid is None:
            raise ValueError(
                f"The receptive fields of {layer!r} measured on the graph are not a regular "
                "grid of one size and stride, so no (size, jump, offset) describes them"
                + (f": {chain_error}" if chain_error else ".")
            )
        size, jump, offset = grid
        steps = [{"module": "(measured on the graph)", "type": "support of NaN probes",
                  "size": size, "jump": jump, "offset": offset}]
    return ReceptiveField(
        layer=layer,
        size=tuple(size),
        jump=tuple(jump),
        offset=tuple(offset),
        input_shape=shape,
        output_shape=out_hw,
        steps=pd.DataFrame(steps),
    )


def _layer_shape(model: nn.Module, example: torch.Tensor, layer: str) -> tuple:
    with eval_mode(model), torch.inference_mode():
        return tuple(capture_layer(model, example, layer).shape)


def _chain_field(records) -> tuple[list[int], list[int], list[int], list[dict]]:
    """Compose the spatial modules of a chain of leaf modules (see :func:`receptive_field`)."""
    size, jump, offset = [1, 1], [1, 1], [0, 0]
    steps = []
    for name, module, s_in, s_out in records:
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, s, p, d = _conv_geometry(module)
            for a in range(2):
                size[a] += (k[a] - 1) * d[a] * jump[a]
                offset[a] -= p[a] * jump[a]
                jump[a] *= s[a]
            steps.append(
                {"module": name, "type": type(module).__name__, "kernel": k, "stride": s,
                 "padding": p, "dilation": d, "size": tuple(size), "jump": tuple(jump),
                 "offset": tuple(offset)}
            )
        elif len(s_in) == 4 and s_in[2:] == s_out[2:]:
            continue  # pointwise in space
        elif len(s_in) == 4:
            raise ValueError(
                f"Module {name!r} ({type(module).__name__}) changes the spatial shape "
                f"{s_in[2:]} -> {s_out[2:]} in a way receptive-field arithmetic does not cover; "
                "only Conv2d, MaxPool2d and AvgPool2d are composed."
            )
    return size, jump, offset, steps


def _support_boxes(model: nn.Module, layer: str, shape: tuple, batch_size: int) -> np.ndarray:
    """``(h, w, 4)`` half-open in-image boxes ``(row0, row1, col0, col1)`` of the pixels each
    unit of ``layer`` depends on, measured by propagating NaN: a unit depends on input row
    ``r`` iff a NaN in row ``r`` reaches it (likewise columns), so ``H + W`` probes suffice."""
    c, h, w = shape
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    device = model_device(model)
    probes = [("row", r) for r in range(h)] + [("col", q) for q in range(w)]
    deps = []
    with eval_mode(model), torch.inference_mode():
        base = capture_layer(model, torch.zeros((1, *shape), device=device, dtype=dtype), layer)
        if base.dim() != 4 or torch.isnan(base).any():
            raise ValueError(f"Layer {layer!r} is not a finite (N, C, h, w) map on zero input.")
        for s in range(0, len(probes), batch_size):
            chunk = probes[s : s + batch_size]
            x = torch.zeros((len(chunk), *shape), device=device, dtype=dtype)
            for k, (axis, v) in enumerate(chunk):
                if axis == "row":
                    x[k, :, v, :] = float("nan")
                else:
                    x[k, :, :, v] = float("nan")
            deps.append(torch.isnan(capture_layer(model, x, layer)).any(dim=1).cpu())
    dep = torch.cat(deps).numpy()  # (h + w, h', w')
    rows, cols = dep[:h], dep[h:]
    if not rows.any(axis=0).all() or not cols.any(axis=0).all():
        raise ValueError(
            f"Some units of {layer!r} depend on no input pixel under NaN probing: an op in the "
            "model does not propagate NaN (e.g. nan_to_num, a mask), so the receptive field "
            "cannot be measured."
        )
    idx_r = np.arange(h)[:, None, None]
    idx_c = np.arange(w)[:, None, None]
    r0 = np.where(rows, idx_r, h).min(0)
    r1 = np.where(rows, idx_r, -1).max(0) + 1
    c0 = np.where(cols, idx_c, w).min(0)
    c1 = np.where(cols, idx_c, -1).max(0) + 1
    return np.stack([r0, r1, c0, c1], axis=-1)


def _grid_matches(grid, boxes: np.ndarray, hw: tuple[int, int]) -> bool:
    size, jump, offset = grid
    h, w = boxes.shape[:2]
    i = np.arange(h)[:, None]
    j = np.arange(w)[None, :]
    r0 = np.clip(offset[0] + i * jump[0], 0, hw[0])
    c0 = np.clip(offset[1] + j * jump[1], 0, hw[1])
    r1 = np.clip(offset[0] + i * jump[0] + size[0], 0, hw[0])
    c1 = np.clip(offset[1] + j * jump[1] + size[1], 0, hw[1])
    want = np.stack(np.broadcast_arrays(r0, r1, c0, c1), axis=-1)
    return bool(np.array_equal(want, boxes))


def _fit_grid(boxes: np.ndarray, hw: tuple[int, int]):
    """``(size, jump, offset)`` of a regular grid reproducing the clipped boxes, or None."""
    size, jump, offset = [0, 0], [1, 1], [0, 0]
    for a in range(2):
        lo = boxes[:, 0, 0] if a == 0 else boxes[0, :, 2]
        hi = boxes[:, 0, 1] if a == 0 else boxes[0, :, 3]
        free = np.nonzero((lo > 0) & (hi < hw[a]))[0]  # units whose field is not clipped
        if len(free) == 0 or (len(free) == 1 and len(lo) > 1):
            return None
        u = int(free[0])
        size[a] = int(hi[u] - lo[u])
        if len(free) > 1:
            v = int(free[1])
            step, rem = divmod(int(lo[v] - lo[u]), v - u)
            if rem or step < 1:
                return None
            jump[a] = step
        offset[a] = int(lo[u]) - u * jump[a]
    grid = (size, jump, offset)
    return grid if _grid_matches(grid, boxes, hw) else None


@dataclass(frozen=True)
class TopPatches:
    """Top-k activating inputs per channel with their patches and projections.

    Attributes
    ----------
    table : DataFrame
        One row per (channel, rank): ``channel, rank, index`` (row in the inputs),
        ``sample_id``, ``activation`` (the image's largest unit in the map), ``row, col`` (that
        unit), ``row0, row1, col0, col1`` (its receptive field, unclipped, half-open), and,
        with a refit, the channel's ``coef, z, p_adj, significant`` for the chosen class.
    patches : ndarray, shape (n_channels, k, C, size_h, size_w)
        Input patches under the receptive field (NaN where the field lies in padding).
    projections : ndarray or None
        Deconvnet projections of the same units, cropped to the same boxes.
    receptive_field : ReceptiveField or None
        None for dense layers (the field is the whole input).
    channels : tuple of int
    """

    table: pd.DataFrame = field(repr=False)
    patches: np.ndarray = field(repr=False)
    projections: np.ndarray | None = field(repr=False)
    receptive_field: ReceptiveField | None
    channels: tuple[int, ...]
    layer: str

    @property
    def summary(self) -> pd.DataFrame:
        """One row per channel: the k-th and first activations (and GLM columns if present)."""
        g = self.table.groupby("channel", sort=False)
        out = pd.DataFrame(
            {"top_activation": g["activation"].max(), "kth_activation": g["activation"].min()}
        )
        for col in ("coef", "z", "p_adj", "significant"):
            if col in self.table:
                out[col] = g[col].first()
        return out

    def _repr_html_(self) -> str:
        return self.summary.to_html(float_format=lambda v: f"{v:.4g}")


def top_activations(
    model: nn.Module,
    inputs: Any,
    *,
    layer: str,
    k: int = 9,
    channels: Sequence[int] | None = None,
    refit: Any = None,
    cls: Any = None,
    correction: str = "holm",
    alpha: float = 0.05,
    project: bool = True,
    ids: Sequence[str] | None = None,
    batch_size: int = 256,
) -> TopPatches:
    """The ``k`` inputs whose strongest unit in each channel of ``layer`` is largest.

    Each input counts once per channel (its arg-max position), as in the paper's figure.

    Parameters
    ----------
    model : nn.Module
    inputs : Tensor (N, C, H, W) or LabeledImages
    layer : str
        A conv layer (``(N, C', h, w)`` output) or a dense layer (the field is the whole input).
    k : int
    channels : sequence of int, optional
        Channels to report. Default: all; with ``refit`` and ``cls``, all ordered by the refit's
        z for ``cls`` (largest first), so the table leads with the GLM's strongest regressors.
    refit, cls : RefitResult (or its coefficients DataFrame) and a class, optional
        Attach each channel's coefficient, z, adjusted p and significance for ``cls``; the
        layer must be the head's input layer so that channel ``c`` is regressor ``c``.
    correction, alpha : see :func:`glminterp.saliency.significant_units`.
    project : bool
        Compute the deconvnet projection of each top unit (signal = its activation).
    ids : sequence of str, optional
        Sample ids (taken from LabeledImages when not given).
    batch_size : int
    """
    images, _ = as_images(inputs)
    if ids is None and hasattr(inputs, "ids"):
        ids = list(inputs.ids)
    n = images.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of inputs ({n}), got {k}.")
    maxima_np, argmax_np, map_shape = _channel_maxima(model, images, layer, batch_size)
    glm = None
    if refit is not None:
        if cls is None:
            raise ValueError("cls is needed with refit: the class whose coefficients to attach.")
        glm = class_coefficients(refit, cls, correction=correction).set_index("unit")
    channels = _ordered_channels(channels, maxima_np.shape[1], glm)
    rf = receptive_field(model, layer, tuple(images.shape[1:])) if map_shape is not None else None
    table, patches = _patch_table(images, channels, k, maxima_np, argmax_np, map_shape, rf, ids)
    if glm is not None:
        sub = glm.reindex(table["channel"])
        table["coef"] = sub["coef"].to_numpy()
        table["z"] = sub["z"].to_numpy()
        table["p_adj"] = sub["p_adj"].to_numpy()
        table["significant"] = (sub["p_adj"] < alpha).to_numpy()
    projections = None
    if project:
        projections = _projections(model, images, layer, table, patches, k, rf, batch_size)
    return TopPatches(
        table=table,
        patches=patches,
        projections=projections,
        receptive_field=rf,
        channels=tuple(channels),
        layer=layer,
    )


def _channel_maxima(model: nn.Module, images: torch.Tensor, layer: str, batch_size: int):
    """Per input and channel of ``layer``: the strongest unit's value and its flat position."""
    device = model_device(model)
    maxima, argmax, map_shape = [], [], None
    with eval_mode(model), torch.inference_mode():
        for s in range(0, images.shape[0], batch_size):
            act = capture_layer(model, images[s : s + batch_size].to(device), layer)
            if act.dim() == 4:
                map_shape = tuple(act.shape[2:])
                flat = act.reshape(act.shape[0], act.shape[1], -1)
                m, a = flat.max(dim=2)
            elif act.dim() == 2:
                m, a = act, torch.zeros_like(act, dtype=torch.long)
            else:
                raise ValueError(f"Layer {layer!r} output has {act.dim()} dims; need 2 or 4.")
            maxima.append(m.cpu().double())
            argmax.append(a.cpu())
    return torch.cat(maxima).numpy(), torch.cat(argmax).numpy(), map_shape


def _ordered_channels(channels, n_ch: int, glm: pd.DataFrame | None) -> list[int]:
    """The channels to report: as given, else all (ordered by the refit's z when attached)."""
    if channels is None:
        channels = list(range(n_ch))
        if glm is not None:
            z = glm["z"].reindex(channels)
            channels = list(z.sort_values(ascending=False, na_position="last").index)
    channels = [int(c) for c in channels]
    if min(channels) < 0 or max(channels) >= n_ch:
        raise ValueError(f"channels must lie in 0..{n_ch - 1}.")
    return channels


def _patch_table(images, channels, k, maxima_np, argmax_np, map_shape, rf, ids):
    """The top-``k`` table (one row per channel and rank) and the image patches under each."""
    c_in, h, w = images.shape[1:]
    size = rf.size if rf is not None else (h, w)
    rows = []
    patches = np.empty((len(channels), k, c_in, *size))
    for ci, ch in enumerate(channels):
        order = np.argsort(-maxima_np[:, ch], kind="stable")[:k]
        for rank, idx in enumerate(order):
            if rf is not None:
                i, j = np.unravel_index(int(argmax_np[idx, ch]), map_shape)
                r0, r1, c0, c1 = rf.bounds(int(i), int(j))
                patches[ci, rank] = rf.patch(images[idx].numpy(), int(i), int(j))
            else:
                i = j = 0
                r0, r1, c0, c1 = 0, h, 0, w
                patches[ci, rank] = images[idx].numpy()
            rows.append(
                {"channel": ch, "rank": rank + 1, "index": int(idx),
                 "sample_id": None if ids is None else str(ids[idx]),
                 "activation": float(maxima_np[idx, ch]), "row": int(i), "col": int(j),
                 "row0": r0, "row1": r1, "col0": c0, "col1": c1}
            )
    return pd.DataFrame(rows), patches


def _projections(model, images, layer, table, patches, k, rf, batch_size) -> np.ndarray:
    """Deconvnet projection of each top unit (signal = its activation), cut to its field."""
    idx = np.array(table["index"].to_numpy())
    proj = deconvnet(
        model,
        images[torch.as_tensor(idx)],
        layer=layer,
        channel=table["channel"].to_numpy(),
        unit=table[["row", "col"]].to_numpy() if rf is not None else None,
        signal="activation",
        batch_size=min(batch_size, 64),
    )
    projections = np.empty_like(patches)
    for t, (i, j) in enumerate(table[["row", "col"]].to_numpy()):
        ci, rank = divmod(t, k)
        projections[ci, rank] = rf.patch(proj[t], int(i), int(j)) if rf is not None else proj[t]
    return projections
