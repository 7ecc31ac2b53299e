"""The forward passes of an extraction: which modules are hooked, and where their outputs go.

:func:`record` runs every batch once, through an :class:`~glminterp.hooks.ActivationRecorder`
for the layers asked for beside the head's input. The head's input (the GLM's regressors) is
taken from what the head's ``forward`` receives (:mod:`glminterp._head_tap`: a tap, not a
hook, where the module allows one); it and the network's outputs go straight into
preallocated float32 ``(N, p)`` buffers (:class:`Rows`: one copy per batch, no concatenation,
no float64); other layers are pooled inside their hook. Inputs are checked finite where it
costs least (:mod:`glminterp._input_check`); the first batch was checked before the head was
traced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from glminterp import _extract_checks as chk
from glminterp._head_tap import HeadTap
from glminterp._input_check import InputCheck
from glminterp.head import Head, HeadError
from glminterp.hooks import (
    ActivationRecorder,
    can_tap,
    model_guard,
    parse_layer,
    pool_output,
    resolve_layers,
)


@dataclass(frozen=True)
class LayerPlan:
    """The layers asked for and where each is recorded."""

    names: list[str]  # resolved layer names, in the order asked
    head_in: str | None  # "<head>#in" when the head's own input gives the regressors
    input_layer: str | None  # the head's input layer, when ``head_in`` stands in for it
    hooked: list[str]  # the specs the recorder hooks


def plan_layers(model, layers, head_desc: Head | None, head_error, pool: str,
                modules: dict | None = None) -> LayerPlan:
    """Resolve ``layers`` (None: the head's input layer) and choose what to hook."""
    if layers is None:
        if head_desc is None:
            raise HeadError(f"layers=None needs a detectable head: {head_error}")
        layers = [head_desc.input_layer]
    names = resolve_layers(model, layers, modules)
    # the head's regressors are recorded where they are exact: the head's own input (a tap on
    # its forward, or a forward pre-hook); a GAP head's input layer is still hooked for its
    # maps and shape
    head_in = _head_input_spec(head_desc, names, pool)
    input_layer = head_desc.input_layer if head_in is not None else None
    hooked = [n for n in names if n != input_layer or (head_desc.gap and n != head_in)]
    if head_in is not None:
        hooked = list(dict.fromkeys([*hooked, head_in]))
    return LayerPlan(names, head_in, input_layer, hooked)


def _head_input_spec(head: Head | None, names: list[str], pool: str) -> str | None:
    """``"<head>#in"`` when the head's input layer is asked for and its columns are exactly
    the head's input (dense units, or channel means of a GAP head pooled by ``"avg"``)."""
    if head is None or head.input_layer not in names or (head.gap and pool != "avg"):
        return None
    return f"{head.name}#in"


class Rows:
    """Per-batch outputs written into one preallocated float32 buffer, ``(N, p)`` (or
    ``(N, C, H, W)`` for maps, ``flatten=False``): one copy per batch, no concatenation;
    falls back to a list of copies when the row count is not known.

    ``finite`` says whether every value checked so far is finite: with ``check`` each batch is
    summed right after its copy, while it is still in cache (a finite sum means every value is
    finite); without it the caller checks the batches it must (:meth:`check_values`).
    """

    __slots__ = ("n", "pos", "buf", "arr", "parts", "check", "finite", "flatten")

    def __init__(self, n_total: int | None, check: bool = False, flatten: bool = True) -> None:
        self.n, self.pos, self.parts = n_total, 0, []
        self.buf: torch.Tensor | None = None
        self.arr: np.ndarray | None = None  # numpy view of ``buf``
        self.check, self.finite, self.flatten = check, True, flatten

    def write(self, t: torch.Tensor) -> torch.Tensor:
        """Copy a batch in; returns a tensor holding the float32 values written (``t`` itself
        when it is float32), for a check of them (:meth:`check_values`)."""
        b = t.shape[0]
        end = self.pos + b
        flat = t if not self.flatten or t.dim() == 2 else t.reshape(b, -1)
        arr = self.arr
        if arr is None and self.n is not None and not self.parts:
            # torch's allocation, not numpy's: numpy asks for huge pages past 4 MB, and their
            # first touch can stall on memory compaction (0.9 ms a batch seen on a busy machine)
            self.buf = torch.empty((self.n, *flat.shape[1:]), dtype=torch.float32)
            arr = self.arr = self.buf.numpy()
        if arr is not None and end <= self.n and flat.shape[1:] == arr.shape[1:]:
            kept = self._copy(flat, end)
        else:  # more rows than announced: keep what is written and continue with copies
            if self.buf is not None:
                self.parts, self.buf, self.arr, self.n = [self.buf[: self.pos]], None, None, None
            kept = flat.to("cpu", torch.float32, copy=True)
            self.parts.append(kept)
        if self.check and self.finite:  # float32 values: a float64 one past float32's range is inf
            self.finite = math.isfinite(kept.sum().item())
        self.pos = end
        return kept

    def check_values(self, kept: torch.Tensor) -> None:
        """Fold values :meth:`write` returned (still in cache) into ``finite``."""
        if self.finite:
            self.finite = math.isfinite(kept.sum().item())

    def _copy(self, flat: torch.Tensor, end: int) -> torch.Tensor:
        """Copy ``flat`` into rows ``pos:end``; returns a tensor holding the copied values."""
        if flat.dtype is torch.float32 and flat.is_cpu:
            try:  # numpy's copy into a cold buffer is ~1.6x torch's copy_ (no dispatch)
                np.copyto(self.arr[self.pos : end], flat.numpy())
                return flat  # the same float32 values, still in cache
            except (RuntimeError, TypeError):  # a layout numpy cannot view: torch's copy
                pass
        dst = self.buf[self.pos : end]
        dst.copy_(flat)
        return dst

    def result(self) -> torch.Tensor:
        if self.buf is not None:
            return self.buf[: self.pos]
        return torch.cat(self.parts) if self.parts else torch.empty((0, 0))

    def array(self) -> np.ndarray:
        """The rows written, as one numpy array (the buffer itself when it is full)."""
        if self.buf is not None and self.pos == self.n:
            return self.arr
        return self.result().numpy()


@dataclass
class Recording:
    """What the forward passes recorded."""

    records: dict  # pooled outputs per hooked spec (the recorder's ``records``)
    head_rows: Rows
    logit_rows: Rows
    labels: torch.Tensor | None
    ids: list  # per-batch id arrays (empty when no ids were given)
    maps: dict[str, Rows]  # full maps per layer name (written only with ``keep_maps``)
    shapes: dict[str, tuple]


def record(model, plan: LayerPlan, first, batches, device, progress, n_total, keep_maps,
           pool, whole: bool, modules: dict | None = None) -> Recording:
    """Hook ``plan.hooked`` and forward every batch, pooling conv outputs by ``pool``; the
    head's input goes through a tap on the head where one can be set (:mod:`glminterp._head_tap`)."""
    maps = {n: Rows(n_total, flatten=False) for n in plan.names}
    shapes: dict[str, tuple] = {}
    head_in, input_layer = plan.head_in, plan.input_layer
    modules = dict(model.named_modules()) if modules is None else modules
    head_module = None if head_in is None else modules[parse_layer(head_in)[0]]
    tapped = head_module is not None and can_tap(head_module)
    head_rows, logit_rows = Rows(n_total, check=not tapped), Rows(n_total)
    write_head = head_rows.write

    def reduce(name: str, out: torch.Tensor) -> torch.Tensor | None:
        shapes[name] = out.shape[1:]
        if name == head_in:  # straight into its preallocated rows: one copy
            write_head(out)
            return None
        if keep_maps and out.dim() == 4:
            maps[name].write(out)  # into the (N, C, H, W) buffer: one copy, no concatenation
        if name == input_layer:  # hooked for its maps and shape: the head's input has the units
            return None
        return pool_output(out, pool)

    hooked = [s for s in plan.hooked if not (tapped and s == head_in)]
    rec = ActivationRecorder(model, hooked, reduce, modules=modules) if hooked else None
    with rec if rec is not None else model_guard(model):
        tap = HeadTap(head_module, head_in, head_rows, shapes) if tapped else None
        try:
            labels, ids = _run_batches(
                model, rec.forward if rec is not None else model, tap, first, batches, device,
                progress, (head_rows, logit_rows), n_total, whole,
            )
        finally:
            if tap is not None:
                tap.remove()
    shapes = {k: tuple(v) for k, v in shapes.items()}
    records = rec.records if rec is not None else {}
    return Recording(records, head_rows, logit_rows, labels, ids, maps, shapes)


def _run_batches(model, forward, tap, first, batches, device, progress, rows, n_total,
                 whole: bool):
    """Forward every batch (``forward``: the recorder's, or the model); logits and the head's
    input go to ``rows``; returns the labels and ids arrays a loader gave per batch (in-memory
    data holds them whole: nothing to collect)."""
    head_rows, logit_rows = rows
    labels, ids = [], []
    collect_labels = not whole and first[1] is not None
    bar = tqdm(total=n_total, desc="extract", unit="row") if progress else None
    inputs = InputCheck(model, chk.check_finite_inputs)
    inputs.probe()
    write_logits, end_batch = logit_rows.write, tap.end_batch if tap is not None else None
    before, after = inputs.before, inputs.after
    x, y, i = first
    try:
        with torch.inference_mode():
            is_first = True
            while True:
                start, xd = logit_rows.pos, x if x.device == device else x.to(device)
                v = before(xd, i, start, is_first)
                out = forward(xd)
                if end_batch is not None:
                    end_batch()
                after(xd, i, start, v, is_first)
                write_logits(out if isinstance(out, torch.Tensor) else chk.check_output(out, model))
                if head_rows.pos != logit_rows.pos and head_rows.pos:
                    raise ValueError("The head's input and output row counts differ.")
                if collect_labels:
                    labels.append(chk.label_tensor(y))
                if not whole and i is not None:
                    ids.append(np.asarray(i))
                if bar is not None:
                    bar.update(x.shape[0])
                nxt = next(batches, None)
                if nxt is None:
                    break
                (x, y, i), is_first = nxt, False
    finally:
        inputs.remove()
        if bar is not None:
            bar.close()
    return (torch.cat(labels).cpu() if collect_labels else None), ids
