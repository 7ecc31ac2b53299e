"""Atomic file writes: nothing half-written is ever left at the target path."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from glminterp.outputs import honour_umask


def atomic_write(path: Path, write, suffix: str = "") -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it into place.

    The file gets the mode a plain ``open`` would give it (the umask is honoured; ``mkstemp``
    alone would force 0600).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        honour_umask(tmp)
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
