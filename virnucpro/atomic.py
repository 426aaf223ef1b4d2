"""Outputs that appear complete or not at all.

`atomic_outputs(paths)` yields temporary paths beside the final ones (same directory, so the rename is
atomic on one file system). When the block ends without an exception every temporary file is renamed
to its final name; on any exception (including KeyboardInterrupt) all temporary files are removed and
nothing under a final name is touched. A killed process leaves only `.tmp-*` names, never a final name.
"""

import contextlib
import os
import uuid
from pathlib import Path


def temp_path_for(path):
    path = Path(path)
    return path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")


@contextlib.contextmanager
def atomic_outputs(*paths):
    finals = [Path(p) for p in paths if p is not None]
    temps = [temp_path_for(p) for p in finals]
    for p in finals:
        p.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield iter_with_none(paths, temps)
        for tmp in temps:
            if not tmp.exists():
                raise RuntimeError(f"internal error: {tmp} was not written")
        for tmp, final in zip(temps, finals):
            os.replace(tmp, final)
    except BaseException:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise


def iter_with_none(paths, temps):
    """Map `paths` (which may hold None for an optional output) onto temporary paths, keeping None."""
    it = iter(temps)
    return [None if p is None else next(it) for p in paths]
