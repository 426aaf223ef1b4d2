"""Outputs that appear complete or not at all.

`atomic_outputs(paths)` yields temporary paths beside the final ones (same directory, so the rename is
atomic on one file system); the block writes a file, or makes a folder and fills it, at each. When the
block ends without an exception every temporary path is renamed to its final name (a folder already
under that name is moved aside first and removed once the new one is in place); on any exception
(including KeyboardInterrupt) all temporary paths are removed, folders with their contents, and nothing
under a final name is touched. A killed process leaves only `.tmp-*` names, never a partial output
under a final name. A full disk (ENOSPC, EDQUOT, or an HDF5 write error that says so) becomes one
`DiskFullError` line naming the outputs, raised after the temporary paths are removed; so does a folder
that cannot be written (permission denied, a read-only file system), as a `NotWritableError`.
"""

import contextlib
import errno
import os
import shutil
import uuid
from pathlib import Path

from virnucpro.errors import VirNucProError

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST)


class DiskFullError(VirNucProError, OSError):
    """No space left while writing an output; nothing was left under its final name. An `OSError` too,
    so that callers which tolerate a failed optional write (checksum records) still do."""


class NotWritableError(VirNucProError, OSError):
    """An output's folder cannot be written; an `OSError` too, for the same callers as `DiskFullError`."""


def is_disk_full(exc):
    """True for an OSError from a full disk or quota (h5py reports errno 28 only in its message)."""
    if not isinstance(exc, OSError):
        return False
    return exc.errno in _NO_SPACE or "No space left on device" in str(exc) or "errno = 28" in str(exc)


def disk_full_error(paths):
    """The one-line error for a full disk while writing `paths` (a sequence of final names)."""
    names = ", ".join(str(p) for p in paths)
    return DiskFullError(
        f"{names}: no space left on device (ENOSPC) while writing; nothing was kept under "
        "the final name(s): free space and rerun"
    )


def temp_path_for(path):
    """A temporary name beside `path` (`.tmp-{random}-{name}`)."""
    path = Path(path)
    return path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")


def not_writable_error(paths, exc):
    """The one-line error for outputs whose folder cannot be written (`exc`: the OSError)."""
    names = ", ".join(str(p) for p in paths)
    where = f": {exc.filename}" if exc.filename else ""
    return NotWritableError(f"{names}: cannot write the output ({exc.strerror or exc}{where})")


@contextlib.contextmanager
def atomic_outputs(*paths):
    """Yield a temporary path for each of `paths` (None, for an optional output, stays None); see the
    module docstring."""
    finals = [Path(p) for p in paths if p is not None]
    temps = [temp_path_for(p) for p in finals]
    try:
        for p in finals:
            p.parent.mkdir(parents=True, exist_ok=True)
        yield iter_with_none(paths, temps)
        for tmp in temps:
            if not tmp.exists():
                raise RuntimeError(f"internal error: {tmp} was not written")
        for tmp, final in zip(temps, finals):
            _rename(tmp, final)
    except BaseException as exc:
        for tmp in temps:
            _remove(tmp)
        if is_disk_full(exc):
            raise disk_full_error(finals) from None
        if isinstance(exc, OSError) and exc.errno in _NOT_WRITABLE:
            raise not_writable_error(finals, exc) from None
        raise


def _rename(tmp, final):
    """`tmp` renamed to `final`; a folder under the final name is moved aside first (a rename cannot
    replace a folder that holds files) and removed once the new one is in place."""
    if not (tmp.is_dir() and final.is_dir()):
        os.replace(tmp, final)
        return
    old = temp_path_for(final)
    os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _remove(tmp):
    """Remove a temporary file or folder; one never made (or on a file system that refuses) is left."""
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
        return
    with contextlib.suppress(OSError):
        tmp.unlink()


def iter_with_none(paths, temps):
    """Map `paths` (which may hold None for an optional output) onto temporary paths, keeping None."""
    it = iter(temps)
    return [None if p is None else next(it) for p in paths]


def write_text_if_changed(path, text):
    """Write `text` to `path` (atomically, `atomic_outputs`) unless the file holds exactly that already, so
    that an unchanged file keeps its modification time (and what depends on it does not run again).
    Returns whether it wrote."""
    path = Path(path)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    with atomic_outputs(path) as (tmp,):
        tmp.write_text(text, encoding="utf-8")
    return True
