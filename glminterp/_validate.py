"""Small argument validators shared by the package: each names the argument and the fix.

They refuse what Python would otherwise coerce silently (``2.7`` replicates run as 2, ``True``
as 1, ``"0.05"`` compared as a string) and return the value in its canonical type.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

__all__ = ["check_bool", "check_choice", "check_int", "check_real"]


def _describe(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` within ``[minimum, maximum]``; bools and floats are refused.

    Raises
    ------
    TypeError
        If ``value`` is not an integer (``2.5``, ``"3"``, ``True``).
    ValueError
        If it is outside the range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {_describe(value)}.")
    value = int(value)
    _check_range(name, value, minimum, maximum)
    return value


def check_real(
    name: str, value, *, minimum: float | None = None, maximum: float | None = None,
    open_min: bool = False, open_max: bool = False,
) -> float:
    """``value`` as a finite ``float`` in the given range (``open_*``: the bound is excluded).

    Raises
    ------
    TypeError
        If ``value`` is not a real number (``"0.05"``, ``None``, ``True``).
    ValueError
        If it is NaN, infinite or outside the range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {_describe(value)}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}.")
    if minimum is not None and (value < minimum or (open_min and value == minimum)):
        raise ValueError(f"{name} must be {'>' if open_min else '>='} {minimum}, got {value}.")
    if maximum is not None and (value > maximum or (open_max and value == maximum)):
        raise ValueError(f"{name} must be {'<' if open_max else '<='} {maximum}, got {value}.")
    return value


def check_bool(name: str, value) -> bool:
    """``value`` if it is a bool (numpy bools too); ``0``, ``"yes"`` and ``None`` are refused."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {_describe(value)}.")


def check_choice(name: str, value, choices: Sequence):
    """``value`` if it is one of ``choices``; otherwise a ValueError listing them."""
    try:
        ok = value in choices
    except TypeError:  # unhashable or incomparable values
        ok = False
    if not ok:
        raise ValueError(f"{name}={value!r} is not known; use one of {tuple(choices)}.")
    return value


def _check_range(name: str, value: int, minimum: int | None, maximum: int | None) -> None:
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}.")
