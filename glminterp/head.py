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
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

Link = Literal["softmax", "sigmoid", "identity"]
LINKS: tuple[str, ...] = ("softmax", "sigmoid", "identity")
PARAMETRIZATIONS: tuple[str, ...] = ("reference", "sum_to_zero", "network")

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
    # torch loads here, not at import: Head and the maps above serve torch-free refits
    from glminterp._head_detect import detect

    return detect(model, example, head=head, link=link, classes=classes, input_hook=input_hook)
