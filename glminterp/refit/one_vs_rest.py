"""One-vs-rest binomial fits per class, with per-class covariance blocks.

A *different model* from the multinomial logit: class ``k`` against all others is a separate
logistic regression ``P(y = k | x) = expit(b_k'x)``; the ``b_k`` are not the softmax head's
coefficients (nor their differences), and the per-class likelihoods are not jointly a
likelihood of the data. Each fit has its own ``(p + 1) x (p + 1)`` covariance, so memory is
``K (p + 1)^2`` rather than ``((p + 1)(K - 1))^2``; cross-class covariances are not
estimated (take a sandwich over the stacked scores if they are needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from glminterp import engine as E

__all__ = ["OneVsRestResult", "fit_one_vs_rest"]

MODEL_NOTE = ("one-vs-rest: K separate binomial logits (class vs all others); a different model "
              "from the multinomial head, with per-class covariance blocks only")


@dataclass(frozen=True)
class OneVsRestResult:
    """Per-class binomial fits.

    Attributes
    ----------
    fits : dict
        Class label -> :class:`~glminterp.engine.EngineResult` (binomial).
    classes : tuple
    terms : tuple of str
    note : str
        What model this is (not the multinomial).
    """

    fits: dict
    classes: tuple
    terms: tuple[str, ...]
    note: str = MODEL_NOTE

    @property
    def params(self) -> np.ndarray:
        """``(p + 1, K)``: one column per class."""
        return np.column_stack([self.fits[c].params for c in self.classes])

    @property
    def bse(self) -> np.ndarray:
        return np.column_stack([self.fits[c].bse for c in self.classes])

    def cov_block(self, cls) -> np.ndarray:
        """``(p + 1, p + 1)`` covariance of class ``cls``'s coefficients."""
        return self.fits[cls].cov

    @property
    def llf(self) -> dict:
        return {c: self.fits[c].llf for c in self.classes}

    @property
    def convergence(self) -> pd.DataFrame:
        return pd.DataFrame(
            [{"class": c, "converged": f.converged, "n_iter": f.n_iter, "n_hvp": f.n_hvp,
              "grad_norm": f.grad_norm} for c, f in self.fits.items()]).set_index("class")


def fit_one_vs_rest(x, y, classes: Sequence | None = None, *, detect_separation: bool = True,
                    **engine_kwds) -> OneVsRestResult:
    """Fit class-vs-rest logistic regressions for ``classes`` (default: every class in ``y``).

    ``**engine_kwds`` go to :func:`glminterp.engine.fit_binomial`. Separated classes raise
    :class:`~glminterp.refit.separation.SeparationError` early when ``detect_separation``.
    """
    yy = np.asarray(y)
    labels = sorted(np.unique(yy).tolist()) if classes is None else list(dict.fromkeys(classes))
    missing = [c for c in labels if c not in set(np.unique(yy).tolist())]
    if missing:
        raise ValueError(f"classes {missing} do not occur in y.")
    fits = {}
    for c in labels:
        fits[c] = E.fit_binomial(x, (yy == c).astype(np.float64),
                                 detect_separation=detect_separation, **engine_kwds)
    first = next(iter(fits.values()))
    return OneVsRestResult(fits=fits, classes=tuple(labels), terms=first.terms)


def ovr_model(model):
    """The one-vs-rest view of a refit design: one 0/1 response per class.

    A model already per-output (``family="ovr"`` or ``"binomial"``) is returned as it is. A
    multinomial model becomes ``family="ovr"`` on the same rows and units: the response is the
    one-hot class matrix and the network's softmax head is not comparable (NaN, with a note),
    as with ``family="ovr"`` from the start.
    """
    import copy

    from glminterp.refit import design as ds

    if model.family in ("ovr", "binomial"):
        return model
    if model.family != "multinomial":
        raise ValueError(f"method='ovr' fits logit models; this model is family={model.family!r}.")
    view = copy.copy(model)
    view.family = "ovr"
    classes = ds.output_classes(model.head)
    view.y = (np.asarray(model.y)[:, None] == np.arange(len(classes))[None, :]).astype(np.float64)
    view._checks = {}
    view.warnings, view.notes = list(model.warnings), list(model.notes)
    from glminterp.refit.parametrize import fold_dropped_units

    net, note = ds.network_matrix(model.head, "ovr")
    view.network, _ = fold_dropped_units(net, model.all_units, model.constant,
                                         model.dependencies)
    if note:
        view.notes.append(note)
    return view
