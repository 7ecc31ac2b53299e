"""Hidden-layer activations of any PyTorch model as pandas DataFrames.

The public entry point is :func:`extract_activations`; it returns an :class:`Activations`
object holding one row per sample (index = sample id) and one column per unit, the network's
outputs per sample (``obs``), the optional full conv maps, and a description of the head.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from glminterp import _extract_checks as chk
from glminterp._frame_strings import constant_strings, default_ids
from glminterp._recording import LayerPlan, Recording, plan_layers, record
from glminterp.data import LabeledImages
from glminterp.head import Head, HeadError, detect_head
from glminterp.hooks import POOLS, model_device
from glminterp.train import warn_model_input_shape


def unit_names(layer: str, n_units: int, conv: bool) -> list[str]:
    """Column names for a layer's units: ``fc1:017`` (dense) or ``conv3:c05`` (pooled channel)."""
    if conv:
        width = max(2, len(str(n_units - 1)))
        return [f"{layer}:c{j:0{width}d}" for j in range(n_units)]
    width = max(3, len(str(n_units - 1)))
    return [f"{layer}:{j:0{width}d}" for j in range(n_units)]


class _LazyFrame:
    """A DataFrame built on first access (extraction returns arrays; pandas costs a fixed
    amount per call that would dominate small, fast models)."""

    __slots__ = ("build",)

    def __init__(self, build) -> None:
        self.build = build

    def __reduce__(self):  # pickle / deepcopy the built frame, not the closure
        return (_built, (self.build(),))


