"""Deconvnet projection of a feature map or unit back to pixel space (Zeiler & Fergus 2014).

The projection is a backward pass from the chosen layer with the other activations of the layer
set to zero. Convolutions are undone by their transposed filters (the gradient of a
convolution), max-pooling by its switches (the gradient of max-pooling routes the signal to the
arg-max), and every ``nn.ReLU`` module applies a rule to the backward signal ``R`` given its
forward input ``f``:

- ``"deconvnet"``: ``R * 1[R > 0]`` (Zeiler & Fergus; ``captum.attr.Deconvolution``),
- ``"guided"``: ``R * 1[R > 0] * 1[f > 0]`` (guided backpropagation),
- ``"backprop"``: ``R * 1[f > 0]`` (the plain gradient).

Only ReLUs that are modules are seen (as in captum); a functional ``F.relu`` in ``forward``
keeps its gradient. Biases play no part in a backward pass, as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from glminterp.hooks import model_device
from glminterp.saliency._common import as_images, capture_layer, eval_mode

RULES: tuple[str, ...] = ("deconvnet", "guided", "backprop")
SIGNALS: tuple[str, ...] = ("activation", "ones")


class _ReLURule(torch.autograd.Function):
    """ReLU whose backward pass follows one of :data:`RULES`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rule: str) -> torch.Tensor:
        ctx.rule = rule
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        if ctx.rule == "deconvnet":
            return grad.clamp_min(0), None
        if ctx.rule == "guided":
            return grad.clamp_min(0) * (x > 0), None
        return grad * (x > 0), None


class relu_rule:
    """Context manager replacing every ``nn.ReLU`` output by :class:`_ReLURule` (same value).

    The forward value is unchanged; only the backward pass through each ReLU module differs.
    Hooks are removed on exit, also when the body raises.
    """

    def __init__(self, model: nn.Module, rule: str) -> None:
        if rule not in RULES:
            raise ValueError(f"rule={rule!r}; use one of {RULES}.")
        self.model, self.rule = model, rule
        self.handles: list = []

    def __enter__(self) -> relu_rule:
        def hook(module, inputs, output):
            # An in-place ReLU already overwrote its input with the output; ReLU is idempotent,
            # so recomputing from it gives the same value and the same sign pattern.
            return _ReLURule.apply(inputs[0], self.rule)

        for m in self.model.modules():
            if isinstance(m, nn.ReLU):
                self.handles.append(m.register_forward_hook(hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def _per_image(value: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=int)
    if arr.ndim == 0:
        return np.full(n, int(arr))
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries for {n} images; give one per image.")
    return arr


def deconvnet(
    model: nn.Module,
    inputs: Any,
    *,
    layer: str,
    channel: int | Sequence[int],
    unit: Sequence[int] | np.ndarray | None = None,
    signal: str = "activation",
    rule: str = "deconvnet",
    batch_size: int = 64,
) -> np.ndarray:
    """Project one feature map (or one unit of it) of ``layer`` back to the input.

    Parameters
    ----------
    model : nn.Module
    inputs : Tensor (N, C, H, W) or LabeledImages
    layer : str
        Module name; its output is ``(N, C', h, w)`` (conv) or ``(N, C')`` (dense).
    channel : int or sequence of int
        Feature map (or dense unit) to project, one for all images or one per image.
    unit : (row, col) or array (N, 2), optional
        Project only this spatial position of the map (the paper's single top activation);
        default: the whole map.
    signal : {"activation", "ones"}
        Backward signal placed at the layer: the activations themselves (the paper: "all other
        activations set to zero") or ones (the gradient of the map's sum / of the unit, i.e.
        what ``captum.attr.Deconvolution`` projects for a target).
    rule : {"deconvnet", "guided", "backprop"}
        Backward rule of the ReLU modules (see the module docstring).
    batch_size : int

    Returns
    -------
    ndarray, shape (N, C, H, W)
        The projection in pixel space (float64).
    """
    if signal not in SIGNALS:
        raise ValueError(f"signal={signal!r}; use one of {SIGNALS}.")
    images, _ = as_images(inputs)
    n = images.shape[0]
    channels = _per_image(channel, n, "channel")
    units = None
    if unit is not None:
        u = np.asarray(unit, dtype=int)
        units = np.array(np.broadcast_to(u, (n, 2))) if u.ndim == 1 else u.copy()
        if units.shape != (n, 2):
            raise ValueError(f"unit must be (row, col) or an (N, 2) array, got shape {u.shape}.")
    device = model_device(model)
    out = np.empty(tuple(images.shape), dtype=np.float64)
    with eval_mode(model), relu_rule(model, rule), torch.enable_grad():
        for s in range(0, n, batch_size):
            x = images[s : s + batch_size].to(device).clone().requires_grad_(True)
            act = capture_layer(model, x, layer)
            b = act.shape[0]
            ch = torch.as_tensor(channels[s : s + b], device=act.device)
            if ch.min() < 0 or ch.max() >= act.shape[1]:
                raise ValueError(f"channel must lie in 0..{act.shape[1] - 1} for layer {layer!r}.")
            rows = torch.arange(b, device=act.device)
            sig = torch.zeros_like(act)
            value = act.detach() if signal == "activation" else torch.ones_like(act)
            if units is None:
                sig[rows, ch] = value[rows, ch]
            else:
                if act.dim() != 4:
                    raise ValueError(f"unit= needs a (N, C, h, w) layer; {layer!r} is {act.dim()}-D.")
                ui = torch.as_tensor(units[s : s + b, 0], device=act.device)
                uj = torch.as_tensor(units[s : s + b, 1], device=act.device)
                if ui.min() < 0 or ui.max() >= act.shape[2] or uj.min() < 0 or uj.max() >= act.shape[3]:
                    raise ValueError(f"unit outside the {tuple(act.shape[2:])} map of {layer!r}.")
                sig[rows, ch, ui, uj] = value[rows, ch, ui, uj]
            (grad,) = torch.autograd.grad(act, x, grad_outputs=sig, allow_unused=True)
            if grad is None:
                grad = torch.zeros_like(x)
            out[s : s + b] = grad.detach().cpu().double().numpy()
    return out
