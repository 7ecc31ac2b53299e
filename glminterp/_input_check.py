"""Where extraction checks that its inputs are finite, at the least cost that stays exact.

A direct check sums each batch (a finite sum means every value is finite). That is one more
pass over the inputs: for a small model it costs as much as a fifth of the forward pass, so
extraction places it where it is cheapest without losing a case:

``"linear"``
    The first layer is an ``nn.Linear`` that reads the batch itself (a view of the same
    memory, every element: ``Flatten -> Linear``), and every input column of its weight holds
    a normal, nonzero number. Then a NaN or infinite input makes that layer's output row
    non-finite (``w * inf`` is infinite or NaN for ``w != 0``, NaN times anything is NaN,
    and the sum keeps it), so checking the layer's output (``(n, hidden)``, in cache) is
    exact. When the output is not finite, the direct check runs and names the rows.
``"after"``
    The direct check right after the forward pass, while the batch is in cache.
``"before"``
    The direct check before the forward pass: used when the model changes its input in
    place (its version counter moved on the first batch); a batch that is an inference
    tensor (no version counter: e.g. collated by a DataLoader under inference mode) is
    always checked before, since afterwards its values might no longer be the inputs.

The mode is chosen on the first batch, which is always checked directly before the head is
traced; a later batch that breaks the premise (changed in place, the layer not reading it)
is checked directly, and checking moves to ``"before"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.modules import module as _module

from glminterp.hooks import ForwardTap


def version(x: torch.Tensor) -> int | None:
    """The tensor's version counter (bumped by in-place ops), None for inference tensors."""
    try:
        return x._version
    except RuntimeError:
        return None


def _reads_all_of(t, x: torch.Tensor) -> bool:
    """``t`` is ``x`` or a view of exactly its elements (e.g. ``x.flatten(1)``)."""
    return (
        isinstance(t, torch.Tensor)
        and x.is_contiguous()
        and t.is_contiguous()
        and t.numel() == x.numel()
        and t.data_ptr() == x.data_ptr()
        and t.dtype == x.dtype
    )


def _plain_linear(m: nn.Module) -> bool:
    """An ``nn.Linear`` whose call nothing alters: no hooks, no replaced ``forward`` (and no
    global module hooks)."""
    if type(m) is not nn.Linear or m._forward_hooks or m._forward_pre_hooks:
        return False
    return not ("forward" in m.__dict__ or _module._global_forward_hooks
                or _module._global_forward_pre_hooks)


def _reads_every_input(m: nn.Linear) -> bool:
    """Every input column of the weight holds a normal, nonzero number: the largest ``|w|`` of
    each column is at least the smallest normal (checked only for the layer chosen: reading
    every weight of a large model would cost more than it saves). A NaN weight fails it."""
    w = m.weight.detach()
    tiny = torch.finfo(w.dtype).tiny
    if w.device.type == "cpu" and w.dtype in (torch.float32, torch.float64):
        wn = w.numpy()  # numpy's column reduction is ~2x torch's on a small weight
        # np.maximum propagates NaN (a NaN column fails, as ``abs(nan) >= tiny`` does)
        return bool((np.maximum(wn.max(axis=0), -wn.min(axis=0)) >= tiny).all())
    return bool((w.abs().amax(dim=0) >= tiny).all())


class InputCheck:
    """Per-extraction state: which mode, and the hook of the ``"linear"`` mode.

    Parameters
    ----------
    model : nn.Module
    check : callable
        ``check(x, ids, start)``: the direct check, raising with the rows' ids.
    """

    def __init__(self, model: nn.Module, check: Callable) -> None:
        self.model, self.direct = model, check
        self.mode: str | None = None  # decided by the first batch
        self._handles: list = []
        self._x: torch.Tensor | None = None  # the batch the model is reading
        self._seen = False  # the layer read ``_x`` and gave a finite output
        self._checked = False  # this batch was checked before its forward pass
        self._candidates: dict[nn.Module, list[bool]] = {}  # per call: read all of the batch

    # ------------------------------------------------------------------ first batch
    def probe(self) -> None:
        """Before the first batch: watch plain Linear layers for one that reads the batch."""
        for m in self.model.modules():
            if _plain_linear(m):
                self._handles.append(m.register_forward_hook(self._probe_hook))

    def _probe_hook(self, module, inputs, output) -> None:
        reads = bool(inputs) and self._x is not None and _reads_all_of(inputs[0], self._x)
        self._candidates.setdefault(module, []).append(reads)

    def decide(self, x: torch.Tensor, v: int | None) -> None:
        """After the first batch's forward pass: choose the mode for the rest."""
        self.remove()
        if v is None or version(x) != v:
            self.mode = "before"
            return
        once = [m for m, calls in self._candidates.items() if calls == [True]]
        once = once[:1] if once and _reads_every_input(once[0]) else []
        self.mode = "linear" if once else "after"
        if once:  # a tap, not a hook: the hooked call path would cost ~2 us a batch
            self._handles.append(ForwardTap(once[0], self._checked_forward))

    def _checked_forward(self, forward: Callable) -> Callable:
        """The chosen layer's ``forward``, noting whether it read all of the batch and gave a
        finite output (summed as it returns, in cache)."""

        def tapped(*args, **kwargs):
            out = forward(*args, **kwargs)
            self._seen = (
                bool(args)
                and self._x is not None
                and _reads_all_of(args[0], self._x)
                and isinstance(out, torch.Tensor)
                and math.isfinite(out.sum().item())
            )
            return out

        return tapped

    # ------------------------------------------------------------------ every batch
    def before(self, x: torch.Tensor, ids, start: int, first: bool) -> int | None:
        """Called before a batch's forward pass with the tensor the model will read; checks
        it now in ``"before"`` mode or when its version cannot be tracked."""
        self._x, self._seen = x, False
        v = version(x)
        self._checked = not first and (self.mode == "before" or v is None)
        if self._checked:
            self.direct(x, ids, start)
        return v

    def after(self, x: torch.Tensor, ids, start: int, v: int | None, first: bool) -> None:
        """Called after a batch's forward pass."""
        if first:
            self.decide(x, v)
        elif not self._checked:
            moved = version(x) != v
            if moved or not (self.mode == "linear" and self._seen):
                self.direct(x, ids, start)  # names the rows, if any input is not finite
            if moved:
                self.mode = "before"
                self.remove()
        self._x = None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
