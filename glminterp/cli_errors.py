"""One ``error: ...`` line for every failure a user of the command line can cause.

:func:`describe` turns an exception into a sentence that says what was wrong and, where the
exception does not already say it, what to do. The command line prints it instead of a
traceback (``--debug`` shows the traceback too).
"""

from __future__ import annotations

import argparse
import errno
import sys

__all__ = ["ErrorParser", "describe", "one_line"]


def one_line(text: str) -> str:
    """``text`` with its lines joined, so the message is one line."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _os_error(e: OSError) -> str:
    where = e.filename if e.filename is not None else ""
    if isinstance(e, PermissionError):
        return (f"permission denied: {where}. Check that you may read (inputs) or write "
                "(outputs) there, or choose another path.")
    if isinstance(e, FileNotFoundError):
        if e.filename is None:  # raised by glminterp with a full message
            return one_line(e.args[0] if e.args else "file not found")
        return f"{where} does not exist. Check the path (and the current folder)."
    if isinstance(e, IsADirectoryError):
        return f"{where or one_line(str(e))} is a folder where a file was expected."
    if isinstance(e, NotADirectoryError):
        return f"{where or one_line(str(e))}: a part of this path is a file, not a folder."
    if e.errno == errno.ENOSPC:
        return f"no space left on the device while writing {where}; free some space and rerun."
    reason = e.strerror or one_line(str(e)) or type(e).__name__
    return f"{reason}: {where}" if where else reason


def describe(exc: BaseException) -> str:
    """What went wrong, as one line without the exception's type where the text says enough."""
    from glminterp.errors import OutputPathError, RefitFailedError

    if isinstance(exc, (OutputPathError, RefitFailedError)) or (
        type(exc).__module__.startswith("glminterp") and str(exc).strip()
    ):  # glminterp's own exceptions (FitError, SeparationError, ...) say what to do
        return one_line(str(exc))
    if type(exc).__name__ == "LinAlgError":
        return (f"linear algebra failed in the refit ({one_line(str(exc))}): the design is "
                "singular or ill-conditioned; look for dead or collinear units, or use --remedy ridge.")
    if isinstance(exc, OSError) and not _is_arrow(exc):
        return _os_error(exc)
    if isinstance(exc, KeyError):
        key = exc.args[0] if exc.args else ""
        if isinstance(key, str) and " " in key:
            return one_line(key)
        return (f"missing entry {key!r} (KeyError). The input lacks a field glminterp needs; "
                "rerun with --debug to see where.")
    if isinstance(exc, MemoryError):
        return "out of memory; use fewer rows (--size) or a smaller model."
    if isinstance(exc, (ValueError, TypeError)) and not _is_arrow(exc):
        text = one_line(str(exc))
        return text if len(text) > 12 else f"{type(exc).__name__}: {text}"
    return (f"unexpected {type(exc).__name__}: {one_line(str(exc))}. This may be a bug in "
            "glminterp: rerun with --debug for the traceback and report it.")


def _is_arrow(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("pyarrow")


class ErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one ``error:`` line (exit status 2)."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        sys.stderr.write(f"error: {self.prog}: {one_line(message)} (see `{self.prog} --help`)\n")
        raise SystemExit(2)
