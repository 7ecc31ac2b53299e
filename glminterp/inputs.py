"""Data an analysis reads: arrays, tensors, Datasets, DataLoaders, image folders, ``.npz``, IDX.

:func:`as_labeled_images` turns any of these into a :class:`~glminterp.data.LabeledImages` (images
``(N, C, H, W)`` float32, integer labels, stable string ids, class names), the one form the
analysis steps use. :func:`load_image_folder` reads a class-per-subfolder folder of PNG/JPEG
files with Pillow; :func:`resolve_splits` attaches a user-given split or the seeded stratified one.

What was done to the pixels (scaling, resizing, per-channel normalisation) is recorded in
``LabeledImages.preprocessing`` so the report can say it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from glminterp.data import DEFAULT_FRACTIONS, LabeledImages, stratified_split

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")


def _ids(name: str, n: int) -> np.ndarray:
    width = len(str(max(n - 1, 0)))
    return np.array([f"{name}-{i:0{width}d}" for i in range(n)], dtype=object).astype(str)


def _as_nchw(x: np.ndarray, argument: str) -> np.ndarray:
    """(N, H, W) -> (N, 1, H, W); (N, H, W, C) with C in 1..4 and H, W > 4 -> (N, C, H, W)."""
    if x.ndim == 2:
        raise ValueError(f"{argument}: flat rows (N, {x.shape[1]}) are not images; reshape to "
                         "(N, C, H, W) (an MLP flattens them itself).")
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        return np.moveaxis(x, -1, 1)  # channels-last arrays (N, H, W, C)
    if x.ndim != 4:
        raise ValueError(f"{argument}: expected images of shape (N, C, H, W), got {x.shape}.")
    return x


def _scale(x: np.ndarray) -> tuple[np.ndarray, str]:
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float32) / np.float32(255.0), "integers divided by 255"
    return x.astype(np.float32), "used as given"


def _classes(labels: np.ndarray, classes: Sequence[str] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer codes 0..K-1 and class names (string labels become codes in sorted order)."""
    if labels.dtype.kind in "USO":
        names = tuple(sorted({str(v) for v in labels.tolist()}))
        if classes is not None:
            names = tuple(str(c) for c in classes)
        lookup = {c: i for i, c in enumerate(names)}
        unknown = sorted({str(v) for v in labels.tolist()} - set(lookup))
        if unknown:
            raise ValueError(f"labels {unknown[:3]} are not in classes={list(names)}.")
        return np.array([lookup[str(v)] for v in labels.tolist()], dtype=np.int64), names
    codes = labels.astype(np.int64)
    if codes.size and codes.min() < 0:
        raise ValueError("labels must be non-negative class indices (or class-name strings).")
    k = int(codes.max()) + 1 if codes.size else 0
    names = tuple(str(c) for c in (classes if classes is not None else range(k)))
    if len(names) < k:
        raise ValueError(f"classes has {len(names)} names but labels go up to {k - 1}.")
    return codes, names


def from_arrays(
    images, labels, *, classes: Sequence[str] | None = None, ids: Sequence[str] | None = None,
    name: str = "arrays", preprocessing: Mapping | None = None,
) -> LabeledImages:
    """Images (tensor or array, ``(N, C, H, W)``, ``(N, H, W)`` or ``(N, H, W, C)``) and labels.

    Integer images are divided by 255; float images are used as given. ``labels`` are class
    indices or class-name strings.
    """
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    x, scaled = _scale(_as_nchw(x, "images"))
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"labels must be one per image: {len(x)} images, labels shape {y.shape}.")
    codes, names = _classes(y, classes)
    ids_arr = _ids(name, len(x)) if ids is None else np.asarray(ids).astype(str)
    prep = {"scaling": scaled, **dict(preprocessing or {})}
    return LabeledImages(images=torch.from_numpy(np.ascontiguousarray(x)),
                         labels=torch.from_numpy(codes), ids=ids_arr, classes=names, name=name,
                         preprocessing=prep)


def _from_loader(loader, classes, name: str) -> LabeledImages:
    xs, ys, ids = [], [], []
    for batch in loader:
        if isinstance(batch, torch.Tensor) or len(batch) < 2:
            raise ValueError("data: a Dataset/DataLoader must yield (image, label) or "
                             "(image, label, id); labels are needed for the refit.")
        xs.append(torch.as_tensor(batch[0]))
        ys.append(torch.as_tensor(batch[1]).reshape(-1))
        if len(batch) >= 3:
            ids.extend(str(i) for i in batch[2])
    if not xs:
        raise ValueError("data: the Dataset/DataLoader is empty.")
    ds_classes = getattr(getattr(loader, "dataset", None), "classes", None)
    return from_arrays(torch.cat(xs), torch.cat(ys), classes=classes or ds_classes,
                       ids=ids or None, name=name)


