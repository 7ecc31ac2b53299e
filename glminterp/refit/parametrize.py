"""Covariances across parametrizations, and the network's head restricted to the refit's terms.

:mod:`glminterp.head` maps coefficient matrices between parametrizations; this module adds the
matching map for covariance matrices (the delta method for a linear map is exact) and folds the
weights of units the refit dropped back into the terms it kept, so the network's head and the
refit describe the same linear predictor on the rows used.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from glminterp.head import reference_to_sum_to_zero_map, vec_map


def sum_to_zero_cov(cov_reference: np.ndarray, n_classes: int, n_terms: int) -> np.ndarray:
    """Covariance of the sum-to-zero coefficients from the reference-parametrization one.

    ``gamma = beta @ C.T`` is linear in ``beta``, so ``Cov(vec gamma) = L Cov(vec beta) L'``
    with ``L = kron(C, I)`` (vectorisation in Fortran order, class-major, as statsmodels).
    The result has rank ``n_terms * (K - 1)`` and equals the Moore-Penrose inverse of the full
    (unidentified) Fisher information when ``cov_reference`` is the inverse Fisher information.

    Parameters
    ----------
    cov_reference : ndarray, shape (n_terms * (K - 1), n_terms * (K - 1))
    n_classes : int
        ``K``.
    n_terms : int
        Terms per class (intercept included).

    Returns
    -------
    ndarray, shape (n_terms * K, n_terms * K)
    """
    cov_reference = np.asarray(cov_reference, dtype=np.float64)
    expected = n_terms * (n_classes - 1)
    if cov_reference.shape != (expected, expected):
        raise ValueError(
            f"cov_reference must be ({expected}, {expected}) for {n_classes} classes and "
            f"{n_terms} terms; got {cov_reference.shape}."
        )
    lmap = vec_map(reference_to_sum_to_zero_map(n_classes), n_terms)
    out = lmap @ cov_reference @ lmap.T
    return (out + out.T) / 2.0


def fold_dropped_units(
    coef: np.ndarray,
    units: list[str],
    constant: Mapping[str, float],
    dependencies: Mapping[str, Mapping[str, float]],
) -> tuple[np.ndarray, list[str]]:
    """Move the weights of dropped units onto the kept terms, leaving the predictor unchanged.

    A constant unit with value ``c`` contributes ``w * c`` to every row: it joins the intercept.
    A unit that is an exact combination ``a_0 + sum_j a_j u_j`` of kept units contributes
    ``w * a_0`` to the intercept and ``w * a_j`` to each ``u_j``.

    Parameters
    ----------
    coef : ndarray, shape (1 + len(units), K)
        Intercept in row 0, then one row per unit in ``units`` order.
    units : list of str
        Names of the units (rows 1..).
    constant : mapping of str to float
        Dropped constant units and their value.
    dependencies : mapping of str to mapping of str to float
        Dropped collinear units and their combination (keys ``"const"`` and unit names).

    Returns
    -------
    (ndarray, list of str)
        The folded matrix with only the kept units, and their names.
    """
    coef = np.array(coef, dtype=np.float64, copy=True)
    row = {u: i + 1 for i, u in enumerate(units)}
    for unit, value in constant.items():
        coef[0] += coef[row[unit]] * value
    for unit, combo in dependencies.items():
        w = coef[row[unit]].copy()
        for term, a in combo.items():
            coef[0 if term == "const" else row[term]] += w * a
    dropped = set(constant) | set(dependencies)
    kept = [u for u in units if u not in dropped]
    return coef[[0] + [row[u] for u in kept]], kept
