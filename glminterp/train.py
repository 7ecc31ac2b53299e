"""Seeded, deterministic CPU training and safe checkpoint I/O."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from glminterp.data import LabeledImages


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[torch.Generator]:
    """Seed torch and switch on deterministic algorithms for the block, then restore.

    Yields a ``torch.Generator`` seeded with ``seed`` for shuffling.
    """
    prev = torch.are_deterministic_algorithms_enabled()
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    try:
        yield torch.Generator().manual_seed(seed)
    finally:
        torch.use_deterministic_algorithms(prev)
        torch.set_rng_state(state)


@dataclass(frozen=True)
class TrainingHistory:
    """What training did: per-epoch loss/accuracy and the ids of the rows it saw."""

    curve: pd.DataFrame
    train_ids: tuple[str, ...]
    config: dict = field(default_factory=dict)


OPTIMIZERS: tuple[str, ...] = ("adam", "adamw")
SCHEDULES: tuple[str | None, ...] = (None, "onecycle", "cosine")
AUGMENTS: tuple[str | None, ...] = (None, "shift", "affine")


def _loss_fn(link: str, label_smoothing: float = 0.0) -> nn.Module:
    if link == "softmax":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if link == "sigmoid":
        return nn.BCEWithLogitsLoss()
    if link == "identity":
        return nn.MSELoss()
    raise ValueError(f"link={link!r}; use 'softmax', 'sigmoid' or 'identity'.")


def shift_images(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Each image moved by its own random whole-pixel offset in ``[-max_shift, max_shift]``
    (rows and columns drawn from ``gen``), the uncovered border filled with zeros.

    Whole-pixel moves need no interpolation, so the augmented pixels are the data's own values.
    """
    b, _, h, w = x.shape
    m = int(max_shift)
    dy, dx = torch.randint(-m, m + 1, (2, b), generator=gen)
    padded = nn.functional.pad(x, (m, m, m, m))
    rows = torch.arange(h)[None, :] + (m - dy)[:, None]  # (b, h)
    cols = torch.arange(w)[None, :] + (m - dx)[:, None]  # (b, w)
    out = padded[torch.arange(b)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def affine_images(x: torch.Tensor, max_shift: int, gen: torch.Generator, *,
                  degrees: float = 10.0, scale: float = 0.1) -> torch.Tensor:
    """Each image rotated (within ``+-degrees``), scaled (``1 +- scale``) and shifted (within
    ``+-max_shift`` pixels) by its own random draw from ``gen``; bilinear, zeros outside."""
    b, _, h, w = x.shape
    u = torch.rand((4, b), generator=gen, dtype=x.dtype) * 2 - 1
    ang = u[0] * (degrees * torch.pi / 180)
    s = 1 + u[1] * scale
    tx, ty = u[2] * (2 * max_shift / w), u[3] * (2 * max_shift / h)
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False)


def _check_options(epochs, batch_size, optimizer, schedule, augment, label_smoothing) -> None:
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs ({epochs}) and batch_size ({batch_size}) must be positive.")
    for name, value, allowed in (("optimizer", optimizer, OPTIMIZERS),
                                 ("schedule", schedule, SCHEDULES),
                                 ("augment", augment, AUGMENTS)):
        if value not in allowed:
            raise ValueError(f"{name}={value!r}; use one of {allowed}.")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing={label_smoothing}; use a value in [0, 1).")


def _optimizer(model, optimizer, lr, weight_decay, schedule, total_steps):
    cls = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
    opt = cls(model.parameters(), lr=lr, weight_decay=weight_decay)
    if schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps)
    elif schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    else:
        sched = None
    return opt, sched


