"""The refit: a network's output layer as a GLM (model -> estimator -> results).

- :class:`OutputLayerGLM` (:mod:`.model`): the design after every check, built once.
- Estimators (:mod:`.estimators`): one class per method behind one protocol, found by name in
  :data:`~glminterp.refit.estimators.REGISTRY` (maximum likelihood by statsmodels or the fast
  engine, Firth, ridge, PCA; past the full covariance: chosen contrasts, a class subset,
  one-vs-rest, and ``auto``).
- Results (:mod:`.results`, :mod:`.results_partial`): :class:`RefitResult` computes every
  table from the protocol; subclasses only where inference differs.
- :func:`refit_output_layer` (:mod:`.api`): model + fit in one call.

Numerics live beside them: :mod:`.diagnostics` (design checks), :mod:`.separation` (Konis LP),
:mod:`.acceptance` (when a fit is an optimum), :mod:`.parametrize`, :mod:`.firth`,
:mod:`.penalized`; the Newton engine is :mod:`glminterp.engine`.
"""

from __future__ import annotations

import sys

from glminterp.refit import diagnostics, firth, parametrize, penalized, separation
from glminterp.refit.api import refit_output_layer
from glminterp.refit.errors import FitError, RefitWarning
from glminterp.refit.estimators import REGISTRY, get_estimator, register
from glminterp.refit.likelihood import p_adjust
from glminterp.refit.model import OutputLayerGLM
from glminterp.refit.options import (
    AUTO_ENGINE_MIN_PARAMS,
    COV_TYPES,
    ENGINES,
    FAMILIES,
    REMEDIES,
)
from glminterp.refit.results import (
    FirthRefitResult,
    MLRefitResult,
    MultinomialBRRefitResult,
    PenalizedRefitResult,
    RefitResult,
)
from glminterp.refit.results_partial import (
    ClassSubsetRefitResult,
    ContrastRefitResult,
    NotComputedError,
    OneVsRestRefitResult,
)
from glminterp.refit.separation import SeparationError

# The modules' paths before the refit package existed (glminterp.glm, glminterp.firth, ...):
# kept importable for code written against them.
_OLD_PATHS = {"glm": sys.modules[__name__], "diagnostics": diagnostics, "firth": firth,
              "parametrize": parametrize, "penalized": penalized, "separation": separation}
_package = sys.modules["glminterp"]
for _name, _mod in _OLD_PATHS.items():
    sys.modules.setdefault(f"glminterp.{_name}", _mod)
    if not hasattr(_package, _name):
        setattr(_package, _name, _mod)

__all__ = [
    "AUTO_ENGINE_MIN_PARAMS", "COV_TYPES", "ENGINES", "FAMILIES", "REGISTRY", "REMEDIES",
    "ClassSubsetRefitResult", "ContrastRefitResult", "FirthRefitResult", "FitError", "MLRefitResult", "MultinomialBRRefitResult",
    "NotComputedError", "OneVsRestRefitResult", "OutputLayerGLM", "PenalizedRefitResult",
    "RefitResult", "RefitWarning", "SeparationError", "get_estimator", "p_adjust",
    "refit_output_layer", "register",
]
