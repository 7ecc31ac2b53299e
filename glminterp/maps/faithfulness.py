"""Faithfulness of saliency maps: deletion / insertion curves and average drop / increase.

Definitions followed (and tested equal to torchcam 0.5's ``torchcam.metrics``):

Deletion and insertion (Petsiuk, Das and Saenko 2018, "RISE", BMVC)
    Input locations are ranked by decreasing saliency (the map is resized bilinearly to the
    input, ``align_corners=False``; ties keep raster order, a stable sort). With ``P``
    locations and ``steps`` intervals, ``step = ceil(P / steps)`` and the perturbed counts
    are ``0, step, 2 step, ..., P``. Deletion replaces the top-ranked locations (all channels)
    by a baseline (zeros by default); insertion starts from the baseline and restores them.
    The class score after each step gives a curve over the perturbed fraction; its area is
    the trapezoid rule over the actual fractions. A faithful map has low deletion AUC and high
    insertion AUC. (RISE inserts into a blurred image; pass ``baseline`` for that.)
Average drop and increase in confidence (Chattopadhyay et al. 2018, "Grad-CAM++", WACV)
    The explanation map is ``E = S * x`` with ``S`` the saliency min-max normalised to [0, 1]
    (at its own resolution) and resized to the input. With ``Y`` the class score of ``x``
    and ``O`` that of ``E``: drop = ``max(0, Y - O) / Y`` (``Y + 1e-7`` in the denominator, as
    torchcam) and increase = ``1[Y < O]``; both are averaged over images. They are reported as
    fractions, as torchcam does; the paper reports percentages (multiply by 100).

Scores are the model's outputs after ``score`` (``"softmax"`` by default, the probability the
metrics were defined on). Everything runs in eval mode under ``torch.inference_mode`` with the
model's train/eval flags restored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from glminterp.data import LabeledImages
from glminterp.hooks import model_guard

SCORES: tuple[str, ...] = ("softmax", "sigmoid", "logit")


def _score_fn(score: str | Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    if callable(score):
        return score
    if score == "softmax":
        return lambda t: torch.softmax(t, dim=-1)
    if score == "sigmoid":
        return torch.sigmoid
    if score == "logit":
        return lambda t: t
    raise ValueError(f"score={score!r}; use one of {SCORES} or a callable.")


def _prepare(inputs, saliency, targets) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = inputs.images if isinstance(inputs, LabeledImages) else inputs
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise TypeError("inputs must be a (N, C, H, W) Tensor or LabeledImages.")
    s = torch.as_tensor(np.asarray(saliency))
    if not s.is_floating_point():
        s = s.double()  # float maps keep their dtype: tie order after resizing depends on it
    if s.dim() != 3 or s.shape[0] != x.shape[0]:
        raise ValueError(
            f"saliency must be (N, h, w) with N = {x.shape[0]}; got {tuple(s.shape)}. Use "
            "CAMResult.for_targets(targets) for one map per image."
        )
    t = torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(-1)
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"targets has {t.shape[0]} entries for {x.shape[0]} images.")
    return x, s, t


def _resize(s: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(s.shape[-2:]) == tuple(size):
        return s
    return F.interpolate(s[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def _minmax(s: torch.Tensor) -> torch.Tensor:
    s = s - s.amin(dim=(-2, -1), keepdim=True)
    return s / (s.amax(dim=(-2, -1), keepdim=True) + 1e-8)


class _Scorer:
    """Batched, eval-mode, inference-mode class scores (modes restored on exit)."""

    def __init__(self, model: nn.Module, score, batch_size: int) -> None:
        self.model, self.fn, self.bs = model, _score_fn(score), batch_size
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))

    def __enter__(self) -> _Scorer:
        self._guard = model_guard(self.model)
        self._guard.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._guard.__exit__(*exc)

    def __call__(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        out = []
        with torch.inference_mode():
            for s in range(0, x.shape[0], self.bs):
                sc = self.fn(self.model(x[s : s + self.bs].to(self.device))).double().cpu()
                out.append(sc.gather(1, targets[s : s + self.bs, None]).squeeze(1))
        return torch.cat(out)


@dataclass(frozen=True)
class DeletionInsertion:
    """Deletion and insertion curves of a set of maps.

    Attributes
    ----------
    fractions : ndarray (S + 1,)
        Perturbed fraction of locations at each point.
    deletion, insertion : ndarray (N, S + 1)
        Class score along each curve.
    deletion_auc, insertion_auc : ndarray (N,)
        Trapezoid areas over ``fractions``.
    """

    fractions: np.ndarray
    deletion: np.ndarray = field(repr=False)
    insertion: np.ndarray = field(repr=False)
    deletion_auc: np.ndarray = field(repr=False)
    insertion_auc: np.ndarray = field(repr=False)

    @property
    def summary(self) -> pd.Series:
        """Mean AUCs (lower deletion and higher insertion are more faithful)."""
        return pd.Series(
            {
                "deletion_auc": float(self.deletion_auc.mean()),
                "insertion_auc": float(self.insertion_auc.mean()),
                "n": len(self.deletion_auc),
            }
        )


def deletion_insertion(
    model: nn.Module,
    inputs: torch.Tensor | LabeledImages,
    saliency: np.ndarray,
    targets: Sequence[int] | np.ndarray,
    *,
    steps: int = 20,
    baseline: torch.Tensor | float | None = None,
    score: str | Callable = "softmax",
    batch_size: int = 64,
) -> DeletionInsertion:
    """Deletion and insertion curves and AUCs (Petsiuk et al. 2018; torchcam's definition).

    Parameters
    ----------
    model : nn.Module
    inputs : Tensor (N, C, H, W) or LabeledImages
    saliency : array (N, h, w)
        One map per image (any resolution; resized to the input).
    targets : sequence of int
        Output index whose score is tracked, one per image.
    steps : int
        Number of perturbation intervals.
    baseline : Tensor broadcastable to the inputs, float, or None (zeros)
    score : {"softmax", "sigmoid", "logit"} or callable on the model's output
    batch_size : int
        Perturbed images per forward pass.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be positive.")
    x, s, t = _prepare(inputs, saliency, targets)
    n, size = x.shape[0], tuple(x.shape[-2:])
    base = torch.zeros_like(x) if baseline is None else torch.broadcast_to(
        torch.as_tensor(baseline, dtype=x.dtype), x.shape
    )
    order = torch.argsort(_resize(s, size).flatten(1), dim=1, descending=True, stable=True)
    ranks = torch.argsort(order, dim=1)  # (N, P)
    n_pos = ranks.shape[1]
    step = (n_pos + steps - 1) // steps
    counts = [*range(0, n_pos, step), n_pos]
    fractions = np.array(counts, dtype=np.float64) / n_pos
    flat_x, flat_b = x.flatten(2), base.flatten(2)
    dele = np.empty((n, len(counts)))
    ins = np.empty((n, len(counts)))
    with _Scorer(model, score, batch_size) as scorer:
        for i, cnt in enumerate(counts):
            top = (ranks < cnt)[:, None]  # (N, 1, P): the `cnt` most salient locations
            d_in = torch.where(top, flat_b, flat_x).reshape(x.shape)
            dele[:, i] = scorer(d_in, t).numpy()
            if cnt == n_pos:
                ins[:, i] = scorer(x, t).numpy()
            elif cnt == 0:
                ins[:, i] = scorer(base, t).numpy()
            else:
                ins[:, i] = scorer(torch.where(top, flat_x, flat_b).reshape(x.shape), t).numpy()
    return DeletionInsertion(
        fractions=fractions,
        deletion=dele,
        insertion=ins,
        deletion_auc=np.trapezoid(dele, fractions, axis=1),
        insertion_auc=np.trapezoid(ins, fractions, axis=1),
    )


@dataclass(frozen=True)
class ConfidenceChange:
    """Average drop and increase in confidence, per image.

    Attributes
    ----------
    original, explained : ndarray (N,)
        Class score of the image and of the explanation map ``S * x``.
    drop : ndarray (N,)
        ``max(0, Y - O) / (Y + 1e-7)``.
    increase : ndarray of bool (N,)
        ``Y < O``.
    """

    original: np.ndarray = field(repr=False)
    explained: np.ndarray = field(repr=False)
    drop: np.ndarray = field(repr=False)
    increase: np.ndarray = field(repr=False)

    @property
    def summary(self) -> pd.Series:
        """``avg_drop`` and ``conf_increase`` as fractions (x100 for the paper's percent)."""
        return pd.Series(
            {
                "avg_drop": float(self.drop.mean()),
                "conf_increase": float(self.increase.mean()),
                "n": len(self.drop),
            }
        )


def confidence_change(
    model: nn.Module,
    inputs: torch.Tensor | LabeledImages,
    saliency: np.ndarray,
    targets: Sequence[int] | np.ndarray,
    *,
    score: str | Callable = "softmax",
    batch_size: int = 256,
) -> ConfidenceChange:
    """Average drop / increase in confidence (Chattopadhyay et al. 2018; torchcam's definition).

    ``saliency`` is min-max normalised per image at its own resolution, then resized bilinearly
    to the input and multiplied into it.
    """
    x, s, t = _prepare(inputs, saliency, targets)
    mask = _resize(_minmax(s), tuple(x.shape[-2:])).to(x.dtype)
    with _Scorer(model, score, batch_size) as scorer:
        y = scorer(x, t).numpy()
        o = scorer(mask[:, None] * x, t).numpy()
    return ConfidenceChange(
        original=y, explained=o, drop=np.maximum(y - o, 0) / (y + 1e-7), increase=y < o
    )


def compare_faithfulness(
    model: nn.Module,
    inputs: torch.Tensor | LabeledImages,
    maps: Mapping[str, np.ndarray],
    targets: Sequence[int] | np.ndarray,
    *,
    steps: int = 20,
    baseline: torch.Tensor | float | None = None,
    score: str | Callable = "softmax",
    batch_size: int = 64,
) -> pd.DataFrame:
    """Faithfulness of several saliency maps of the same images, one row per map.

    Parameters
    ----------
    maps : mapping of name to array (N, h, w)
        E.g. ``{"network CAM": ..., "GLM CAM": ..., "significant-only CAM": ...}`` built with
        :meth:`glminterp.maps.cam.CAMResult.for_targets`.

    Returns
    -------
    DataFrame
        Index ``map``; columns ``deletion_auc``, ``insertion_auc``, ``avg_drop``,
        ``conf_increase`` (means over images) and ``n``.
    """
    rows = {}
    for name, sal in maps.items():
        di = deletion_insertion(
            model, inputs, sal, targets, steps=steps, baseline=baseline, score=score,
            batch_size=batch_size,
        )
        cc = confidence_change(model, inputs, sal, targets, score=score, batch_size=batch_size)
        rows[name] = {
            "deletion_auc": di.summary["deletion_auc"],
            "insertion_auc": di.summary["insertion_auc"],
            "avg_drop": cc.summary["avg_drop"],
            "conf_increase": cc.summary["conf_increase"],
            "n": int(di.summary["n"]),
        }
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "map"
    return out
