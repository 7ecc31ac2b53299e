"""Finding a network's output layer: one traced forward pass (torch).

Split from :mod:`glminterp.head` so that :class:`~glminterp.head.Head` and the
parametrization maps (numpy only) import without torch: the refit, the engine and Dask
workers use them. :func:`glminterp.head.detect_head` is the public entry point.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from glminterp.head import LINKS, Head, HeadError
from glminterp.hooks import layer_name_error, model_device, model_guard

_LINK_MODULES: dict[type, str] = {
    nn.Softmax: "softmax",
    nn.LogSoftmax: "softmax",
    nn.Sigmoid: "sigmoid",
}
# Modules that pass units through unchanged (in eval mode): the head's input is owned by the
# layer before them.
_GLUE = (nn.Flatten, nn.Identity, nn.Dropout, nn.AdaptiveAvgPool2d, nn.AvgPool2d)


class _Record(NamedTuple):
    name: str
    module: nn.Module
    inputs: tuple
    output: object
    call: int  # 1-based call number of this module within the forward pass


def _trace(model: nn.Module, example: torch.Tensor) -> tuple[list[_Record], dict[str, int]]:
    """One eval-mode forward pass recording every named module's output (and, for the
    ``nn.Linear`` modules that can be the head, its inputs) per call, in completion order (a
    container completes after its children), and each module's call count.

    Runs on a copy of ``example``, so a model that changes its input in place leaves the
    caller's tensor as it was (extraction then runs those rows once, like every other row).
    Outputs are cloned inside the hook: a later in-place op (``ReLU(inplace=True)``) must not
    change what an earlier module returned.
    """
    records: list[_Record] = []
    calls: dict[str, int] = {}
    names = {m: n for n, m in model.named_modules() if n}

    def hook(module, inputs, output):
        name = names[module]
        calls[name] = k = calls.get(name, 0) + 1
        out = output.detach().clone() if isinstance(output, torch.Tensor) else output
        ins = (
            tuple(i.detach().clone() if isinstance(i, torch.Tensor) else i for i in inputs)
            if isinstance(module, nn.Linear)  # only a Linear's inputs are read (the head's)
            else ()
        )
        records.append(_Record(name, module, ins, out, k))

    with model_guard(model):
        handles = []
        try:
            for module in names:
                handles.append(module.register_forward_hook(hook))
            with torch.inference_mode():
                model(example.clone())
        finally:
            for h in handles:
                h.remove()
    return records, calls


def _is_within(name: str, ancestor: str) -> bool:
    return name == ancestor or name.startswith(ancestor + ".")


def _input_layer(
    records: list[_Record], head_idx: int, calls: dict[str, int]
) -> tuple[str | None, bool]:
    """The module whose output (or whose spatial mean: GAP) is the head's input.

    Walking back from the head, the first module whose output matches starts a chain of nested
    modules returning the same tensor (``layer2`` > ``layer2.1`` > ``layer2.1.relu``); the
    innermost one that runs once per forward pass is chosen, else the matching call of the
    innermost (``layer2.1.relu#2``).
    """
    head_inputs = records[head_idx].inputs
    x_raw = head_inputs[0].reshape(head_inputs[0].shape[0], -1)
    x_in = x_raw.double()
    chain: list[_Record] = []
    gap, glue, kind = False, None, None

    def match(out) -> str | None:
        if not isinstance(out, torch.Tensor) or out.shape[0] != x_in.shape[0]:
            return None
        if (
            out.dim() == 4
            and out.shape[1] == x_in.shape[1]
            and out.shape[2] * out.shape[3] > 1
            and torch.allclose(out.double().mean(dim=(2, 3)), x_in, rtol=1e-5, atol=1e-6)
        ):
            return "gap"
        flat = out.reshape(out.shape[0], -1)
        if flat.shape == x_in.shape and (
            torch.equal(flat, x_raw)  # the usual case (the same tensor), without a cast
            or torch.allclose(flat.double(), x_in, rtol=1e-6, atol=1e-7)
        ):
            return "same"
        return None

    head_name = records[head_idx].name
    for rec in reversed(records[:head_idx]):
        if _is_within(head_name, rec.name) or not isinstance(rec.output, torch.Tensor):
            continue  # an ancestor of the head, still running
        if chain:
            if _is_within(rec.name, chain[-1].name) and match(rec.output) == kind:
                chain.append(rec)
                continue
            break
        kind = match(rec.output)
        if kind == "gap":
            chain.append(rec)
            gap = True
            continue
        if isinstance(rec.module, _GLUE):
            if kind == "same" and glue is None and rec.output.dim() == 2:
                glue = rec.name  # the latest 2-D pass-through of the head's exact input
            continue  # pooling/flatten glue: the units are owned by a layer further back
        if kind == "same":
            if rec.output.dim() == 2 or glue is None:
                chain.append(rec)
                continue
            return glue, False  # a 4-D map flattened into the head: the flattened cells
        break  # the first real layer before the head either feeds it or the trace is lost
    if not chain:
        return glue, False  # e.g. Flatten -> Linear: a GLM on the (flattened) model input
    once = [r for r in chain if calls[r.name] == 1]
    if once:
        return once[-1].name, gap
    return f"{chain[-1].name}#{chain[-1].call}", gap


def detect(
    model: nn.Module,
    example: torch.Tensor,
    *,
    head: str | None = None,
    link: str | None = None,
    classes: list[str] | tuple[str, ...] | None = None,
    input_hook: bool = False,
) -> Head:
    """:func:`glminterp.head.detect_head` (documented there)."""
    if link is not None and link not in LINKS:
        raise ValueError(f"link={link!r} is not known; use one of {LINKS} or None for auto.")
    example = example[:2].to(model_device(model))
    records, calls = _trace(model, example)
    head_idx = _head_index(model, records, head)
    head_name, head_module = records[head_idx].name, records[head_idx].module
    k = head_module.out_features
    link_used, source = _head_link(model, records, head_idx, link, k)
    input_layer, gap = _traced_input_layer(records, head_idx, calls, input_hook)
    w, b = _head_weights(head_module, k)
    return Head(
        name=head_name,
        weight=w,
        bias=b,
        link=link_used,
        link_source=source,
        input_layer=input_layer,
        gap=gap,
        classes=_head_classes(classes, link_used, k, head_name),
    )


def _head_index(model: nn.Module, records: list[_Record], head: str | None) -> int:
    """Index in ``records`` of the head: the last call of the module named ``head``, else the
    last ``nn.Linear`` call."""
    if head is not None:
        modules = dict(model.named_modules())
        if head not in modules:
            raise layer_name_error(head, model, argument="head")
        if not isinstance(modules[head], nn.Linear):
            raise HeadError(
                f"head={head!r} is a {type(modules[head]).__name__}, not an nn.Linear; "
                "the GLM reading needs a Linear output layer."
            )
        idx = [i for i, r in enumerate(records) if r.name == head]
        if not idx:
            raise HeadError(f"head={head!r} did not run in the forward pass.")
        return idx[-1]
    linear_idx = [i for i, r in enumerate(records) if isinstance(r.module, nn.Linear)]
    if not linear_idx:
        raise HeadError(
            "No nn.Linear layer runs in the model's forward pass, so there is no GLM head. "
            "Pass head=<module name> if the output layer is a Linear used indirectly."
        )
    return linear_idx[-1]


def _link_after_head(records: list[_Record], head_idx: int) -> tuple[str, str] | None:
    """The link module run after the head (and its description), if any; anything after the
    head other than a link function, Identity, Flatten or Dropout raises."""
    head_name = records[head_idx].name
    # containers that hold the head complete after it: they are not layers after the head
    after = [r for r in records[head_idx + 1 :] if not _is_within(head_name, r.name)]
    found_link = None
    for name, module, *_ in after:
        if type(module) in _LINK_MODULES and found_link is None:
            found_link = (_LINK_MODULES[type(module)], f"module {name!r} ({type(module).__name__})")
        elif type(module) not in (nn.Identity, nn.Flatten, nn.Dropout):
            raise HeadError(
                f"Module {name!r} ({type(module).__name__}) runs after the candidate head "
                f"{head_name!r}; the head must be the last layer. Pass head=<name> explicitly."
            )
    return found_link


def _head_link(
    model: nn.Module, records: list[_Record], head_idx: int, link: str | None, k: int
) -> tuple[str, str]:
    """The head's link and the rule that chose it (see :func:`detect_head`)."""
    found_link = _link_after_head(records, head_idx)
    if link is not None:
        link_used, source = link, "argument link="
    elif found_link is not None:
        link_used, source = found_link
    elif getattr(model, "glminterp_link", None) in LINKS:
        link_used, source = model.glminterp_link, "model attribute glminterp_link"
    elif k >= 2:
        link_used, source = "softmax", "assumed: logits for CrossEntropyLoss (no output activation)"
    else:
        link_used, source = "sigmoid", "assumed: one logit for BCEWithLogitsLoss"
    if link_used == "softmax" and k < 2:
        head_name = records[head_idx].name
        raise HeadError(f"A softmax head needs at least 2 outputs; {head_name!r} has {k}.")
    return link_used, source


def _traced_input_layer(
    records: list[_Record], head_idx: int, calls: dict[str, int], input_hook: bool
) -> tuple[str, bool]:
    """The head's input layer and whether the head averages its maps (GAP), or
    ``"<head>#in"`` with ``input_hook``; raises if it cannot be traced."""
    head_name = records[head_idx].name
    # the latest module (before the head) whose output is the head's input, or whose spatial
    # mean is (global average pooling -> CAM is defined)
    input_layer, gap = _input_layer(records, head_idx, calls)
    if input_layer is None and input_hook:
        input_layer = f"{head_name}#in"  # recorded by a forward pre-hook on the head
    if input_layer is None:
        raise HeadError(
            f"Could not trace the input of head {head_name!r} to a named module: it is computed "
            "by a functional op in forward() (or the head reads the raw input). Wrap that op in "
            "an nn.Module (e.g. nn.Flatten, nn.AdaptiveAvgPool2d, the activation) so its output "
            f"can be recorded, or pass input_hook=True to record the head's input itself "
            f"({head_name + '#in'!r}, what extract_activations does)."
        )
    return input_layer, gap


def _head_weights(head_module: nn.Linear, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Float64 copies of the head's weight ``(K, p)`` and bias ``(K,)`` (zeros if it has none)."""
    b = head_module.bias
    return _float64(head_module.weight), (np.zeros(k) if b is None else _float64(b))


def _float64(t: torch.Tensor) -> np.ndarray:
    """A float64 numpy copy of a parameter (numpy's cast of a CPU float32 one: no dispatch;
    float32 -> float64 is exact either way)."""
    t = t.detach()
    if t.is_cpu and t.dtype in (torch.float32, torch.float64):
        return t.numpy().astype(np.float64)
    return t.to("cpu", torch.float64, copy=True).numpy()


def _head_classes(classes, link_used: str, k: int, head_name: str) -> tuple[str, ...]:
    """Class names for the ``k`` outputs (a one-output sigmoid head takes the positive one)."""
    if classes is None:
        classes = tuple(str(i) for i in range(k)) if link_used != "sigmoid" or k > 1 else ("1",)
    classes = tuple(str(c) for c in classes)
    if link_used == "sigmoid" and k == 1 and len(classes) == 2:
        classes = classes[1:]  # one logit models P(label = 1): its class is the second name
    if link_used != "identity" and len(classes) != k:
        raise HeadError(
            f"classes has {len(classes)} labels but head {head_name!r} has {k} outputs"
            + (" (a one-output sigmoid head takes 1 name, or 2: negative, positive)."
               if link_used == "sigmoid" and k == 1 else ".")
        )
    return classes
