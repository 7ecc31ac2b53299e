"""Refit estimators behind one protocol (:mod:`.base`), found by name in :data:`REGISTRY`.

Adding an estimator: write a module with a class following
:class:`~glminterp.refit.estimators.base.Estimator`, then add one line here. Entries are
``"module:Class"`` strings, imported on first use (no import cycles, no cost for unused ones).
"""

from __future__ import annotations

import importlib

from glminterp.refit.estimators.base import Estimator, EstimatorFit, FitContext

REGISTRY: dict[str, str | type] = {
    "ml": "glminterp.refit.estimators.ml:MaximumLikelihood",
    "ml_statsmodels": "glminterp.refit.estimators.ml_statsmodels:StatsmodelsML",
    "ml_fast": "glminterp.refit.estimators.ml_fast:FastEngineML",
    "firth": "glminterp.refit.estimators.firth:Firth",
    "mnbr": "glminterp.refit.estimators.mnbr:MultinomialBiasReduction",
    "ridge": "glminterp.refit.estimators.ridge:Ridge",
    "pca": "glminterp.refit.estimators.pca:PrincipalComponents",
    "auto": "glminterp.refit.estimators.auto:Auto",
    "contrasts": "glminterp.refit.estimators.contrasts:Contrasts",
    "class_subset": "glminterp.refit.estimators.class_subset:ClassSubset",
    "ovr": "glminterp.refit.estimators.ovr:OneVsRest",
}
#: Estimators that are not separation remedies (maximum likelihood with partial inference,
#: or another model): chosen with ``method=``, never ``remedy=``.
NOT_REMEDIES: frozenset[str] = frozenset({"auto", "contrasts", "class_subset", "ovr"})


def register(name: str, estimator: str | type) -> None:
    """Add (or replace) an estimator under ``name`` (a class or a ``"module:Class"`` string)."""
    REGISTRY[name] = estimator


def get_estimator(name: str) -> type:
    """The estimator class registered under ``name``."""
    if name not in REGISTRY:
        raise ValueError(f"method={name!r} is not a registered estimator; use one of {list(REGISTRY)}.")
    entry = REGISTRY[name]
    if isinstance(entry, str):
        mod, _, cls = entry.partition(":")
        entry = getattr(importlib.import_module(mod), cls)
    return entry


def remedy_names() -> tuple[str | None, ...]:
    """``None`` (maximum likelihood) and every registered estimator that is a remedy."""
    names: list[str | None] = [None]
    for key in REGISTRY:
        if not key.startswith("ml") and key not in NOT_REMEDIES:
            names.append(key)
    return tuple(names)


__all__ = ["NOT_REMEDIES", "REGISTRY", "Estimator", "EstimatorFit", "FitContext", "get_estimator", "register",
           "remedy_names"]