def _target(link: str, logits: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    if link == "sigmoid":
        return nn.functional.one_hot(yb, logits.shape[1]).to(logits.dtype)
    if link == "identity":
        return yb.to(logits.dtype).reshape(logits.shape)
    return yb


def train_model(
    model: nn.Module,
    data: LabeledImages,
    *,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    link: str | None = None,
    progress: bool = True,
    optimizer: str = "adam",
    schedule: str | None = None,
    label_smoothing: float = 0.0,
    augment: str | None = None,
    max_shift: int = 2,
) -> TrainingHistory:
    """Train ``model`` on ``data`` with Adam (or AdamW), deterministically on the CPU.

    The loss follows the output link (``model.glminterp_link`` unless ``link`` is given):
    cross-entropy for softmax (with ``label_smoothing``), binary cross-entropy on one-hot
    targets for sigmoid outputs, squared error for identity. The model is left in eval mode.

    Parameters
    ----------
    optimizer : {"adam", "adamw"}
        AdamW decouples ``weight_decay`` from the gradient step (Loshchilov & Hutter 2019).
    schedule : {None, "onecycle", "cosine"}
        Learning rate per step: constant ``lr``; one cycle up to ``lr`` and down (Smith &
        Topin 2019); or cosine decay from ``lr`` to 0.
    augment : {None, "shift", "affine"}
        Each training batch is moved at random (seeded): whole-pixel shifts within
        ``max_shift``, or small affine maps (rotation +-10 deg, scale +-10 %, shift within
        ``max_shift``). The rows the network is evaluated on are never augmented.

    Returns
    -------
    TrainingHistory
        ``curve`` has columns epoch, loss, accuracy (on the training rows as trained on:
        augmented when ``augment`` is set).
    """
    _check_options(epochs, batch_size, optimizer, schedule, augment, label_smoothing)
    link = link or getattr(model, "glminterp_link", "softmax")
    loss_fn = _loss_fn(link, label_smoothing)
    x, y = data.images, data.labels
    n = len(data)
    move = {"shift": shift_images, "affine": affine_images}.get(augment)
    rows = []
    with deterministic(seed) as gen:
        opt, sched = _optimizer(model, optimizer, lr, weight_decay, schedule,
                                epochs * -(-n // batch_size))
        bar = tqdm(range(epochs), desc=f"train {type(model).__name__}", disable=not progress)
        for epoch in bar:
            model.train()
            perm = torch.randperm(n, generator=gen)
            total, correct = 0.0, 0
            for start in range(0, n, batch_size):
                idx = perm[start : start + batch_size]
                xb, yb = x[idx], y[idx]
                if move is not None:
                    xb = move(xb, max_shift, gen)
                logits = model(xb)
                loss = loss_fn(logits, _target(link, logits, yb))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                total += float(loss.detach()) * len(idx)
                if link != "identity":
                    correct += int((logits.argmax(1) == yb).sum())
            rows.append({"epoch": epoch + 1, "loss": total / n, "accuracy": correct / n})
            bar.set_postfix(loss=f"{total / n:.4f}")
    model.eval()
    config = _record(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                     seed=seed, link=link, optimizer=optimizer, schedule=schedule,
                     label_smoothing=label_smoothing, augment=augment, max_shift=max_shift)
    return TrainingHistory(pd.DataFrame(rows), tuple(data.ids.tolist()), config)


def _record(*, optimizer: str, schedule, label_smoothing, augment, max_shift, **base) -> dict:
    """The training settings for the history; options left at their defaults are not
    recorded, so plain Adam training records what it always did."""
    config = {**base, "optimizer": {"adam": "Adam", "adamw": "AdamW"}[optimizer]}
    extra = {"schedule": schedule, "label_smoothing": label_smoothing, "augment": augment}
    config.update({k: v for k, v in extra.items() if v})
    if augment:
        config["max_shift"] = max_shift
    return config


@torch.inference_mode()
def accuracy(model: nn.Module, data: LabeledImages, batch_size: int = 512) -> float:
    """Fraction of rows whose arg-max output equals the label."""
    was = model.training
    model.eval()
    try:
        hits = sum(
            int((model(data.images[i : i + batch_size]).argmax(1) == data.labels[i : i + batch_size]).sum())
            for i in range(0, len(data), batch_size)
        )
    finally:
        model.train(was)
    return hits / max(len(data), 1)


def save_checkpoint(
    model: nn.Module, path: str | Path, *, architecture: str,
    input_shape: Sequence[int] | None = None, **config,
) -> Path:
    """Save the state dict plus a JSON sidecar (architecture name and constructor arguments).

    Only tensors are pickled, so :func:`load_checkpoint` can use ``weights_only=True``.
    ``architecture`` must be one of the package's own (:data:`glminterp.models.ARCHITECTURES`),
    since only those can be rebuilt from a name; save any other network with
    ``torch.save(model.state_dict(), path)`` and analyse it with ``glminterp analyze --model
    module:factory --checkpoint path``.
    ``input_shape`` (one input without the batch dimension, e.g. ``(1, 28, 28)``) is recorded
    so that running the model on inputs of another size warns (:func:`check_input_shape`).
    """
    from glminterp.models import ARCHITECTURES

    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"architecture={architecture!r} is not one of glminterp's own ({', '.join(ARCHITECTURES)}), "
            "so the checkpoint could not be rebuilt from its name. Save your network's weights "
            "with torch.save(model.state_dict(), path) and analyse it with `glminterp analyze "
            "--model package.module:factory --checkpoint path` (or gi.Analysis(model, data))."
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    meta = {"architecture": architecture, "config": config}
    if input_shape is not None:
        meta["input_shape"] = [int(d) for d in input_shape]
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return path


def read_checkpoint_sidecar(path: str | Path) -> dict | None:
    """The JSON sidecar of a checkpoint (None if there is none); a broken one is named."""
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return None
    try:
        meta = json.loads(side.read_text())
    except ValueError as e:
        raise ValueError(f"checkpoint sidecar {side} is not valid JSON ({e}); fix or delete it "
                         "and pass --architecture.") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("architecture"), str) \
            or not isinstance(meta.get("config", {}), dict):
        raise ValueError(f"checkpoint sidecar {side} lacks 'architecture' (a name) or 'config' "
                         "(a mapping); rewrite it with save_checkpoint.")
    return meta


def load_checkpoint(path: str | Path, architecture: str | None = None, **config) -> nn.Module:
    """Rebuild a reference architecture and load its weights (``torch.load(weights_only=True)``).

    ``architecture`` and ``config`` default to the JSON sidecar written by
    :func:`save_checkpoint`.

    Raises
    ------
    FileNotFoundError
        If the checkpoint (or, without ``architecture``, its sidecar) does not exist.
    ValueError
        If the file is not a weights-only state dict, or does not fit the architecture.
    """
    from glminterp.models import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (or is not a file).")
    meta = read_checkpoint_sidecar(path)
    if architecture is None:
        if meta is None:
            raise FileNotFoundError(
                f"{path.with_suffix('.json')} not found, so the checkpoint does not name its "
                "architecture: pass architecture=<name> (--architecture on the command line; one "
                "of mlp, zero_one, gap_cnn), or for your own network `glminterp analyze --model "
                f"package.module:factory --checkpoint {path}`."
            )
        architecture, config = meta["architecture"], {**meta.get("config", {}), **config}
    try:
        model = build_model(architecture, **config)
    except TypeError as e:
        raise ValueError(f"architecture {architecture!r} does not take the config {config} "
                         f"recorded for {path} ({e}).") from e
    state = _load_state(path)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"checkpoint {path} does not fit architecture {architecture!r} with config {config} "
            f"({first}); pass the architecture and sizes it was saved with."
        ) from e
    model.eval()
    if meta is not None and meta.get("input_shape") is not None:
        # read by extract_activations, which warns on inputs of another size
        model.glminterp_input_shape = tuple(int(d) for d in meta["input_shape"])
    return model


def _load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise
    except Exception as e:  # noqa: BLE001 - unpickling a foreign file fails in many ways
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"checkpoint {path} is not a weights-only PyTorch state dict ({first}); pass a file "
            "written by save_checkpoint (torch.save(model.state_dict(), path))."
        ) from e
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict; "
                         "save model.state_dict() instead.")
    return state


