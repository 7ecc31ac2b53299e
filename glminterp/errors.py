"""Exceptions a user can cause and act on (the command line turns each into one line)."""

from __future__ import annotations

from glminterp.outputs import OutputPathError

__all__ = ["OutputPathError", "RefitFailedError"]


class RefitFailedError(RuntimeError):
    """The central step of a study, the GLM refit, failed: no report is written.

    Optional sections (CAMs, visualizations) may degrade to a note; the refit may not, since
    a report without it would replace a good one with empty coefficients.
    """
