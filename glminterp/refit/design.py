"""The response, the cluster groups and the network's head, as the refit's design needs them.

Each function does one conversion and refuses bad input with a message naming the argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from glminterp.head import Head

_AUTO_FAMILY = {"softmax": "multinomial", "sigmoid": "binomial", "identity": "gaussian"}


def resolve_family(family: str, head: Head) -> str:
    """The family actually fitted (``"auto"`` follows the head's link)."""
    fam = _AUTO_FAMILY[head.link] if family == "auto" else family
    if fam == "multinomial" and head.n_outputs < 2:
        raise ValueError("family='multinomial' needs at least 2 classes; the head has 1 output.")
    if fam == "binomial" and head.link == "softmax" and head.n_outputs > 2:
        raise ValueError(
            "family='binomial' on a softmax head with more than 2 classes is not the network's "
            "model; use family='multinomial' (the head's own GLM) or 'ovr' (one-vs-rest)."
        )
    return fam


def output_classes(head: Head) -> tuple[str, ...]:
    """Names of the head's outputs (per-output families)."""
    if head.link == "softmax" and head.n_outputs == 2:
        return tuple(head.classes)
    return tuple(head.classes) if len(head.classes) == head.n_outputs else tuple(
        str(i) for i in range(head.n_outputs)
    )


def class_labels(obs: pd.DataFrame, n_classes: int) -> np.ndarray:
    """Integer class indices from ``obs["label"]``; refuses missing, text and fractional labels."""
    lab = obs["label"]
    if lab.isna().any():
        raise ValueError(
            f"{int(lab.isna().sum())} rows have no label; the refit needs labels (pass data "
            "with labels to extract_activations)."
        )
    if not (pd.api.types.is_numeric_dtype(lab) and not pd.api.types.is_bool_dtype(lab)):
        raise TypeError(
            f"labels (acts.obs['label']) must be integer class indices 0..{n_classes - 1}, got "
            f"dtype {lab.dtype} (e.g. {lab.iloc[0]!r}); map class names to indices first."
        )
    raw = lab.to_numpy(dtype=np.float64)
    if not np.isfinite(raw).all() or not np.array_equal(raw, np.round(raw)):
        bad = lab[~np.isfinite(raw) | (raw != np.round(raw))]
        raise ValueError(
            f"labels (acts.obs['label']) must be integral class indices; {len(bad)} rows are not "
            f"(e.g. {bad.iloc[0]!r} for sample {bad.index[0]!r}). Fractional labels are refused "
            "rather than truncated."
        )
    y = raw.astype(np.int64)
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must be class indices 0..{n_classes - 1}; got {y.min()}..{y.max()}.")
    return y


def _gaussian_response(obs: pd.DataFrame, response, k: int) -> np.ndarray:
    if isinstance(response, str) or (
        isinstance(response, Sequence) and all(isinstance(r, str) for r in response)
    ):
        cols = [response] if isinstance(response, str) else list(response)
        missing = [c for c in cols if c not in obs.columns]
        if missing:
            raise KeyError(f"response columns {missing} are not in acts.obs.")
        r = obs[cols].to_numpy(dtype=np.float64)
    elif isinstance(response, (pd.DataFrame, pd.Series)):
        r = pd.DataFrame(response).reindex(obs.index).to_numpy(dtype=np.float64)
    else:
        r = np.asarray(response, dtype=np.float64)
    r = r.reshape(len(obs), -1)
    if r.shape[1] != k or not np.isfinite(r).all():
        raise ValueError(
            f"response must give {k} finite value(s) per row (one per output); got shape "
            f"{r.shape} with {int((~np.isfinite(r)).sum())} non-finite values."
        )
    return r


def build_response(family: str, head: Head, obs: pd.DataFrame, response) -> np.ndarray:
    """Class indices (multinomial) or an ``(N, K)`` response matrix (per-output families);
    see :mod:`glminterp.responses` (multi-label 0/1 and real-valued targets, ``response=``)."""
    from glminterp.responses import build_response as _build  # responses imports this module

    return _build(family, head, obs, response)


def cluster_groups(cov_type: str, cov_kwds: dict | None, obs: pd.DataFrame) -> dict | None:
    """Normalise ``cov_kwds``; cluster groups become integer codes aligned with the rows."""
    if cov_type != "cluster":
        if cov_kwds:
            raise ValueError(f"cov_kwds is only used with cov_type='cluster', not {cov_type!r}.")
        return None
    if not isinstance(cov_kwds, dict) or "groups" not in cov_kwds:
        raise ValueError(
            "cov_type='cluster' needs cov_kwds={'groups': ...}: an obs column name, a Series "
            "indexed by sample id, or one label per row used."
        )
    g = cov_kwds["groups"]
    if isinstance(g, str):
        if g not in obs.columns:
            raise KeyError(f"cov_kwds['groups']={g!r} is not a column of acts.obs.")
        g = obs[g]
    elif isinstance(g, pd.Series):
        g = g.reindex(obs.index)
    elif np.ndim(g) != 1 or len(g) != len(obs):
        raise ValueError(
            f"cov_kwds['groups'] must give one label for each of the {len(obs)} rows used, got "
            f"{np.shape(g)}; pass an obs column name or a Series indexed by sample id."
        )
    g = pd.Series(np.asarray(g), index=obs.index) if not isinstance(g, pd.Series) else g
    if len(g) != len(obs) or g.isna().any():
        raise ValueError(
            f"cov_kwds['groups'] must give one non-missing label for each of the {len(obs)} rows "
            f"({int(g.isna().sum())} missing)."
        )
    codes = pd.factorize(g, sort=True)[0]
    if codes.max() < 1:
        raise ValueError(
            "cov_kwds['groups'] has a single cluster: a cluster-robust covariance needs at least "
            "2 clusters (and many more to be reliable). Use cov_type='HC0' instead."
        )
    out = {k: v for k, v in cov_kwds.items() if k != "groups"}
    out["groups"] = codes
    return out


def network_matrix(head: Head, fam: str) -> tuple[np.ndarray, str | None]:
    """The network's head as a ``(p + 1, K)`` matrix comparable with the refit, or NaN."""
    w = head.coef_matrix()
    if fam == "multinomial" and head.link == "softmax":
        return w, None
    if fam in ("ovr", "binomial") and head.link == "sigmoid":
        return w, None
    if fam in ("ovr", "binomial") and head.link == "softmax" and head.n_outputs == 2:
        # Two-class softmax: logit P(class k) = (w_k - w_other)'x exactly.
        return w - w[:, ::-1], None
    if fam == "gaussian" and head.link == "identity":
        return w, None
    return np.full_like(w, np.nan), (
        f"the network's {head.link} head is not the {fam} model refitted: network weights "
        "are not comparable (NaN) and the agreement test is not defined"
    )
