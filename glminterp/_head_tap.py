"""The head's input recorded through a tap on the head's ``forward``, checked where cheapest.

The GLM's regressors are exactly what the head's ``forward`` receives. A forward pre-hook would
see the same tensor, but a hooked module takes torch's slower call path (~2 us a call); a
:class:`~glminterp.hooks.ForwardTap` keeps the plain one. Each batch's input is copied into the
float32 rows before the head runs.

Checking the copied rows finite costs a sum over ``(batch, p)`` values. When the head is a
plain ``nn.Linear`` with fewer outputs than inputs and every input column of its weight holds
a normal, nonzero number, a NaN or infinite input makes its output row non-finite (the premise
of :mod:`glminterp._input_check`: ``w * inf`` is infinite or NaN for ``w != 0`` and the sum
keeps it), so the head's own output, summed right after ``forward`` returns it (``(batch, K)``
values, before anything else can change it), vouches for the float32 input; a non-finite
output (or an input cast to float32) sends the batch to the direct check on its copy.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from glminterp._input_check import _reads_every_input
from glminterp.hooks import ForwardTap, ReusedModuleError, parse_layer, reuse_message


class HeadTap:
    """Record ``spec`` (``"<head>#in"``) into ``rows`` through a tap on the head.

    Parameters
    ----------
    module : nn.Module
        The head (it must pass :func:`glminterp.hooks.can_tap`).
    spec : str
        The layer spec recorded, for messages and ``shapes``.
    rows : Rows
        Where each batch's input goes (``rows.check`` off: this tap checks the batches).
    shapes : dict
        Receives the unit shape of ``spec``.
    """

    __slots__ = ("spec", "rows", "shapes", "calls", "vouch", "tap")

    def __init__(self, module: nn.Module, spec: str, rows, shapes: dict) -> None:
        self.spec, self.rows, self.shapes, self.calls = spec, rows, shapes, 0
        self.vouch = (type(module) is nn.Linear and module.out_features < module.in_features
                      and _reads_every_input(module))
        self.tap = ForwardTap(module, self._make)

    def _make(self, forward):
        rows, shapes, spec, vouch = self.rows, self.shapes, self.spec, self.vouch

        def tapped(*args, **kwargs):
            self.calls += 1
            h = args[0] if args else None
            if self.calls > 1:  # refused after the pass (end_batch)
                return forward(*args, **kwargs)
            if not isinstance(h, torch.Tensor):
                raise TypeError(
                    f"Layer {spec!r} received {type(h).__name__}, not a Tensor; record a "
                    "submodule that returns a tensor."
                )
            if spec not in shapes:
                shapes[spec] = tuple(h.shape[1:])
            kept = rows.write(h)
            if not (vouch and h.dtype is torch.float32):
                rows.check_values(kept)  # before a head that might change its input runs
                return forward(*args, **kwargs)
            out = forward(*args, **kwargs)  # an nn.Linear: it leaves its input as it was
            if not (isinstance(out, torch.Tensor) and math.isfinite(out.sum().item())):
                rows.check_values(kept)  # names nothing yet: the features check does
            return out

        return tapped

    def end_batch(self) -> None:
        """After a forward pass: the head must have run exactly once."""
        calls, self.calls = self.calls, 0
        if calls == 1:
            return
        if calls > 1:
            raise ReusedModuleError(reuse_message(parse_layer(self.spec)[0], calls))
        raise ValueError(f"Layer {self.spec!r} did not run in the forward pass (it ran 0 times).")

    def remove(self) -> None:
        """Restore the head's ``forward`` and drop the wrapper, which refers back to this tap
        (a cycle would keep the rows' buffer alive until the garbage collector runs, so the
        next extraction could not reuse its memory)."""
        self.tap.remove()
        self.tap.wrapper = None