def check_input_shape(path: str | Path, input_shape: Sequence[int], *, warn: bool = True) -> None:
    """Warn (or raise) when inputs differ from the shape recorded with checkpoint ``path``.

    A model whose size is fixed by its weights (an MLP) cannot run on other sizes: that is a
    ValueError. A convolutional model with global average pooling runs on any size, but its
    features then mean something else: that is a warning (unless ``warn=False``, for callers
    whose extraction warns already: a model from :func:`load_checkpoint` carries the shape).
    """
    meta = read_checkpoint_sidecar(path) or {}
    recorded = meta.get("input_shape")
    if recorded is None:
        return
    recorded, got = tuple(int(d) for d in recorded), tuple(int(d) for d in input_shape)
    if recorded == got:
        return
    n_inputs = (meta.get("config") or {}).get("n_inputs")
    if n_inputs is not None and int(np.prod(got)) != int(n_inputs):
        raise ValueError(f"checkpoint {path} takes inputs of shape {recorded} ({n_inputs} values); "
                         f"the data has shape {got}. Use the data set the model was trained on.")
    if warn:
        _warn_input_shape(f"checkpoint {path}", recorded, got, stacklevel=3)


def _warn_input_shape(what: str, recorded: tuple, got: tuple, stacklevel: int = 2) -> None:
    warnings.warn(
        f"{what} was trained on inputs of shape {recorded}, but the data has shape "
        f"{got}: the network runs, but its features and CAMs describe inputs it never saw. Use "
        "the data set it was trained on.", UserWarning, stacklevel=stacklevel + 1,
    )


def warn_model_input_shape(model: nn.Module, x: torch.Tensor) -> None:
    """Warn if ``x`` differs from the input shape recorded when ``model`` was loaded."""
    recorded = getattr(model, "glminterp_input_shape", None)
    if recorded is not None and tuple(x.shape[1:]) != tuple(recorded):
        _warn_input_shape(f"{type(model).__name__} (from its checkpoint)", tuple(recorded),
                          tuple(x.shape[1:]), stacklevel=3)
