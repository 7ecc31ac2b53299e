"""Output folders that never destroy the user's data.

Every folder glminterp writes (a report, a folder of CSV activations) carries a marker file,
:data:`MARKER_NAME`. :func:`write_folder` replaces an existing folder only if it carries that
marker (or is empty, or is a report written before markers existed); anything else is refused
with :class:`OutputPathError` naming the path and what to do. An input of the run is never an
output, and no folder is made under a file.

The write itself is built in a temporary sibling folder and swapped in under a lock file, so a
failed or killed write leaves the previous folder intact, two writers on one folder cannot
fail each other (the last one wins), and the leftovers of a killed write (``.<name>.tmp-*``,
``.<name>.old``) are cleaned by the next write. Files and folders honour the umask.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

__all__ = [
    "MARKER_NAME",
    "OutputPathError",
    "check_output_file",
    "check_output_folder",
    "check_writable_into",
    "clean_stale_files",
    "locked_folder",
    "write_folder",
]

MARKER_NAME = ".glminterp-report"
_MARKER_TEXT = json.dumps({"written_by": "glminterp"}) + "\n"


class OutputPathError(ValueError):
    """An output path glminterp refuses to write: it would replace data it did not write."""


# ---------------------------------------------------------------------------- permissions
def current_umask() -> int:
    """The process umask (read from /proc where possible: setting it is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | Path, *, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would (tempfile forces 0600/0700)."""
    base = 0o777 if directory else 0o666
    os.chmod(path, base & ~current_umask())


# ---------------------------------------------------------------------------- checks
def _inputs(inputs: Iterable[str | Path] | None) -> list[Path]:
    return [Path(p).resolve() for p in (inputs or ()) if p is not None]


def _file_ancestor(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` that is not a folder (no folder fits under it)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _ours(folder: Path) -> bool:
    """Written by glminterp: the marker, or (older versions) a provenance/metadata signature."""
    if (folder / MARKER_NAME).is_file():
        return True
    try:
        prov = json.loads((folder / "provenance.json").read_text())
        if isinstance(prov, dict) and "glminterp" in (prov.get("versions") or {}):
            return True
    except (OSError, ValueError):
        pass
    try:
        meta = json.loads((folder / "metadata.json").read_text())
        return isinstance(meta, dict) and "feature_columns" in meta and (folder / "obs.csv").is_file()
    except (OSError, ValueError):
        return False


def _check_common(path: Path, inputs: Iterable[str | Path] | None, what: str) -> Path:
    resolved = path.resolve()
    for inp in _inputs(inputs):
        if inp == resolved or resolved in inp.parents:
            raise OutputPathError(
                f"{what} {path} would replace the input {inp}; an input is never overwritten. "
                "Choose another output path."
            )
    blocker = _file_ancestor(path)
    if blocker is not None:
        raise OutputPathError(
            f"{what} {path} cannot be created: {blocker} is a file, not a folder. "
            "Choose an output path under a folder."
        )
    if path.is_symlink():
        raise OutputPathError(
            f"{what} {path} is a symbolic link; glminterp does not replace links. "
            "Point to the real path or choose another one."
        )
    return resolved


def check_output_folder(folder: str | Path, *, inputs: Iterable[str | Path] | None = None) -> Path:
    """Refuse ``folder`` unless writing it as glminterp output can lose nothing of the user's.

    Allowed: a path that does not exist, an empty folder, or a folder glminterp wrote (it holds
    :data:`MARKER_NAME`). Refused (:class:`OutputPathError`): an existing file, any other
    folder, a path that is or contains one of ``inputs``, a path under a file, a symlink.
    """
    folder = Path(folder)
    _check_common(folder, inputs, "Output folder")
    if folder.exists():
        if not folder.is_dir() and folder.exists():  # (gone meanwhile: a writer's swap)
            raise OutputPathError(
                f"Output folder {folder} is an existing file; glminterp does not overwrite it. "
                "Choose a new folder name."
            )
        try:
            foreign = any(folder.iterdir()) and not _ours(folder)
        except FileNotFoundError:  # swapped away by another glminterp writer as we looked
            foreign = False
        if foreign:
            raise OutputPathError(
                f"Output folder {folder} exists and was not written by glminterp (it has no "
                f"{MARKER_NAME} marker), so it is not replaced. Choose a new or empty folder, or "
                "remove this one yourself."
            )
    return folder


def check_output_file(path: str | Path, *, inputs: Iterable[str | Path] | None = None) -> Path:
    """Refuse an output file that is an input, an existing folder, or under a file."""
    path = Path(path)
    _check_common(path, inputs, "Output file")
    if path.is_dir():
        raise OutputPathError(
            f"Output file {path} is an existing folder; glminterp does not replace it. "
            "Choose a file name."
        )
    return path


def check_writable_into(folder: str | Path, names) -> None:
    """Refuse to overwrite files ``names`` inside ``folder`` unless glminterp wrote the folder."""
    folder = Path(folder)
    if _ours(folder):
        return
    clash = sorted(str(n) for n in names if (folder / n).exists())
    if clash:
        raise OutputPathError(
            f"{folder} was not written by glminterp (no {MARKER_NAME} marker) and already has "
            f"{clash}; they are not overwritten. Copy the results to a new folder first."
        )


# ---------------------------------------------------------------------------- the write
def locked_folder(folder: str | Path):
    """Context manager: the lock :func:`write_folder` holds on ``folder`` (for in-place edits)."""
    return _locked(Path(folder).resolve())


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``.<name>.lock`` beside ``folder`` (no-op without fcntl)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, last writer wins
        yield
        return
    lock = folder.with_name(f".{folder.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed this lock file as we waited: lock the new one
    try:
        yield
    finally:
        # removed while still held, so no lock file is left beside the reports; a writer
        # that waited on this inode sees it is gone and retries on a fresh file
        Path(lock).unlink(missing_ok=True)
        os.close(fd)


def _clean_stale(folder: Path) -> None:
    """Remove leftovers of killed writes; restore the previous folder if a swap was cut short.

    Called with the lock held: every writer holds it while its temporary folder exists, so any
    ``.<name>.tmp-*`` seen here belongs to a dead writer.
    """
    parent = folder.parent
    old = folder.with_name(f".{folder.name}.old")
    if old.is_dir() and not folder.exists():
        os.replace(old, folder)  # killed between the two renames: the old report comes back
    for stale in [*parent.glob(f".{folder.name}.tmp-*"), folder.with_name(f".{folder.name}.tmp")]:
        shutil.rmtree(stale, ignore_errors=True)  # (".tmp": staging name of older versions)
    for stale in parent.glob(f".{folder.name}.old*"):
        shutil.rmtree(stale, ignore_errors=True)


def clean_stale_files(path: str | Path) -> None:
    """Remove temporary files a killed :func:`glminterp._io.atomic_write` of ``path`` left.

    Call with :func:`locked_folder` held on ``path`` by every writer of it.
    """
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.[a-z0-9_]{{8}}(\.npz)?$")
    for stale in path.parent.glob(f".{path.name}.*"):
        if pattern.match(stale.name) and stale.is_file():
            stale.unlink(missing_ok=True)


def _swap(tmp: Path, folder: Path) -> None:
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old")
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_folder(
    folder: str | Path, fill: Callable[[Path], object], *,
    inputs: Iterable[str | Path] | None = None,
) -> Path:
    """Write a glminterp output folder: ``fill(tmp)`` writes its files, then it replaces ``folder``.

    Parameters
    ----------
    folder : path
        The output folder; checked by :func:`check_output_folder` (before and after the lock).
    fill : callable
        Writes the folder's content into the temporary folder it is given.
    inputs : paths, optional
        Files or folders the run read; refused as (or inside) the output.

    Returns
    -------
    Path
        ``folder``.
    """
    given = Path(folder)
    try:
        folder = check_output_folder(given, inputs=inputs).resolve()
    except OutputPathError as first:
        # Another glminterp writer may be swapping this folder in right now (the check saw it
        # between its two renames): decide again under the lock, where no writer swaps.
        folder = given.resolve()
        if given.is_symlink() or not folder.name or not folder.parent.is_dir():
            raise
        with _locked(folder):
            try:
                check_output_folder(given, inputs=inputs)
            except OutputPathError:
                raise first from None
    if not folder.name:
        raise OutputPathError(f"Output folder {folder} has no name; choose a folder below it.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        _clean_stale(folder)
        check_output_folder(folder, inputs=inputs)  # another writer may have changed it
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        try:
            honour_umask(tmp, directory=True)
            fill(tmp)
            (tmp / MARKER_NAME).write_text(_MARKER_TEXT)
            _swap(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return given
