"""Helpers shared by the saliency methods: inputs, links, layer capture, GLM coefficient lookup.

Nothing here is a method of its own; each function exists so the method modules agree on how
inputs are accepted, how a network's output becomes a probability, how a layer's output is
captured (with its autograd graph when needed), and how a refit's tidy coefficients are read.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from glminterp.data import LabeledImages
from glminterp.head import LINKS, detect_head
from glminterp.hooks import (
    ReusedModuleError,
    layer_name_error,
    model_guard,
    parse_layer,
    reuse_message,
)

CORRECTIONS: tuple[str, ...] = ("holm", "bh", "none")
COEF_COLUMNS: tuple[str, ...] = ("class", "term", "coef", "se", "z", "p", "p_holm", "p_bh")



def as_images(inputs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Accept a ``(N, C, H, W)`` tensor/array or a :class:`LabeledImages`; return images, labels."""
    if isinstance(inputs, LabeledImages):
        return inputs.images.float(), inputs.labels.long()
    if isinstance(inputs, np.ndarray):
        inputs = torch.from_numpy(inputs)
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(
            f"inputs must be a (N, C, H, W) tensor/array or LabeledImages, got {type(inputs).__name__}."
        )
    if inputs.dim() != 4:
        raise ValueError(
            f"inputs must have shape (N, C, H, W), got {tuple(inputs.shape)}; add the batch "
            "dimension with inputs[None] for one image."
        )
    return inputs.float(), None


def resolve_link(model: nn.Module, example: torch.Tensor, link: str | None) -> str:
    """The model's inverse link: the argument, or what :func:`detect_head` finds."""
    if link is not None:
        if link not in LINKS:
            raise ValueError(f"link={link!r} is not known; use one of {LINKS} or None.")
        return link
    return detect_head(model, example[:1], input_hook=True).link


def apply_link(logits: torch.Tensor, link: str) -> torch.Tensor:
    """Network output after its inverse link (softmax over dim 1, sigmoid, or identity)."""
    if link == "softmax":
        return torch.softmax(logits, dim=1)
    if link == "sigmoid":
        return torch.sigmoid(logits)
    return logits


def get_module(model: nn.Module, name: str, *, argument: str = "layer") -> nn.Module:
    """Module by name, with the package's helpful KeyError listing close names."""
    name = parse_layer(name)[0] if name else name  # "relu#2" / "fc#in" name the module relu / fc
    modules = dict(model.named_modules())
    if not name or name not in modules:
        raise layer_name_error(name, model, argument=argument)
    return modules[name]


class _StopForward(Exception):
    """Raised inside a hook to end a forward pass once the wanted layer has run."""


def _spec_module(model: nn.Module, layer: str):
    base, kind, call = parse_layer(layer)
    module = get_module(model, base)
    parent = base.rpartition(".")[0]
    return base, kind, call, module, (get_module(model, parent) if parent else model)


def capture_layer(
    model: nn.Module, x: torch.Tensor, layer: str, *, stop: bool = True
) -> torch.Tensor:
    """Output of ``layer`` on ``x``, with its autograd graph if grad mode is on.

    ``layer`` may name a call (``"layer1.0.relu#2"``) or a module's input (``"fc#in"``). A
    plain name whose module runs twice before its enclosing module returns raises
    :class:`~glminterp.hooks.ReusedModuleError` (ResNet's ``BasicBlock.relu``). With
    ``stop=True`` the forward pass ends once the layer's enclosing module has returned (layers
    after it are never run), which saves time and works for models whose later layers need
    other inputs.
    """
    base, kind, call, module, parent = _spec_module(model, layer)
    store: dict[str, torch.Tensor] = {}
    calls = [0]

    def keep(value):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"Layer {layer!r} returned {type(value).__name__}, not a Tensor.")
        store["out"] = value

    def hook(mod, inputs, output=None):
        calls[0] += 1
        if call is None and calls[0] > 1:
            raise ReusedModuleError(reuse_message(base, calls[0]))
        if calls[0] == (call or 1):
            keep(inputs[0] if kind == "in" else output)
            if stop and call is not None:
                raise _StopForward

    def parent_done(mod, inputs, output):
        if stop and "out" in store:
            raise _StopForward

    handles = [
        module.register_forward_pre_hook(hook) if kind == "in" else module.register_forward_hook(hook)
    ]
    if parent is not model:
        handles.append(parent.register_forward_hook(parent_done))
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    if "out" not in store:
        raise ValueError(f"Layer {layer!r} did not run in the forward pass of the model.")
    return store["out"]


