"""The output layer ("head") of a network, read as a GLM, and its parametrizations.

A head is one ``nn.Linear`` whose output goes through a known inverse link (softmax, sigmoid or
identity). Its inputs are the regressors of the GLM. This module finds the head in a model
(:func:`detect_head`), describes it (:class:`Head`), and converts weight matrices between the
network's own (unidentified, for softmax) parametrization and the identified ones used by the
refit (:func:`to_reference`, :func:`to_sum_to_zero`, :func:`reference_to_sum_to_zero_map`).

Conventions used across the package
-----------------------------------
Coefficient matrices are ``(p + 1, K')`` arrays with the intercept in row 0 and one column per
class (``K' = K - 1`` in the reference parametrization, ``K`` otherwise). The network's head is
stored as ``weight`` ``(K, p)`` and ``bias`` ``(K,)`` like ``nn.Linear``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import nn

from glminterp.hooks import layer_name_error, model_device, model_guard

Link = Literal["softmax", "sigmoid", "identity"]
LINKS: tuple[str, ...] = ("softmax", "sigmoid", "identity")
PARAMETRIZATIONS: tuple[str, ...] = ("reference", "sum_to_zero", "network")

_LINK_MODULES: dict[type, str] = {
    nn.Softmax: "softmax",
    nn.LogSoftmax: "softmax",
    nn.Sigmoid: "sigmoid",
}
# Modules that pass units through unchanged (in eval mode): the head's input is owned by the
# layer before them.
_GLUE = (nn.Flatten, nn.Identity, nn.Dropout, nn.AdaptiveAvgPool2d, nn.AvgPool2d)


class HeadError(ValueError):
    """The output layer could not be found or is not a GLM-shaped head."""


@dataclass(frozen=True)
class Head:
    """Description of a network's output layer as a GLM.

    Attributes
    ----------
    name : str
        Module name of the ``nn.Linear`` head (as in ``model.named_modules()``).
    weight : ndarray, shape (K, p)
        The head's weight matrix (float64 copy).
    bias : ndarray, shape (K,)
        The head's bias (zeros if the layer has none).
    link : {"softmax", "sigmoid", "identity"}
        Inverse link applied to the head's output.
    link_source : str
        How the link was determined (module after the head, model attribute, user argument, or
        the logits convention), so that a report can say so.
    input_layer : str
        Module whose output feeds the head. For a global-average-pooling head this is the
        convolutional layer whose channel means are the head's inputs (``gap=True``).
    gap : bool
        True if the head's inputs are spatial means of ``input_layer``'s feature maps, so that
        class activation maps are defined.
    classes : tuple of str
        Class labels, one per output unit (``("0", ..., "K-1")`` unless given). A one-output
        sigmoid head models P(label = 1): given two names it keeps the second.
    """

    name: str
    weight: np.ndarray = field(repr=False)
    bias: np.ndarray = field(repr=False)
    link: str
    link_source: str
    input_layer: str
    gap: bool = False
    classes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_outputs(self) -> int:
        """Number of output units K."""
        return int(self.weight.shape[0])

    @property
    def n_inputs(self) -> int:
        """Number of regressors p."""
        return int(self.weight.shape[1])

    def coef_matrix(self) -> np.ndarray:
        """Return the head as a ``(p + 1, K)`` matrix, intercept (bias) in row 0."""
        return np.vstack([self.bias[None, :], self.weight.T])

    def params(self, parametrization: str = "reference") -> np.ndarray:
        """The network's head in an identified parametrization.

        Parameters
        ----------
        parametrization : {"reference", "sum_to_zero", "network"}
            ``"reference"`` gives ``w_k - w_0`` for k = 1..K-1 (statsmodels' MNLogit layout,
            softmax only); ``"sum_to_zero"`` gives ``w_k - mean_j w_j`` (softmax only);
            ``"network"`` gives the raw weights. For sigmoid and identity heads every
            parametrization is the raw weights (they are identified).

        Returns
        -------
        ndarray, shape (p + 1, K') with the intercept in row 0.
        """
        w = self.coef_matrix()
        if self.link != "softmax" or parametrization == "network":
            _check_parametrization(parametrization)
            return w
        if parametrization == "reference":
            return to_reference(w)
        if parametrization == "sum_to_zero":
            return to_sum_to_zero(w)
        _check_parametrization(parametrization)
        raise AssertionError("unreachable")  # pragma: no cover

    def to_dict(self) -> dict:
        """JSON-serialisable form (for Parquet metadata and reports)."""
        return {
            "name": self.name,
            "weight": self.weight.tolist(),
            "bias": self.bias.tolist(),
            "link": self.link,
            "link_source": self.link_source,
            "input_layer": self.input_layer,
            "gap": self.gap,
            "classes": list(self.classes),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Head:
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=d["name"],
            weight=np.asarray(d["weight"], dtype=np.float64),
            bias=np.asarray(d["bias"], dtype=np.float64),
            link=d["link"],
            link_source=d["link_source"],
            input_layer=d["input_layer"],
            gap=bool(d["gap"]),
            classes=tuple(d["classes"]),
        )


def _check_parametrization(parametrization: str) -> None:
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"parametrization={parametrization!r} is not known; use one of {PARAMETRIZATIONS}."
        )


def to_reference(w: np.ndarray) -> np.ndarray:
    """Reference-class parametrization of a ``(p + 1, K)`` softmax coefficient matrix.

    ``beta[:, k - 1] = w[:, k] - w[:, 0]`` for k = 1..K-1 (class 0 is the baseline, as in
    statsmodels' MNLogit with sorted labels).
    """
    w = np.asarray(w, dtype=np.float64)
    return w[:, 1:] - w[:, :1]


def to_sum_to_zero(w: np.ndarray) -> np.ndarray:
    """Sum-to-zero (centred) parametrization: ``gamma[:, k] = w[:, k] - mean_j w[:, j]``.

    Accepts either a full ``(p + 1, K)`` matrix or is applied after :func:`reference_to_full`.
    """
    w = np.asarray(w, dtype=np.float64)
    return w - w.mean(axis=1, keepdims=True)


def reference_to_full(beta: np.ndarray) -> np.ndarray:
    """Prepend the baseline's zero column: ``(p + 1, K - 1) -> (p + 1, K)``."""
    beta = np.asarray(beta, dtype=np.float64)
    return np.hstack([np.zeros((beta.shape[0], 1)), beta])


def reference_to_sum_to_zero_map(n_classes: int) -> np.ndarray:
    """The ``(K, K - 1)`` matrix ``C`` with ``gamma = beta @ C.T``.

    With ``beta`` of shape ``(p + 1, K - 1)`` (reference parametrization) the centred
    coefficients are ``gamma = beta @ C.T`` of shape ``(p + 1, K)``: row ``k`` of ``C`` is
    ``e_k - 1/K`` restricted to classes 1..K-1 (``e_0`` is the zero vector for the baseline).
    For the covariance of the vectorised coefficients (Fortran order, statsmodels' layout)
    use :func:`vec_map` with this matrix.
    """
    k = int(n_classes)
    if k < 2:
        raise ValueError(f"n_classes must be at least 2, got {k}.")
    full = np.vstack([np.zeros((1, k - 1)), np.eye(k - 1)])  # (K, K-1): beta -> full
    return full - full.mean(axis=0, keepdims=True)


def vec_map(class_map: np.ndarray, n_terms: int) -> np.ndarray:
    """Lift a class map ``C`` (K_out, K_in) to vectorised coefficients.

    If ``B`` is ``(n_terms, K_in)`` and ``G = B @ C.T``, then in Fortran order
    ``vec(G) = kron(C, I_n_terms) @ vec(B)``; so ``Cov(vec G) = L Cov(vec B) L.T`` with the
    returned ``L``.
    """
    return np.kron(np.asarray(class_map, dtype=np.float64), np.eye(int(n_terms)))


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


class _Record(NamedTuple):
    name: str
    module: nn.Module
    inputs: tuple
    output: object
    call: int  # 1-based call number of this module within the forward pass


def _trace(model: nn.Module, example: torch.Tensor) -> tuple[list[_Record], dict[str, int]]:
    """One eval-mode forward pass recording every named module's (inputs, output) per call, in
    completion order (a container completes after its children), and each module's call count."""
    records: list[_Record] = []
    calls: dict[str, int] = {}
    handles = []

    def make_hook(name: str):
        def hook(module, inputs, output):
            calls[name] = calls.get(name, 0) + 1
            out = output.detach().clone() if isinstance(output, torch.Tensor) else output
            ins = tuple(i.detach().clone() if isinstance(i, torch.Tensor) else i for i in inputs)
            records.append(_Record(name, module, ins, out, calls[name]))

        return hook

    with model_guard(model):
        try:
            for name, module in model.named_modules():
                if name:
                    handles.append(module.register_forward_hook(make_hook(name)))
            with torch.inference_mode():
                model(example)
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
    x_in = head_inputs[0].reshape(head_inputs[0].shape[0], -1).double()
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
        if flat.shape == x_in.shape and torch.allclose(flat.double(), x_in, rtol=1e-6, atol=1e-7):
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


def detect_head(
    model: nn.Module,
    example: torch.Tensor,
    *,
    head: str | None = None,
    link: str | None = None,
    classes: list[str] | tuple[str, ...] | None = None,
    input_hook: bool = False,
) -> Head:
    """Find and describe the output layer of ``model``.

    The head is the last ``nn.Linear`` executed in a forward pass on ``example`` (or the module
    named ``head``). Its link is, in order of precedence: the ``link`` argument; an
    ``nn.Softmax``/``nn.LogSoftmax``/``nn.Sigmoid`` executed after the head; a
    ``glminterp_link`` attribute on the model; otherwise logits are assumed to feed a softmax
    (``CrossEntropyLoss`` convention) if the head has two or more outputs, and a sigmoid
    (``BCEWithLogitsLoss``) if it has one. ``link_source`` records which rule applied.

    Parameters
    ----------
    model : nn.Module
    example : Tensor
        A small batch of valid inputs (one row is enough).
    head : str, optional
        Module name of the head, to override detection.
    link : {"softmax", "sigmoid", "identity"}, optional
    classes : sequence of str, optional
        Class labels (defaults to ``"0"..."K-1"``).
    input_hook : bool
        If the head's input is not the output of a named module (a functional op such as
        ``F.relu`` or ``torch.flatten`` computes it in ``forward``), describe it as
        ``"<head>#in"``: the input of the head itself, recorded by a forward pre-hook.
        Otherwise such a head raises :class:`HeadError`.

    The input layer is the innermost module whose output is the head's input (or, for a
    global-average-pooling head, whose channel means are). A module that runs more than once
    per forward pass (ResNet's reused ``BasicBlock.relu``) is passed over for its enclosing
    block (``layer2.1``) when that returns the same tensor, else named with its call
    (``relu#2``, see :func:`glminterp.hooks.parse_layer`).

    Raises
    ------
    HeadError
        If no Linear layer runs, the named module is not a Linear, something other than a
        link function follows the head, or the head's input cannot be traced to a layer.
    """
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
    w = head_module.weight.detach().to("cpu", torch.float64).numpy().copy()
    b = (
        head_module.bias.detach().to("cpu", torch.float64).numpy().copy()
        if head_module.bias is not None
        else np.zeros(k)
    )
    return w, b


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
