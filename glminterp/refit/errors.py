"""Warnings and errors of the refit."""

from __future__ import annotations


class RefitWarning(UserWarning):
    """A condition that weakens the refit's inference (training overlap, low EPP, ...)."""


class FitError(RuntimeError):
    """No finite maximum-likelihood (or penalized) optimum was reached; the message says why."""