def forward_with_layer(
    model: nn.Module, x: torch.Tensor, layer: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model output and ``layer``'s output (a detached copy) from one forward pass (``#k`` and
    ``#in`` specs as in :func:`capture_layer`; a reused module by plain name is refused)."""
    base, kind, call, module, _ = _spec_module(model, layer)
    store: dict[str, torch.Tensor] = {}
    calls = [0]

    def hook(mod, inputs, output=None):
        calls[0] += 1
        if call is None and calls[0] > 1:
            raise ReusedModuleError(reuse_message(base, calls[0]))
        if calls[0] == (call or 1):
            value = inputs[0] if kind == "in" else output
            store["out"] = value.detach().clone()  # copy before any later in-place op

    handle = (module.register_forward_pre_hook(hook) if kind == "in"
              else module.register_forward_hook(hook))
    try:
        out = model(x)
    finally:
        handle.remove()
    if "out" not in store:
        raise ValueError(f"Layer {layer!r} did not run in the forward pass of the model.")
    return out, store["out"]


def eval_mode(model: nn.Module) -> model_guard:
    """Context manager: eval mode while inside; flags, ``requires_grad``, gradients and buffers
    restored on exit (:class:`glminterp.hooks.model_guard`, shared by every method)."""
    return model_guard(model)


# ---------------------------------------------------------------------------- GLM lookup
def unit_index(term: str) -> int:
    """Unit position from a column name: ``"act1:017" -> 17``, ``"relu3:c05" -> 5``."""
    tail = str(term).rsplit(":", 1)[-1]
    digits = tail[1:] if tail[:1] == "c" else tail
    if not digits.isdigit():
        raise ValueError(f"Cannot read a unit index from term {term!r} (expected 'layer:017').")
    return int(digits)


def coefficient_table(refit: Any) -> pd.DataFrame:
    """The tidy coefficient table of a refit (a ``RefitResult`` or an equivalent DataFrame)."""
    table = refit.coefficients if hasattr(refit, "coefficients") else refit
    if not isinstance(table, pd.DataFrame):
        raise TypeError(
            "refit must be a RefitResult (from glminterp.refit_output_layer) or its "
            f"`coefficients` DataFrame, got {type(refit).__name__}."
        )
    missing = [c for c in COEF_COLUMNS if c not in table.columns]
    if missing:
        raise KeyError(f"The coefficient table lacks columns {missing}; is it a refit's table?")
    return table


def class_coefficients(refit: Any, cls: Any, *, correction: str = "holm") -> pd.DataFrame:
    """Unit rows (intercept dropped) of one class, with ``p_adj`` for the chosen correction.

    Parameters
    ----------
    refit : RefitResult or DataFrame
        The refit, or its tidy ``coefficients`` table.
    cls : str or int
        A class label. For a ``RefitResult`` in the reference parametrization the baseline
        class is read from its sum-to-zero table (``coefficient_table("sum_to_zero")``); a bare
        DataFrame must contain the class.
    correction : {"holm", "bh", "none"}
        Which adjusted p-value decides significance (the refit corrects across all unit
        coefficients of all classes).
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction={correction!r}; use one of {CORRECTIONS}.")
    table = coefficient_table(refit)
    classes = list(dict.fromkeys(table["class"].astype(str)))
    key = str(cls)
    if key not in classes and hasattr(refit, "coefficient_table"):
        # the reference parametrization's baseline: read every class from the centred table
        table = refit.coefficient_table("sum_to_zero")
        classes = list(dict.fromkeys(table["class"].astype(str)))
    if key not in classes:
        raise KeyError(
            f"class {cls!r} has no coefficients in the refit (classes: {classes}). In the "
            "reference parametrization the baseline class is not a column; refit with "
            "parametrization='sum_to_zero' to see every class."
        )
    rows = table[(table["class"].astype(str) == key) & (table["term"] != "const")].copy()
    rows["unit"] = [unit_index(t) for t in rows["term"]]
    rows["p_adj"] = rows["p"] if correction == "none" else rows[f"p_{correction}"]
    return rows.reset_index(drop=True)


def significant_units(
    refit: Any, cls: Any, *, alpha: float = 0.05, correction: str = "holm"
) -> tuple[np.ndarray, np.ndarray]:
    """Units whose coefficient for ``cls`` is significantly positive / negative after correction.

    Returns
    -------
    positive, negative : ndarray of int
        Unit indices (positions in the head's input), sorted by z (largest |z| first).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}.")
    rows = class_coefficients(refit, cls, correction=correction)
    sig = rows["p_adj"] < alpha
    pos = rows[sig & (rows["coef"] > 0)].sort_values("z", ascending=False)
    neg = rows[sig & (rows["coef"] < 0)].sort_values("z", ascending=True)
    return pos["unit"].to_numpy(dtype=int), neg["unit"].to_numpy(dtype=int)
