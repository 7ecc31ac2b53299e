"""Checks of what goes into and comes out of an extraction, naming rows, units and arguments.

Kept apart from the extraction loop so that each check is one call there.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from glminterp._validate import check_bool, check_int

_SHOW = 5  # ids / units shown in a message


def check_options(batch_size, keep_maps, progress) -> int:
    """Validate extraction options by type and range; returns ``batch_size`` as an int."""
    check_bool("keep_maps", keep_maps)
    check_bool("progress", progress)
    return check_int("batch_size", batch_size, minimum=1)


def check_ids(ids) -> np.ndarray | None:
    """Sample ids as strings; None / NaN ids are refused (they would become "None" / "nan")."""
    if ids is None:
        return None
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    if isinstance(ids, (np.ndarray, pd.Index, pd.Series)) and ids.dtype.kind in "USiu":
        arr = np.asarray(ids)  # typed strings or integers: no None/NaN (vectorised)
        return arr.copy() if arr.dtype.kind == "U" else arr.astype(str)  # ours: frames are lazy
    raw = list(ids)
    bad = [i for i, v in enumerate(raw)
           if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))]
    if bad:
        raise ValueError(
            f"data: {len(bad)} sample ids are None/NaN (positions {bad[:_SHOW]}); give every "
            "row a unique id, or pass no ids to number the rows."
        )
    return np.asarray([str(v) for v in raw], dtype=object).astype(str)


def label_tensor(y) -> torch.Tensor:
    """Labels as a tensor; strings, NaN/inf and booleans are refused (floats are kept)."""
    try:
        t = torch.as_tensor(np.asarray(y)) if not isinstance(y, torch.Tensor) else y
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"data: labels must be integer class indices 0..K-1 (got {type(y).__name__} that "
            f"torch cannot read: {e}); map class names to indices and pass classes=[names]."
        ) from e
    if t.dtype.is_floating_point and not torch.isfinite(t).all():
        raise ValueError("data: labels hold NaN or inf; every row needs a class index 0..K-1 "
                         "(drop unlabelled rows, or pass no labels).")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"data: labels must be integer class indices, got dtype {t.dtype}.")
    return t


def class_indices(labels: torch.Tensor) -> np.ndarray:
    """Labels as int64 class indices; non-integral values are refused, never truncated."""
    arr = labels.numpy()
    if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
        bad = np.flatnonzero(arr != np.round(arr))
        raise ValueError(
            f"data: labels must be integer class indices 0..K-1; {len(bad)} are not integral "
            f"(e.g. {float(arr[bad[0]]):g} at row {int(bad[0])}), and truncating them would relabel "
            "rows. Pass integer labels."
        )
    return arr.astype(np.int64)


def check_output(out, model) -> torch.Tensor:
    """The model's forward output must be one tensor (the head's output)."""
    if isinstance(out, torch.Tensor):
        return out
    kind = type(out).__name__ + (f" of {len(out)}" if isinstance(out, (tuple, list, dict)) else "")
    raise TypeError(
        f"model: {type(model).__name__}.forward returned a {kind}, not one Tensor; extraction "
        "needs the network's outputs: wrap the model in a Module whose forward returns only "
        "the logits (e.g. model(x)[0])."
    )


def check_finite_inputs(x: torch.Tensor, ids, start: int) -> None:
    """Refuse inputs with NaN/inf, naming the sample ids (or row numbers) that hold them."""
    if not x.is_floating_point() or math.isfinite(x.sum().item()):
        return  # a finite sum means every value is finite (40x cheaper than isfinite(x).all())
    rows = (~torch.isfinite(x.reshape(x.shape[0], -1))).any(dim=1).nonzero().flatten().tolist()
    if rows:  # (else the sum merely overflowed)
        names = [str(ids[r]) if ids is not None else str(start + r) for r in rows]
        raise ValueError(
            f"data: inputs of {len(rows)} rows in this batch hold NaN or inf, sample ids "
            f"{names[:_SHOW]}; remove or impute them before extraction."
        )


def check_finite_features(features: pd.DataFrame) -> None:
    """Refuse activations with NaN/inf, naming the units and sample ids."""
    values = features.to_numpy()
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    units = features.columns[bad.any(axis=0)].tolist()
    rows = features.index[bad.any(axis=1)].tolist()
    raise ValueError(
        f"activations are NaN or inf in {len(units)} units {units[:_SHOW]} for {len(rows)} "
        f"samples, ids {rows[:_SHOW]} (the inputs are finite, so the model overflows there); "
        "check those inputs' scale or the model's weights."
    )
