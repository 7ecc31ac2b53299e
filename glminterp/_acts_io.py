"""Reading and writing :class:`~glminterp.activations.Activations` files, with their checks.

A Parquet file holds the features, ``obs.*`` columns and a JSON metadata record; conv maps go
to a ``<name>.maps.npz`` sidecar that is written or removed together with the file. The
metadata records the sidecar's content hash (maps and sample ids), so a sidecar left from
another write is never attached to the wrong rows.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from glminterp._io import atomic_write
from glminterp.outputs import check_output_file, clean_stale_files, locked_folder

META_KEY = b"glminterp"
OBS_PREFIX = "obs."
_MAPS_KEY = "maps_sidecar"


def maps_path(path: Path) -> Path:
    """The maps sidecar of a Parquet file: ``acts.parquet`` -> ``acts.maps.npz``."""
    return path.with_suffix(".maps.npz")


def maps_hash(maps: dict[str, np.ndarray], ids) -> str:
    """SHA-256 of the maps (names, dtypes, shapes, values) and of the row ids they belong to."""
    h = hashlib.sha256()
    for name in sorted(maps):
        arr = np.ascontiguousarray(maps[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    h.update("\0".join(str(i) for i in ids).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------- write
def write_parquet(acts, path: str | Path, meta_json: str) -> Path:
    """Write ``acts`` to ``path`` (and its sidecar, or remove a stale one), each atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = check_output_file(Path(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    side = maps_path(path)
    meta = json.loads(meta_json)
    meta[_MAPS_KEY] = (
        {"file": side.name, "sha256": maps_hash(acts.maps, acts.features.index),
         "layers": sorted(acts.maps)}
        if acts.maps else None
    )
    table_df = pd.concat([acts.features, acts.obs.add_prefix(OBS_PREFIX)], axis=1).reset_index()
    table = pa.Table.from_pandas(table_df, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), META_KEY: json.dumps(meta, sort_keys=True).encode()}
    )
    with locked_folder(path):
        for target in (path, side):
            clean_stale_files(target)  # temporaries of a killed write
        if acts.maps:  # sidecar first: the file's record is what a reader trusts
            atomic_write(side, lambda p: np.savez(p, **acts.maps), suffix=".npz")
        atomic_write(path, lambda p: pq.write_table(table, p))
        if not acts.maps:
            side.unlink(missing_ok=True)  # an older write's maps must not outlive it
    return path


# ---------------------------------------------------------------------------- read
def _read_table(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise FileNotFoundError(
            f"activations file {path} does not exist; write one with `glminterp extract` "
            "or Activations.to_parquet."
        )
    if path.is_dir():
        raise IsADirectoryError(f"activations file {path} is a folder; pass the .parquet file.")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        if isinstance(e, PermissionError):
            raise
        raise ValueError(
            f"{path} is not a readable Parquet file ({e}); pass a file written by "
            "`glminterp extract` or Activations.to_parquet."
        ) from e


def _metadata(path: Path, table) -> dict:
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ValueError(f"{path} has no glminterp metadata; was it written by to_parquet?")
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{path}: the glminterp metadata is not valid JSON ({e}).") from e
    missing = [k for k in ("feature_columns", "obs_columns", "layers", "head") if k not in meta]
    if not isinstance(meta, dict) or missing:
        raise ValueError(f"{path}: the glminterp metadata lacks {missing}; rewrite the file.")
    return meta


def _check_ids(path: Path, ids: pd.Series) -> pd.Index:
    null = ids.isna().to_numpy()
    if null.any():
        raise ValueError(
            f"{path}: column sample_id has {int(null.sum())} missing (None/NaN) ids, at rows "
            f"{np.flatnonzero(null)[:5].tolist()}; every row needs a unique id."
        )
    index = pd.Index(ids.astype(str), name="sample_id")
    if not index.is_unique:
        dup = index[index.duplicated()].unique()
        raise ValueError(
            f"{path}: column sample_id has {len(dup)} duplicated ids (e.g. {list(dup[:5])}); "
            "each sample must appear once, or the refit counts it twice."
        )
    return index


def read_parquet(cls, path: str | Path):
    """Inverse of :func:`write_parquet`, refusing files whose rows or maps cannot be trusted."""
    path = Path(path)
    table = _read_table(path)
    meta = _metadata(path, table)
    df = table.to_pandas()
    feat_cols, obs_cols = meta.pop("feature_columns"), meta.pop("obs_columns")
    need = ["sample_id", *feat_cols, *(OBS_PREFIX + c for c in obs_cols)]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing[:5]} its metadata lists; rewrite it.")
    df.index = _check_ids(path, df["sample_id"])
    features = df[feat_cols].astype(np.float32)
    obs = df[[OBS_PREFIX + c for c in obs_cols]]
    obs.columns = obs_cols
    head = meta.pop("head")
    layers = tuple(meta.pop("layers"))
    record = meta.pop(_MAPS_KEY, "legacy")
    maps = _read_maps(path, record, features, meta.get("pool"))
    from glminterp.head import Head

    return cls(features=features, obs=obs, head=None if head is None else Head.from_dict(head),
               layers=layers, metadata=meta, maps=maps)


def _read_maps(path: Path, record, features: pd.DataFrame, pool) -> dict[str, np.ndarray]:
    side = maps_path(path)
    if record is None or not side.is_file():
        if record not in (None, "legacy"):
            warnings.warn(f"{path} was written with maps, but {side} is missing; maps={{}}.",
                          stacklevel=3)
        return {}  # written without maps: a sidecar beside it is not this file's
    try:
        with np.load(side) as npz:
            maps = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{side} is not a readable maps file ({e}); delete it or rewrite "
                         f"{path.name} with its maps.") from e
    if record != "legacy":
        if maps_hash(maps, features.index) != record.get("sha256"):
            raise ValueError(
                f"{side} does not belong to {path.name} (its content hash differs from the "
                "one the Parquet file records); rewrite both with Activations.to_parquet."
            )
        return maps
    _check_legacy_maps(path, side, maps, features, pool)
    return maps


def _check_legacy_maps(path, side, maps, features, pool) -> None:
    """Files written before the hash: row counts must match, and channel means the features."""
    for name, arr in maps.items():
        cols = [c for c in features.columns if c.rsplit(":", 1)[0] == name]
        ok = arr.shape[0] == len(features)
        if ok and pool == "avg" and arr.ndim == 4 and len(cols) == arr.shape[1]:
            ok = np.allclose(arr.mean(axis=(2, 3)), features[cols].to_numpy(), rtol=1e-4, atol=1e-5)
        if not ok:
            raise ValueError(
                f"{side} does not belong to {path.name}: its maps of {name!r} do not match the "
                "file's rows; delete the sidecar or rewrite both with Activations.to_parquet."
            )
