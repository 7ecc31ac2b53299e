"""Refits that do not fit in memory: Parquet shards read chunk by chunk, and Dask clusters.

Both run the same Newton iterations as :mod:`glminterp.engine`; only the sums change place.
Each Newton step needs the log-likelihood, the score ``X1'(Y - P)`` and the Fisher information
``sum_n W_n (x) x_n x_n'``; these are sums over rows, so they are accumulated chunk by chunk
(:func:`fit_multinomial_parquet`, with pyarrow, memory bounded by ``batch_size``) or computed
per block on Dask workers and added up in a tree (:func:`dask_fit_multinomial`), while the driver
(this process) solves for the step. The per-chunk kernels are the engine's, so results equal the
in-memory fit up to the order of floating-point additions (about 1e-12 relative).

Pointing the Dask path at a real cluster
----------------------------------------
Create a ``dask.distributed.Client`` for the cluster before calling (it becomes the default
scheduler), e.g. ``Client("tcp://scheduler:8786")``, or a ``dask_jobqueue.SLURMCluster`` /
``dask_kubernetes`` cluster object passed to ``Client``; or pass ``client=`` explicitly. Build
the design with :func:`dask_arrays_from_parquet` on a path every worker can read (shared file
system or object store URL readable by pyarrow), so shards are read on the workers, and keep
``persist=True`` so each shard is read once, not once per Newton step. Each step ships only the
``(p + 1) x (K - 1)`` coefficients to the workers and brings back one ``((K-1)(p+1))^2`` matrix
per block (summed in a tree): choose blocks of at least a few thousand rows. See
``docs/scaling.md``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from glminterp.engine import (
    BinomialObjective,
    EngineResult,
    MultinomialObjective,
    _check_method,
    _gram_inv,
    _kron_precond,
    _result,
    _solve,
    binomial_fisher_chunk,
    binomial_loglike_grad_chunk,
    multinomial_fisher_chunk,
    multinomial_loglike_grad_chunk,
    multinomial_probs,
    null_start_multinomial,
    symmetrize_upper,
)
from glminterp.outputs import write_folder


# ============================================================================ Parquet shards
def write_parquet_shards(
    data, folder: str | Path, rows_per_shard: int, *, label: str = "label"
) -> list[Path]:
    """Write activations (or any DataFrame) as Parquet shards ``part-00000.parquet``, ...

    Parameters
    ----------
    data : Activations or DataFrame
        For :class:`~glminterp.activations.Activations`, the head's regressors
        (``head_features()``) plus the ``label`` column from ``obs``; a DataFrame is written
        as is (it must hold the ``label`` column for the refit).
    folder : path
        Created (or replaced) atomically.
    rows_per_shard : int
    label : str
        Name of the label column to write for Activations.

    Returns
    -------
    list of Path
        The shard files, in row order.
    """
    if int(rows_per_shard) < 1:
        raise ValueError(f"rows_per_shard must be a positive integer, got {rows_per_shard}.")
    if isinstance(data, pd.DataFrame):
        df = data.reset_index(drop=True)
    elif hasattr(data, "head_features"):
        df = data.head_features().reset_index(drop=True)
        df[label] = data.obs["label"].to_numpy()
    else:
        raise TypeError(f"data must be Activations or a DataFrame, got {type(data).__name__}.")
    folder = Path(folder)
    n = len(df)
    names = [f"part-{i:05d}.parquet" for i in range(len(range(0, max(n, 1), int(rows_per_shard))))]

    def fill(tmp: Path) -> None:
        for i, name in enumerate(names):
            part = df.iloc[i * int(rows_per_shard) : (i + 1) * int(rows_per_shard)]
            pq.write_table(pa.Table.from_pandas(part, preserve_index=False), tmp / name)

    write_folder(folder, fill)
    return [folder / nm for nm in names]


def extract_to_shards(
    model,
    data,
    folder: str | Path,
    *,
    rows_per_shard: int = 10_000,
    label: str = "label",
    progress: bool = True,
    **extract_kwargs,
) -> dict[str, list[Path]]:
    """Stream the head's regressors to Parquet shards, one folder per split, chunk by chunk.

    Extraction runs on ``rows_per_shard`` rows at a time, so memory is bounded by one chunk
    however large the data set; the GLM refit then reads the shards with
    :func:`fit_multinomial_parquet` / :func:`fit_binomial_parquet` (e.g. on
    ``folder / "refit"``) or :func:`dask_arrays_from_parquet`.

    Parameters
    ----------
    model : nn.Module
    data : LabeledImages
        With splits attached (:meth:`~glminterp.data.LabeledImages.with_splits`), or without
        (everything goes to ``folder / "all"``).
    folder : path
        Written atomically: ``<split>/part-00000.parquet, ...`` with the regressors, the
        ``label`` column and ``obs.sample_id``; ``head.json`` describes the head.
    rows_per_shard : int
    label : str
    progress : bool
        One progress bar over chunks.
    **extract_kwargs
        Passed to :func:`glminterp.extract_activations` (``batch_size``, ``head``, ``link``).

    Returns
    -------
    dict of split name to list of Path
    """
    import json

    from tqdm.auto import tqdm

    from glminterp.activations import extract_activations
    from glminterp.data import LabeledImages

    if not isinstance(data, LabeledImages):
        raise TypeError(
            f"data must be a LabeledImages (sliceable, with ids); got {type(data).__name__}."
        )
    if int(rows_per_shard) < 1:
        raise ValueError(f"rows_per_shard must be a positive integer, got {rows_per_shard}.")
    folder = Path(folder)
    written: dict[str, list[str]] = {}

    def fill(tmp: Path) -> None:
        head = None
        starts = range(0, len(data), int(rows_per_shard))
        for start in tqdm(starts, desc="extract to shards", disable=not progress):
            chunk = data.subset(np.arange(start, min(start + int(rows_per_shard), len(data))))
            acts = extract_activations(model, chunk, progress=False, **extract_kwargs)
            head = acts.head
            df = acts.head_features().reset_index(drop=True)
            df[label] = acts.obs["label"].to_numpy(dtype=np.int64)
            df["obs.sample_id"] = acts.obs.index.to_numpy()
            for name, part in df.groupby(acts.obs["split"].to_numpy(), sort=True):
                (tmp / name).mkdir(exist_ok=True)
                fname = f"part-{len(written.setdefault(name, [])):05d}.parquet"
                pq.write_table(pa.Table.from_pandas(part, preserve_index=False), tmp / name / fname)
                written[name].append(fname)
        (tmp / "head.json").write_text(json.dumps(head.to_dict(), sort_keys=True))

    write_folder(folder, fill)
    return {name: [folder / name / f for f in files] for name, files in written.items()}


def shard_files(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """The Parquet files of ``source`` (a folder, one file, or a list of files), sorted."""
    if isinstance(source, (str, Path)):
        p = Path(source)
        files = sorted(p.glob("*.parquet")) if p.is_dir() else [p]
    else:
        files = [Path(f) for f in source]
    if not files:
        raise FileNotFoundError(f"No .parquet files in {source}.")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"Parquet shard(s) not found: {missing}.")
    return files


def _feature_columns(files: list[Path], features, label: str) -> list[str]:
    names = pq.read_schema(files[0]).names
    if label not in names:
        raise KeyError(f"label column {label!r} not in the shards; columns: {names[:10]}...")
    if features is None:
        return [c for c in names if c != label and not c.startswith("obs.")]
    missing = [c for c in features if c not in names]
    if missing:
        raise KeyError(f"feature columns {missing} not in the shards.")
    return list(features)


def _parquet_chunks(files, features, label, batch_size, encode):
    def gen() -> Iterator:
        for f in files:
            pf = pq.ParquetFile(f)
            for batch in pf.iter_batches(batch_size=batch_size, columns=[*features, label]):
                x = np.column_stack(
                    [batch.column(c).to_numpy(zero_copy_only=False) for c in features]
                ).astype(np.float64, copy=False)
                y = batch.column(label).to_numpy(zero_copy_only=False)
                yield x, encode(y), None

    return gen


def _read_labels(files, label) -> np.ndarray:
    return np.concatenate(
        [pq.read_table(f, columns=[label]).column(label).to_numpy() for f in files]
    )


def fit_multinomial_parquet(
    source,
    *,
    label: str = "label",
    features: Sequence[str] | None = None,
    start=None,
    tol: float = 1e-8,
    max_iter: int = 100,
    method: str = "newton",
    batch_size: int = 8192,
) -> EngineResult:
    """Multinomial logit MLE from Parquet shards, accumulating sums batch by batch.

    Parameters
    ----------
    source : folder, file, or list of files
    label : str
        Class label column.
    features : list of str, optional
        Regressor columns (default: every column but the label and ``obs.*`` columns).
    start, tol, max_iter
        As in :func:`glminterp.engine.fit_multinomial`.
    method : {"newton", "newton-cg"}
        ``"newton"`` (default) reads the shards about twice per iteration; ``"newton-cg"``
        reads them once per Fisher-vector product, which pays only when reading is cheap.
    batch_size : int
        Rows per pyarrow record batch (the memory bound).

    Returns
    -------
    EngineResult
        Equal (to about 1e-12) to ``fit_multinomial`` on the concatenated data.
    """
    t0 = time.perf_counter()
    _check_method(method)
    files = shard_files(source)
    feats = _feature_columns(files, features, label)
    classes = np.unique(_read_labels(files, label))
    k = len(classes)
    if k < 2:
        raise ValueError("the label column has fewer than two classes.")
    q = len(feats) + 1

    def encode(y):
        return np.searchsorted(classes, y).astype(np.int64)

    chunks = _parquet_chunks(files, feats, label, batch_size, encode)
    # out of core nothing is cached, except one set of probabilities for the CG preconditioner
    obj = MultinomialObjective(chunks, q, k, cache_probs=method == "newton-cg")
    if start is None:
        codes = encode(_read_labels(files, label))
        b0 = null_start_multinomial(codes, k, q)
    else:
        b0 = np.asarray(start, dtype=np.float64).reshape(q, k - 1, order="F")
    factory = _kron_precond(obj, _gram_inv(chunks)) if method == "newton-cg" else None
    beta, llf, grad, fisher, cov, conv, trace = _solve(
        obj, b0.ravel(order="F"), method, tol, max_iter, 200, factory
    )
    return _result(beta.reshape(q, k - 1, order="F"), cov, fisher, llf, grad, conv, trace,
                   "multinomial", method, obj.n_obs, tuple(classes.tolist()),
                   ("const", *feats), t0)


def fit_binomial_parquet(
    source,
    *,
    label: str = "label",
    features: Sequence[str] | None = None,
    positive=1,
    start=None,
    tol: float = 1e-8,
    max_iter: int = 100,
    batch_size: int = 8192,
) -> EngineResult:
    """Logistic regression of ``label == positive`` from Parquet shards (Newton, batch sums)."""
    t0 = time.perf_counter()
    files = shard_files(source)
    feats = _feature_columns(files, features, label)
    q = len(feats) + 1

    def encode(y):
        return (np.asarray(y) == positive).astype(np.float64)

    chunks = _parquet_chunks(files, feats, label, batch_size, encode)
    obj = BinomialObjective(chunks, q, cache_probs=False)
    if start is None:
        ybar = (encode(_read_labels(files, label)).sum() + 0.5) / (
            len(_read_labels(files, label)) + 1.0)
        b0 = np.zeros(q)
        b0[0] = np.log(ybar / (1 - ybar))
    else:
        b0 = np.asarray(start, dtype=np.float64).ravel()
    beta, llf, grad, fisher, cov, conv, trace = _solve(obj, b0, "newton", tol, max_iter, 0, None)
    return _result(beta, cov, fisher, llf, grad, conv, trace, "binomial", "newton",
                   obj.n_obs, (0, 1), ("const", *feats), t0)


# ============================================================================ Dask
def dask_arrays_from_parquet(
    source, *, label: str = "label", features: Sequence[str] | None = None
):
    """Lazy ``(x, y, feature_names)`` Dask arrays, one block per shard (read on the workers).

    Row counts come from the Parquet footers, so no data is read here.
    """
    import dask
    import dask.array as da

    files = shard_files(source)
    feats = _feature_columns(files, features, label)

    def read_x(f):
        t = pq.read_table(f, columns=feats)
        return np.column_stack([t.column(c).to_numpy() for c in feats]).astype(np.float64)

    def read_y(f):
        return pq.read_table(f, columns=[label]).column(label).to_numpy()

    ydtype = pq.read_table(files[0], columns=[label]).column(label).to_numpy().dtype
    xs, ys = [], []
    for f in files:
        n = pq.ParquetFile(f).metadata.num_rows
        xs.append(da.from_delayed(dask.delayed(read_x)(str(f)), (n, len(feats)), np.float64))
        ys.append(da.from_delayed(dask.delayed(read_y)(str(f)), (n,), ydtype))
    return da.concatenate(xs, axis=0), da.concatenate(ys, axis=0), feats


def _tree_sum(parts):
    """Pairwise sum of delayed partial results (a reduction graph for Dask to schedule)."""
    import dask

    add = dask.delayed(np.add, pure=True)
    while len(parts) > 1:
        parts = [add(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


def _mn_vg_block(x, codes, beta):
    ll, g, _ = multinomial_loglike_grad_chunk(x, codes, beta)
    return np.concatenate([[ll, x.shape[0]], g.ravel(order="F")])


def _mn_fisher_block(x, beta):
    return multinomial_fisher_chunk(x, multinomial_probs(x, beta)[0])


def _bn_vg_block(x, y, beta):
    ll, g, _ = binomial_loglike_grad_chunk(x, y, None, beta)
    return np.concatenate([[ll, x.shape[0]], g])


def _bn_fisher_block(x, beta):
    from scipy.special import expit

    return binomial_fisher_chunk(x, expit(x @ beta[1:] + beta[0]), None)


class _DaskObjective:
    """value_grad/fisher as Dask reductions over row blocks; the driver keeps the iterations."""

    def __init__(self, x, y, q, j, family, compute):
        self._xb = list(x.to_delayed().ravel())
        self._yb = list(y.to_delayed().ravel())
        self.q, self.j, self._family, self._compute = q, j, family, compute
        self.n_params = q * j
        self.n_obs = 0

    def _beta(self, flat):
        return flat.reshape(self.q, self.j, order="F") if self._family == "multinomial" else flat

    def value_grad(self, flat):
        import dask

        fn = _mn_vg_block if self._family == "multinomial" else _bn_vg_block
        beta = self._beta(flat)
        parts = [dask.delayed(fn, pure=True)(xb, yb, beta) for xb, yb in zip(self._xb, self._yb)]
        tot = self._compute(_tree_sum(parts))
        self.n_obs = int(tot[1])
        return float(tot[0]), tot[2:]

    def fisher(self, flat):
        import dask

        fn = _mn_fisher_block if self._family == "multinomial" else _bn_fisher_block
        beta = self._beta(flat)
        parts = [dask.delayed(fn, pure=True)(xb, beta) for xb in self._xb]
        return symmetrize_upper(np.asfortranarray(self._compute(_tree_sum(parts))))


def dask_fit_multinomial(
    x,
    y,
    *,
    family: str = "multinomial",
    client=None,
    start=None,
    tol: float = 1e-8,
    max_iter: int = 100,
    persist: bool = True,
    feature_names: Sequence[str] | None = None,
) -> EngineResult:
    """Newton refit whose sums run on Dask (multinomial, or binomial with ``family``).

    Parameters
    ----------
    x : dask.array or ndarray, shape (n_obs, p)
        Regressors without intercept; row blocks are the unit of work (columns are merged into
        one block).
    y : dask.array or ndarray, shape (n_obs,)
        Class labels (multinomial) or 0/1 (binomial); chunked like ``x`` rows.
    family : {"multinomial", "binomial"}
    client : dask.distributed.Client, optional
        Default: the current default client, or Dask's local scheduler when there is none.
    start, tol, max_iter
        As in :func:`glminterp.engine.fit_multinomial` (full Newton steps on the driver).
    persist : bool
        Keep the blocks in worker memory across iterations (read once).
    feature_names : list of str, optional

    Returns
    -------
    EngineResult
    """
    import dask
    import dask.array as da

    t0 = time.perf_counter()
    if family not in ("multinomial", "binomial"):
        raise ValueError(f"family={family!r}; use 'multinomial' or 'binomial'.")
    x = x if isinstance(x, da.Array) else da.from_array(np.asarray(x, dtype=np.float64),
                                                        chunks=(8192, -1))
    x = x.astype(np.float64).rechunk({1: -1})
    y = y if isinstance(y, da.Array) else da.from_array(np.asarray(y), chunks=(x.chunks[0],))
    if y.chunks[0] != x.chunks[0]:
        y = y.rechunk((x.chunks[0],))
    q = x.shape[1] + 1
    labels = np.asarray(dask.compute(y)[0]) if client is None else np.asarray(client.compute(y).result())
    if family == "multinomial":
        classes = np.unique(labels)
        k = len(classes)
        if k < 2:
            raise ValueError("y has fewer than two classes.")
        yb = y.map_blocks(lambda b: np.searchsorted(classes, b).astype(np.int64), dtype=np.int64)
        codes = np.searchsorted(classes, labels)
        b0 = null_start_multinomial(codes, k, q) if start is None else np.asarray(
            start, dtype=np.float64).reshape(q, k - 1, order="F")
        j, cls = k - 1, tuple(classes.tolist())
    else:
        if not np.all((labels == 0) | (labels == 1)):
            raise ValueError("y must contain only 0 and 1 for family='binomial'.")
        yb = y.astype(np.float64)
        ybar = (labels.sum() + 0.5) / (len(labels) + 1.0)
        b0 = np.zeros(q)
        b0[0] = np.log(ybar / (1 - ybar))
        if start is not None:
            b0 = np.asarray(start, dtype=np.float64).ravel()
        j, cls = 1, (0, 1)
    if persist:
        x, yb = (client.persist([x, yb]) if client is not None else dask.persist(x, yb))

    def compute(obj):
        return client.compute(obj).result() if client is not None else obj.compute()

    obj = _DaskObjective(x, yb, q, j, family, compute)
    beta, llf, grad, fisher, cov, conv, trace = _solve(
        obj, b0.ravel(order="F"), "newton", tol, max_iter, 0, None
    )
    names = tuple(feature_names) if feature_names is not None else tuple(
        f"x{i + 1}" for i in range(q - 1))
    params = beta.reshape(q, j, order="F") if family == "multinomial" else beta
    return _result(params, cov, fisher, llf, grad, conv, trace, family, "newton",
                   obj.n_obs, cls, ("const", *names), t0)


def refit_parquet(source, *, head=None, family: str = "multinomial", parametrization="reference",
                  alpha: float = 0.05, **kwargs):
    """:func:`fit_multinomial_parquet` / :func:`fit_binomial_parquet` as a ``RefitResult``.

    The same results class as an in-memory refit (coefficient table in any parametrization,
    Holm/BH, unit tests, fit statistics, agreement with ``head``); see
    :func:`glminterp.refit.engine_fit.results_from_engine`. ``kwargs`` go to the fit.
    """
    from glminterp.refit.engine_fit import results_from_engine

    if family not in ("multinomial", "binomial"):
        raise ValueError(f"family={family!r}; use 'multinomial' or 'binomial'.")
    fit = fit_multinomial_parquet if family == "multinomial" else fit_binomial_parquet
    er = fit(source, **kwargs)
    return results_from_engine(er, head=head, parametrization=parametrization, alpha=alpha)


def refit_dask(x, y, *, head=None, parametrization="reference", alpha: float = 0.05, **kwargs):
    """:func:`dask_fit_multinomial` as a ``RefitResult`` (the results class of in-memory refits).

    ``x``, ``y``: Dask arrays (e.g. from :func:`dask_arrays_from_parquet`); ``kwargs`` go to the
    fit (``family``, ``client``, ``feature_names``, ...). See
    :func:`glminterp.refit.engine_fit.results_from_engine`.
    """
    from glminterp.refit.engine_fit import results_from_engine

    er = dask_fit_multinomial(x, y, **kwargs)
    return results_from_engine(er, head=head, parametrization=parametrization, alpha=alpha)