def _built(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


class _LazyField:
    """Data descriptor for a frozen dataclass field that may hold a :class:`_LazyFrame`: the
    first read builds the DataFrame and keeps it."""

    def __init__(self, name: str) -> None:
        self.key = f"_lazy_{name}"

    def __get__(self, obj, owner=None):
        if obj is None:
            raise AttributeError(self.key)  # no class-level default for dataclasses
        value = obj.__dict__[self.key]
        if isinstance(value, _LazyFrame):
            value = value.build()
            obj.__dict__[self.key] = value
        return value

    def __set__(self, obj, value) -> None:
        if self.key in obj.__dict__:
            raise AttributeError("Activations is frozen.")
        obj.__dict__[self.key] = value


@dataclass(frozen=True)
class Activations:
    """Exported activations, one row per sample.

    Attributes
    ----------
    features : DataFrame
        Index ``sample_id``; one float column per unit, grouped by layer in the order asked.
    obs : DataFrame
        Same index: ``label``, ``pred`` (arg-max output), ``split`` and ``prob:<class>`` (the
        network's output after its link), one per output unit. Labels given as an ``(N, K)``
        matrix (multi-label 0/1 targets) or as real numbers (a regression head) are kept as
        ``target:<class>`` float columns instead (``label`` is then missing); they are the
        default response of the binomial / gaussian refit.
    head : Head or None
        The output layer as a GLM (None if no head could be detected; see
        ``metadata["head_error"]``).
    maps : dict of str to ndarray
        ``(N, C, H, W)`` float32 maps of conv layers, when extracted with ``keep_maps=True``.
    layers : tuple of str
    metadata : dict
        Model class, data set, pooling, seed, package versions, and what else was recorded.
    """

    features: pd.DataFrame
    obs: pd.DataFrame
    head: Head | None
    layers: tuple[str, ...]
    metadata: dict = field(default_factory=dict)
    maps: dict[str, np.ndarray] = field(default_factory=dict)

    # ---------------------------------------------------------------- selection
    def columns(self, layer: str) -> list[str]:
        """Feature columns of one layer."""
        if layer not in self.layers:
            raise KeyError(f"layer {layer!r} was not extracted; extracted: {list(self.layers)}.")
        return [c for c in self.features.columns if c.rsplit(":", 1)[0] == layer]

    def head_features(self) -> pd.DataFrame:
        """The head's regressors: the columns of ``head.input_layer``, in the head's order."""
        if self.head is None:
            raise HeadError(
                "No head was detected at extraction: "
                f"{self.metadata.get('head_error', 'unknown reason')}"
            )
        if self.head.input_layer not in self.layers:
            raise KeyError(
                f"The head's input layer {self.head.input_layer!r} was not extracted; extract "
                f"with layers=[{self.head.input_layer!r}, ...] (or layers=None)."
            )
        if self.head.gap and self.metadata.get("pool") != "avg":
            raise ValueError(
                "The head averages its input maps, but the layer was extracted with "
                f"pool={self.metadata.get('pool')!r}; extract with pool='avg' to refit the head."
            )
        cols = self.columns(self.head.input_layer)
        if len(cols) != self.head.n_inputs:
            raise ValueError(
                f"{len(cols)} columns for {self.head.input_layer!r} but the head has "
                f"{self.head.n_inputs} inputs."
            )
        return self.features[cols]

    def subset(self, split: str | Sequence[str] | None = None, ids=None) -> Activations:
        """Rows of one or several splits and/or given sample ids (maps follow the rows)."""
        mask = np.ones(len(self.obs), dtype=bool)
        if split is not None:
            names = [split] if isinstance(split, str) else list(split)
            present = set(self.obs["split"].astype(str))
            unknown = [s for s in names if s not in present]
            if unknown:
                raise ValueError(f"split {unknown} not in the data; present: {sorted(present)}.")
            mask &= self.obs["split"].isin(names).to_numpy()
        if ids is not None:
            mask &= self.obs.index.isin(list(ids))
        return replace(
            self,
            features=self.features.loc[mask],
            obs=self.obs.loc[mask],
            maps={k: v[mask] for k, v in self.maps.items()},
        )

    @property
    def target_columns(self) -> list[str]:
        """Per-output targets ``target:<class>`` (multi-label 0/1 or real-valued responses)."""
        return [c for c in self.obs.columns if c.startswith("target:")]

    @property
    def prob_columns(self) -> list[str]:
        return [c for c in self.obs.columns if c.startswith("prob:")]

    def __len__(self) -> int:
        return len(self.features)

    def __repr__(self) -> str:
        head = "none" if self.head is None else f"{self.head.name} ({self.head.link})"
        return (
            f"Activations({len(self)} samples, {self.features.shape[1]} units from "
            f"{list(self.layers)}, head={head}, splits={self.obs['split'].value_counts().to_dict()})"
        )

    def _repr_html_(self) -> str:
        """Notebook view: the summary line, rows per split, and the first rows of the units."""
        from html import escape

        splits = self.obs["split"].value_counts().rename("rows").to_frame()
        return (f"<p>{escape(repr(self))}</p>" + splits.to_html()
                + self.features.iloc[:5, :8].to_html(float_format=lambda v: f"{v:.4g}"))

    # ---------------------------------------------------------------- I/O
    def _meta_json(self) -> str:
        meta = {
            **self.metadata,
            "layers": list(self.layers),
            "feature_columns": list(self.features.columns),
            "obs_columns": list(self.obs.columns),
            "head": None if self.head is None else self.head.to_dict(),
        }
        return json.dumps(meta, sort_keys=True)

    def to_parquet(self, path: str | Path) -> Path:
        """Write features, obs and metadata to one Parquet file (maps to ``<path>.maps.npz``).

        Written to a temporary file in the same folder and moved into place. The maps sidecar
        is written with the file, or removed if this object has no maps, and the file records
        its content hash, so :meth:`read_parquet` never attaches another write's maps.
        """
        from glminterp._acts_io import write_parquet

        return write_parquet(self, path, self._meta_json())

    @classmethod
    def read_parquet(cls, path: str | Path) -> Activations:
        """Inverse of :meth:`to_parquet`.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If it is not a Parquet file written by :meth:`to_parquet`, has missing, duplicated
            or None/NaN sample ids, or its maps sidecar belongs to another write.
        """
        from glminterp._acts_io import read_parquet

        return read_parquet(cls, path)

    def to_csv(self, folder: str | Path) -> Path:
        """Write ``features.csv``, ``obs.csv`` and ``metadata.json`` into ``folder`` (atomically).

        Only a new, empty or glminterp-written folder is replaced
        (:func:`glminterp.outputs.write_folder`).
        """
        from glminterp.outputs import write_folder

        def fill(tmp: Path) -> None:
            self.features.to_csv(tmp / "features.csv", float_format="%.9g")
            self.obs.to_csv(tmp / "obs.csv", float_format="%.9g")
            (tmp / "metadata.json").write_text(self._meta_json())

        return write_folder(Path(folder), fill)


Activations.features = _LazyField("features")  # type: ignore[assignment]
Activations.obs = _LazyField("obs")  # type: ignore[assignment]


# ------------------------------------------------------------------------------------ data
def _batches(
    data, batch_size: int
) -> tuple[Iterator[tuple[torch.Tensor, torch.Tensor | None, list[str] | None]], int | None, dict]:
    """Normalise the accepted data types to an iterator of (x, labels, ids) batches."""
    info: dict = {}
    if isinstance(data, LabeledImages):
        # LabeledImages checks its ids are unique when it is built
        info = {"dataset": data.name, "classes": data.classes, "split": data.split,
                "unique_ids": True}
        data = (data.images, data.labels, data.ids)
    if isinstance(data, torch.Tensor):
        data = (data, None, None)
    if isinstance(data, (tuple, list)) and len(data) in (2, 3) and isinstance(data[0], torch.Tensor):
        x, y = data[0], data[1]
        ids = None if len(data) == 2 else chk.check_ids(data[2])
        n = x.shape[0]
        if y is not None and len(y) != n:
            raise ValueError(f"data: {n} inputs but {len(y)} labels.")
        if ids is not None and len(ids) != n:
            raise ValueError(f"data: {n} inputs but {len(ids)} ids.")
        # labels and ids are checked (and kept) whole: the batch loop only slices the inputs
        info["labels"] = None if y is None else chk.label_tensor(y).cpu()
        info["ids"] = ids

        def gen():
            for s in range(0, n, batch_size):
                yield x[s : s + batch_size], None, None if ids is None else ids[s : s + batch_size]

        info["whole"] = True
        return gen(), n, info
    if isinstance(data, torch.utils.data.Dataset):
        data = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    if isinstance(data, torch.utils.data.DataLoader):
        loader = data

        def gen_loader():
            for batch in loader:
                if isinstance(batch, torch.Tensor):
                    yield batch, None, None
                elif len(batch) == 2:
                    yield batch[0], batch[1], None
                elif len(batch) == 3:
                    yield batch[0], batch[1], list(chk.check_ids(batch[2]))
                else:
                    raise ValueError(
                        "data: DataLoader batches must be x, (x, y) or (x, y, ids); got "
                        f"{len(batch)} items."
                    )

        try:
            n = len(loader.dataset)  # type: ignore[arg-type]
        except TypeError:
            n = None
        return gen_loader(), n, info
    raise TypeError(
        "data must be a Tensor, an (x, labels[, ids]) tuple, a LabeledImages, a torch Dataset "
        f"or a DataLoader; got {type(data).__name__}."
    )



def _apply_link(logits: torch.Tensor, link: str | None) -> torch.Tensor:
    if link == "softmax":
        if logits.shape[1] <= 32:
            # over the columns of the transpose: for a short last dimension (a few classes)
            # torch's kernel is ~8x slower than the one vectorised across samples; the
            # values agree to an ulp
            return torch.softmax(logits.t().contiguous(), dim=0).t()
        return torch.softmax(logits, dim=1)
    if link == "sigmoid":
        return torch.sigmoid(logits)
    return logits


#: packages whose behaviour the exported numbers depend on
CORE_PACKAGES: tuple[str, ...] = (
    "glminterp", "torch", "numpy", "scipy", "pandas", "statsmodels", "pyarrow",
)


@functools.lru_cache(maxsize=8)
def _package_versions(packages: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    import importlib.metadata as md

    out = []
    for pkg in packages:
        try:
            out.append((pkg, md.version(pkg)))
        except md.PackageNotFoundError:
            out.append((pkg, "not installed"))
    return tuple(out)


def package_versions(packages: tuple[str, ...] = CORE_PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (read once per process and list)."""
    return dict(_package_versions(tuple(packages)))


# ------------------------------------------------------------------------------ extraction
def extract_activations(
    model: nn.Module,
    data,
    layers: str | Sequence[str] | None = None,
    *,
    batch_size: int = 256,
    pool: str = "avg",
    keep_maps: bool = False,
    head: str | None = None,
    link: str | None = None,
    classes: Sequence[str] | None = None,
    split: str | Sequence[str] | pd.Series | None = None,
    progress: bool = True,
    seed: int | None = None,
) -> Activations:
    """Run ``model`` over ``data`` and return the outputs of ``layers`` as DataFrames.

    Parameters
    ----------
    model : nn.Module
    data : Tensor, (x, labels[, ids]) tuple, LabeledImages, Dataset or DataLoader
        Inputs; labels and ids are optional (ids default to ``"0", "1", ...``). Labels are
        class indices ``(N,)``, or per-output targets: an ``(N, K)`` 0/1 matrix (multi-label
        sigmoid head) or real values (regression head), kept as ``obs["target:<class>"]``.
    layers : str or sequence of str, optional
        Module names as in ``model.named_modules()``; ``"name#k"`` is the k-th call of a module
        that runs several times per forward pass (a plain name for such a module raises
        :class:`~glminterp.hooks.ReusedModuleError`), ``"name#in"`` a module's input. Default:
        the head's input layer, i.e. the regressors of the GLM refit, recorded from what the
        head's ``forward`` receives (a wrapper set on the head for the call and removed after
        it, or a forward pre-hook where the head has its own ``forward``) so that they are
        exactly its input.
    batch_size : int
        Rows per forward pass (when ``data`` is not already a DataLoader).
    pool : {"avg", "max"}
        Per-channel pooling of 4-D (conv) outputs. ``"avg"`` reproduces a GAP head's inputs.
    keep_maps : bool
        Also keep the full ``(N, C, H, W)`` maps of conv layers in ``Activations.maps``.
    head, link, classes
        Passed to :func:`glminterp.head.detect_head`. If ``head`` is None and no head can be
        detected, extraction continues with ``Activations.head = None``.
    split : str, sequence or Series, optional
        Split name for every row (a string), per row (a sequence), or by sample id (a Series
        from :func:`glminterp.data.stratified_split`). A ``LabeledImages`` with splits attached
        provides them by default.
    progress : bool
        Show a progress bar over batches.
    seed : int, optional
        Recorded in the metadata (extraction itself is deterministic).

    Returns
    -------
    Activations

    Raises
    ------
    KeyError
        If a layer name is not a module of ``model`` (valid names are listed, closest first).
    """
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r}; use one of {POOLS}.")
    batch_size = chk.check_options(batch_size, keep_maps, progress)
    batches, n_total, info = _batches(data, batch_size)
    device = model_device(model)
    classes = classes if classes is not None else info.get("classes")
    first = _first_batch(batches)
    # called here, not in a helper: its warning points at the caller of this function
    warn_model_input_shape(model, first[0])
    head_desc, head_error = _optional_head(model, first[0].to(device), head, link, classes)
    modules = dict(model.named_modules())
    plan = plan_layers(model, layers, head_desc, head_error, pool, modules)
    whole = info.get("whole", False)
    rec = record(model, plan, first, batches, device, progress, n_total, keep_maps, pool, whole,
                 modules)
    if whole:
        rec.labels, rec.ids = info["labels"], [] if info["ids"] is None else [info["ids"]]
    logits = rec.logit_rows.result()
    n = logits.shape[0]
    ids = _sample_ids(rec.ids, n, info)
    index = _LazyIndex(ids, n)
    values, columns = _feature_values(plan, rec, index)

    out_link = head_desc.link if head_desc is not None else link
    k = logits.shape[1]
    cls_names = _class_names(head_desc, classes, k)
    split_col = _split_column(split, info.get("split"), index, n)
    targets = _targets(rec.labels, n, k)
    metadata = _metadata(model, info, pool, seed, rec)
    if head_error is not None:
        metadata["head_error"] = head_error
        warnings.warn(f"No GLM head detected: {head_error}", stacklevel=2)
    kept = {k2: v.array() for k2, v in rec.maps.items() if v.pos}
    return Activations(
        features=_LazyFrame(
            lambda: pd.DataFrame(values, index=index(), columns=columns(), copy=False)
        ),
        obs=_LazyFrame(
            lambda: _obs_frame(logits, out_link, targets, split_col, index(), cls_names)
        ),
        head=head_desc,
        layers=tuple(plan.names),
        metadata=metadata,
        maps=kept,
    )


def _first_batch(batches):
    """The first batch, checked finite before the head is traced on it."""
    first = next(batches, None)
    if first is None:
        raise ValueError("data is empty.")
    chk.check_finite_inputs(first[0], first[2], 0)
    return first


def _optional_head(model, example, head, link, classes) -> tuple[Head | None, str | None]:
    """The detected head and None, or (when ``head`` was not named) None and why not."""
    try:
        desc = detect_head(model, example, head=head, link=link, classes=classes, input_hook=True)
    except HeadError as e:
        if head is not None:
            raise
        return None, str(e)
    return desc, None


def _sample_ids(ids: list, n: int, info: dict) -> np.ndarray | None:
    """The given ids (checked complete and unique), or None for the default ``"0", "1", ...``
    (built only when a frame needs them)."""
    if not ids:
        return None
    ids = ids[0] if len(ids) == 1 else np.concatenate(ids)
    if len(ids) != n:
        raise ValueError("data: ids were given for some batches only.")
    if not info.get("unique_ids") and len(pd.unique(ids)) != n:
        raise ValueError("data: sample ids are not unique.")
    return ids


def _feature_values(plan: LayerPlan, rec: Recording, index):
    """The ``(N, p)`` feature matrix (checked finite) and a function giving its column names
    (formatted only when a frame needs them); fills in the unit shape of a layer recorded
    through the head's input."""
    shapes = rec.shapes
    blocks, layout = [], []
    finite = True
    for name in plan.names:
        if name == plan.input_layer or name == plan.head_in:
            t = rec.head_rows.result()
            finite = finite and rec.head_rows.finite  # checked batch by batch, in cache
        else:
            t = torch.cat(rec.records[name])
            # a finite sum means every value is finite (torch's sum: ~3x numpy's pairwise one)
            finite = finite and math.isfinite(t.sum().item())
        src = plan.head_in if name == plan.input_layer else name
        if name != src:
            shapes.setdefault(name, shapes[src])
        blocks.append(t.numpy())
        layout.append((name, t.shape[1], len(shapes[name]) == 3))
    values = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)

    def columns() -> list[str]:
        return [c for name, p, conv in layout for c in unit_names(name, p, conv)]

    if not finite:
        chk.check_finite_features(pd.DataFrame(values, index=index(), columns=columns()))
    return values, columns


def _class_names(head_desc: Head | None, classes, k: int) -> list[str]:
    """The head's class names, else ``classes`` when it fits the ``k`` outputs, else 0..k-1."""
    if head_desc is not None and len(head_desc.classes) == k:
        return list(head_desc.classes)
    return [str(c) for c in (classes if classes is not None and len(classes) == k else range(k))]


def _metadata(model, info: dict, pool: str, seed, rec: Recording) -> dict:
    return {
        "model_class": type(model).__name__,
        "dataset": info.get("dataset", "user data"),
        "pool": pool,
        "seed": seed,
        "versions": package_versions(),
        "unit_shapes": {k2: list(v) for k2, v in rec.shapes.items() if k2 in rec.maps},
    }


class _LazyIndex:
    """The ``sample_id`` index (default ``"0", "1", ...``), built once when first needed."""

    def __init__(self, ids: np.ndarray | None, n: int) -> None:
        self.ids, self.n, self._index = ids, n, None

    def __call__(self) -> pd.Index:
        if self._index is None:
            self._index = (default_ids(self.n) if self.ids is None
                           else pd.Index(self.ids, name="sample_id"))
        return self._index


def _targets(labels: torch.Tensor | None, n: int, k: int):
    """Class labels (1-D integral values) or per-output targets: an ``(N, K)`` matrix, or
    real values for a one-output head. Non-integral 1-D labels for several outputs are
    refused (never truncated into class indices)."""
    if labels is None:
        return None
    integral = not labels.is_floating_point() or bool(torch.equal(labels, labels.round()))
    if labels.dim() == 1 and (integral or k > 1):
        return chk.class_indices(labels)
    t = labels.reshape(n, -1).numpy().astype(np.float64)
    if t.shape[1] != k:
        raise ValueError(
            f"labels: per-output targets need one column per output ({k}); got shape "
            f"{tuple(labels.shape)}. Pass class indices (N,) or an (N, {k}) target matrix."
        )
    return t


def _obs_frame(logits, link, targets, split_col, index, cls_names) -> pd.DataFrame:
    probs = _apply_link(logits, link).numpy().astype(np.float64)
    k = probs.shape[1]
    n = len(index)
    per_output = isinstance(targets, np.ndarray) and targets.ndim == 2
    columns = {
        "label": (
            pd.array(targets, dtype="Int64")
            if targets is not None and not per_output
            else pd.arrays.IntegerArray(np.zeros(n, np.int64), np.ones(n, bool))  # all <NA>
        ),
        "pred": probs.argmax(axis=1).astype(np.int64) if k > 1 else (probs[:, 0] > 0.5).astype(np.int64),
        "split": split_col() if callable(split_col) else split_col,
    }
    # one constructor call: inserting column by column copies the frame each time
    parts = [pd.DataFrame(columns, index=index),
             pd.DataFrame(probs, index=index, columns=[f"prob:{c}" for c in cls_names])]
    if per_output:
        parts.append(pd.DataFrame(targets, index=index, columns=[f"target:{c}" for c in cls_names]))
    return pd.concat(parts, axis=1)


def _split_column(split, from_data, index: _LazyIndex, n: int):
    """Split names per row, checked here (built eagerly only for a Series, which needs ids);
    one name for every row is built when the frame is."""
    if split is None:
        if from_data is not None:
            return np.asarray(from_data).astype(str)
        return functools.partial(constant_strings, "all", n)
    if isinstance(split, str):
        return functools.partial(constant_strings, split, n)
    if isinstance(split, pd.Series):
        ids = pd.Index(index())
        missing = ids.difference(split.index)
        if len(missing):
            raise ValueError(f"split: no entry for {len(missing)} sample ids, e.g. {list(missing[:3])}.")
        return split.reindex(ids).to_numpy().astype(str)
    arr = np.asarray(split).astype(str)
    if arr.shape != (n,):
        raise ValueError(f"split: expected {n} names, got shape {arr.shape}.")
    return arr
