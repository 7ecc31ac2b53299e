"""The response of the refit: what the head's GLM is fitted to, for each family.

One function, :func:`build_response`, turns the rows' ``obs`` (and an optional ``response=``)
into the response array of the refit:

========================  ===========================================  ==========================
family                    default response                             ``response=`` accepts
========================  ===========================================  ==========================
multinomial (softmax)     ``label`` (class indices 0..K-1)             (refused: the labels are
                                                                       the response)
binomial (sigmoid)        ``target:<class>`` 0/1 columns when the      (N, K) 0/1 values (or
                          labels were an (N, K) multi-label matrix;    proportions in [0, 1])
                          else the one-hot coding of ``label``
                          (one output: ``label`` itself, 0/1)
gaussian (identity)       ``target:<class>`` real columns when the     (N, K) finite values
                          labels were real-valued / (N, K); else
                          ``label`` (one output) or its one-hot coding
========================  ===========================================  ==========================

``response`` may be an obs column name (or one name per output), a Series / DataFrame
indexed by sample id, or an array in row order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from glminterp.head import Head
from glminterp.refit.design import class_labels

TARGET_PREFIX = "target:"


def target_columns(obs: pd.DataFrame) -> list[str]:
    """Per-output target columns of ``obs`` (``target:<class>``), in order."""
    return [c for c in obs.columns if str(c).startswith(TARGET_PREFIX)]


def _user_response(response, obs: pd.DataFrame) -> np.ndarray:
    if isinstance(response, str) or (
        isinstance(response, Sequence)
        and not isinstance(response, np.ndarray)
        and len(response) > 0
        and all(isinstance(r, str) for r in response)
    ):
        cols = [response] if isinstance(response, str) else list(response)
        missing = [c for c in cols if c not in obs.columns]
        if missing:
            raise KeyError(f"response columns {missing} are not in acts.obs.")
        return obs[cols].to_numpy(dtype=np.float64)
    if isinstance(response, pd.DataFrame | pd.Series):
        r = pd.DataFrame(response).reindex(obs.index)
        return r.to_numpy(dtype=np.float64)
    r = np.asarray(response, dtype=np.float64)
    if r.shape[0] != len(obs):
        raise ValueError(f"response has {r.shape[0]} rows for {len(obs)} refit rows.")
    return r


def _labels(obs: pd.DataFrame, n_classes: int, head: Head, family: str) -> np.ndarray:
    if obs["label"].isna().any():
        raise ValueError(
            f"{int(obs['label'].isna().sum())} rows have no label; the refit needs labels (pass "
            "data with labels to extract_activations, or response=...)." + _link_hint(head, family)
        )
    y = class_labels(obs, np.iinfo(np.int64).max)  # dtype / integrality checks; range below
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(
            f"labels must be class indices 0..{n_classes - 1}; got {y.min()}..{y.max()}."
            + _link_hint(head, family)
        )
    return y


def _link_hint(head: Head, family: str) -> str:
    if family == "binomial" and head.n_outputs == 1:
        return (
            f" Head {head.name!r} has one output, read as a sigmoid ({head.link_source}); if "
            "it is a regression output, extract with link='identity' and real-valued labels "
            "(the gaussian refit's default response)."
        )
    if family == "gaussian":
        return (
            " A gaussian (identity-link) refit is fitted to real-valued targets: extract with "
            "labels as floats / an (N, K) tensor (kept as obs 'target:<class>'), or pass "
            "response=<obs column(s) or array>."
        )
    return ""


def _check_shape(r: np.ndarray, k: int, family: str) -> np.ndarray:
    r = r.reshape(r.shape[0], -1)
    bad = int((~np.isfinite(r)).sum())
    if r.shape[1] != k or bad:
        raise ValueError(
            f"response must give {k} finite value(s) per row (one per output); got shape "
            f"{r.shape} with {bad} non-finite values."
        )
    if family in ("binomial", "ovr") and ((r < 0) | (r > 1)).any():
        raise ValueError(
            "A binomial (sigmoid) refit needs 0/1 targets (or proportions in [0, 1]) per "
            f"output; got values in {r.min():g}..{r.max():g}. For real-valued outputs extract "
            "with link='identity' (gaussian refit)."
        )
    return r


def build_response(
    family: str, head: Head, obs: pd.DataFrame, response=None
) -> np.ndarray:
    """The refit's response: class indices (multinomial) or an ``(N, K)`` matrix.

    Parameters
    ----------
    family : {"multinomial", "binomial", "gaussian", "ovr"}
    head : Head
    obs : DataFrame
        The refit rows' ``obs`` (``label``, optional ``target:<class>`` columns).
    response : str, sequence of str, Series, DataFrame or array, optional
        Overrides the default (see the module docstring).

    Raises
    ------
    ValueError
        Missing or out-of-range labels, a wrong number of target columns, non-0/1 binomial
        targets (with a hint to ``link="identity"`` for a one-output head read as sigmoid).
    """
    k = head.n_outputs
    if family == "multinomial":
        if response is not None:
            raise ValueError(
                "response= is not used by the multinomial refit: it models the class labels in "
                "acts.obs['label'] (extract with the labels you mean). Per-output responses go "
                "with family='binomial' / 'ovr' (0/1) or 'gaussian' (real values)."
            )
        y = _labels(obs, k, head, family)
        missing = sorted(set(range(k)) - set(np.unique(y).tolist()))
        if missing:
            raise ValueError(
                f"classes {[head.classes[i] for i in missing]} have no rows in the refit data; "
                "the multinomial refit needs every class (use a larger split)."
            )
        return y
    if response is not None:
        return _check_shape(_user_response(response, obs), k, family)
    targets = target_columns(obs)
    if targets:
        if len(targets) != k:
            raise ValueError(
                f"obs has {len(targets)} target columns but head {head.name!r} has {k} outputs."
            )
        return _check_shape(obs[targets].to_numpy(dtype=np.float64), k, family)
    if k == 1:
        y = _labels(obs, 2, head, family) if family != "gaussian" else _float_labels(obs, head)
        return y.astype(np.float64)[:, None]
    return np.eye(k)[_labels(obs, k, head, family)]


def _float_labels(obs: pd.DataFrame, head: Head) -> np.ndarray:
    lab = obs["label"]
    if lab.isna().any():
        raise ValueError(
            f"{int(lab.isna().sum())} rows have no label or target; a gaussian refit needs the "
            "real-valued targets." + _link_hint(head, "gaussian")
        )
    return lab.to_numpy(dtype=np.float64)