def load_npz(path: str | Path, *, classes: Sequence[str] | None = None) -> LabeledImages:
    """Images and labels from a ``.npz`` file.

    Arrays: ``x`` / ``images`` / ``X`` and ``y`` / ``labels`` / ``Y``; optional ``classes``
    (names), ``ids`` and ``split`` (one split name per row, attached as given).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"npz file not found: {path}")
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        xk = next((k for k in ("x", "images", "X") if k in keys), None)
        yk = next((k for k in ("y", "labels", "Y") if k in keys), None)
        if xk is None or yk is None:
            raise ValueError(f"{path}: needs arrays 'x' (or 'images') and 'y' (or 'labels'); "
                             f"found {sorted(keys)}.")
        arrays = {k: z[k] for k in keys}
    names = classes if classes is not None else (
        [str(c) for c in arrays["classes"].tolist()] if "classes" in arrays else None)
    ds = from_arrays(arrays[xk], arrays[yk], classes=names, name=path.stem,
                     ids=arrays["ids"] if "ids" in arrays else None,
                     preprocessing={"source": f"npz file {path.name}"})
    if "split" in arrays:
        ds = replace(ds, split=np.asarray(arrays["split"]).astype(str))
    return ds


def load_idx(path: str | Path, labels: str | Path | None = None, *,
             classes: Sequence[str] | None = None) -> LabeledImages:
    """Images from an IDX file (or a folder of the standard MNIST files) and their labels.

    ``path`` is a folder holding ``train-images-idx3-ubyte[.gz]`` and its labels file, or an
    images file; its labels file is ``labels`` or found by replacing ``images`` with
    ``labels`` and ``idx3`` with ``idx1`` in the name.
    """
    from glminterp.data import load_mnist_idx, read_idx

    path = Path(path)
    if path.is_dir():
        return replace(load_mnist_idx(path, "train"), preprocessing={"scaling": "integers divided by 255",
                                                                     "source": f"IDX folder {path.name}"})
    if labels is None:
        guess = path.name.replace("images", "labels").replace("idx3", "idx1")
        labels = path.with_name(guess)
        if guess == path.name or not labels.is_file():
            raise FileNotFoundError(f"no labels file next to {path} (looked for {labels}); "
                                    "give the labels IDX file.")
    return from_arrays(read_idx(path), read_idx(labels), classes=classes, name=path.name.split("-")[0],
                       preprocessing={"source": f"IDX files {path.name}, {Path(labels).name}"})


def load_image_folder(
    path: str | Path, *, size: tuple[int, int] | int | None = None, mode: str | None = None,
    normalize: str | tuple | None = None,
) -> LabeledImages:
    """A class-per-subfolder folder of PNG/JPEG images, read with Pillow.

    Parameters
    ----------
    path : path
        ``path/<class name>/<file>.png|.jpg|.jpeg``; class names are the subfolder names (sorted),
        sample ids ``<class>/<file name>``.
    size : int or (height, width), optional
        Resize every image to this size (bilinear). Default: the most common size; images of
        another size are resized to it (recorded).
    mode : {"RGB", "L"}, optional
        Colour mode. Default: ``"L"`` if every image is grayscale, else ``"RGB"``.
    normalize : None, "per_channel" or (mean, std)
        None: pixels in [0, 1]. ``"per_channel"``: subtract each channel's mean and divide by
        its standard deviation over all images. ``(mean, std)``: the normalisation the network
        was trained with (sequences of one value per channel). Recorded in ``preprocessing``.
    """
    from PIL import Image

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [(c.name, f) for c in class_dirs for f in sorted(c.iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if len(class_dirs) < 2 or not files:
        raise ValueError(f"{root} must hold one subfolder per class (at least two) with "
                         f"{'/'.join(IMAGE_SUFFIXES)} files; found {len(class_dirs)} subfolders "
                         f"and {len(files)} images.")
    opened = [Image.open(f) for _, f in files]
    if mode is None:
        mode = "L" if all(im.mode in ("L", "1", "I;16") for im in opened) else "RGB"
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode={mode!r}; use 'RGB' or 'L'.")
    if isinstance(size, int):
        size = (size, size)
    if size is None:  # the most common size (the first such image's on ties)
        sizes = [(im.height, im.width) for im in opened]
        size = max(dict.fromkeys(sizes), key=sizes.count)
    target = tuple(size)
    resized = sum((im.height, im.width) != target for im in opened)
    arrays = []
    for im in opened:
        im = im.convert(mode)
        if (im.height, im.width) != target:
            im = im.resize((target[1], target[0]), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
        arrays.append(a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0))
        im.close()
    x = np.stack(arrays).astype(np.float32) / np.float32(255.0)
    prep = {"source": f"image folder {root.name} ({len(files)} files, Pillow)", "mode": mode,
            "size": f"{target[0]}x{target[1]}", "resized": f"{resized} of {len(files)} images",
            "scaling": "pixels divided by 255"}
    x, prep["normalization"] = _normalize(x, normalize)
    names = tuple(c.name for c in class_dirs)
    labels = np.array([names.index(c) for c, _ in files], dtype=np.int64)
    ids = np.array([f"{c}/{f.name}" for c, f in files])
    return LabeledImages(images=torch.from_numpy(x), labels=torch.from_numpy(labels), ids=ids,
                         classes=names, name=root.name, preprocessing=prep)


def _normalize(x: np.ndarray, normalize) -> tuple[np.ndarray, str]:
    if normalize is None:
        return x, "none (pixels in [0, 1])"
    if isinstance(normalize, str):
        if normalize != "per_channel":
            raise ValueError(f"normalize={normalize!r}; use None, 'per_channel' or (mean, std).")
        mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
        std = x.std(axis=(0, 2, 3), dtype=np.float64)
    else:
        mean, std = (np.broadcast_to(np.asarray(v, dtype=np.float32), (x.shape[1],))
                     for v in normalize)
    std = np.where(std > 0, std, 1.0)
    out = (x - mean[None, :, None, None]) / std[None, :, None, None]  # float64, then float32
    fmt = ", ".join(f"{m:.4g}/{s:.4g}" for m, s in zip(mean, std))
    return out.astype(np.float32), f"per channel (x - mean) / std, mean/std = {fmt}"


def as_labeled_images(data, *, labels=None, classes: Sequence[str] | None = None,
                      name: str | None = None) -> LabeledImages:
    """Any accepted data source as :class:`LabeledImages`.

    ``data`` is a LabeledImages; an ``(images, labels[, ids])`` tuple of tensors or arrays; an
    images tensor/array with ``labels``; a torch Dataset or DataLoader yielding
    ``(image, label[, id])``; or a path: a folder of class subfolders, a folder of MNIST IDX
    files, a ``.npz`` file, or an IDX images file.
    """
    if isinstance(data, LabeledImages):
        return data if classes is None else replace(data, classes=tuple(str(c) for c in classes))
    if isinstance(data, (str, Path)):
        p = Path(data)
        if p.is_dir() and any(f.name.startswith(("train-images", "t10k-images")) for f in p.iterdir()):
            return load_idx(p, classes=classes)
        if p.is_dir():
            return load_image_folder(p)
        if p.suffix == ".npz":
            return load_npz(p, classes=classes)
        if p.is_file():
            return load_idx(p, labels, classes=classes)
        raise FileNotFoundError(f"data: no such file or folder: {p}")
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        return from_arrays(data[0], data[1], classes=classes, name=name or "arrays",
                           ids=data[2] if len(data) == 3 else None)
    if isinstance(data, (torch.Tensor, np.ndarray)):
        if labels is None:
            raise ValueError("data: images need labels=... (one class per image) for the refit.")
        return from_arrays(data, labels, classes=classes, name=name or "arrays")
    if isinstance(data, torch.utils.data.Dataset):
        data = torch.utils.data.DataLoader(data, batch_size=256, shuffle=False)
    if isinstance(data, torch.utils.data.DataLoader):
        return _from_loader(data, classes, name or type(data.dataset).__name__)
    raise TypeError("data must be LabeledImages, (images, labels) arrays or tensors, a torch "
                    "Dataset or DataLoader, an image folder, a .npz or an IDX file; got "
                    f"{type(data).__name__}.")


def resolve_splits(data: LabeledImages, splits=None, *, seed: int = 0) -> LabeledImages:
    """Attach splits: the data's own, a user-given one, all rows as refit rows, or the seeded one.

    ``splits`` is None (the data's split if it has one, else the seeded stratified split with
    fractions train 0.5 / refit 0.3 / test 0.2); a mapping of fractions (stratified, seeded); a
    Series indexed by sample id; a sequence of split names, one per row; a CSV file with
    columns ``sample_id`` and ``split``; or ``"refit"``: every row is a held-out refit row (the
    network was trained elsewhere on other data).
    """
    if splits is None:
        if data.split is not None:
            return data
        splits = dict(DEFAULT_FRACTIONS)
    if isinstance(splits, str) and splits in ("refit", "all"):
        return replace(data, split=np.full(len(data), "refit"))
    if isinstance(splits, (str, Path)):
        p = Path(splits)
        if not p.is_file():
            raise FileNotFoundError(f"splits: file not found: {p} (a CSV with sample_id, split).")
        frame = pd.read_csv(p, dtype=str)
        if not {"sample_id", "split"} <= set(frame.columns):
            raise ValueError(f"splits: {p} needs columns sample_id and split; has {list(frame.columns)}.")
        splits = frame.set_index("sample_id")["split"]
    if isinstance(splits, Mapping) and not isinstance(splits, pd.Series):
        return data.with_splits(stratified_split(data.labels, data.ids, splits, seed=seed))
    if isinstance(splits, pd.Series):
        return data.with_splits(splits.astype(str))
    arr = np.asarray(splits).astype(str)
    if arr.shape != (len(data),):
        raise ValueError(f"splits: {arr.shape[0] if arr.ndim else 0} names for {len(data)} rows.")
    return replace(data, split=arr)
