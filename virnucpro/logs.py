"""Logging for workflow steps run by Snakemake's `script:` adapters."""

import logging
import sys
import traceback

from virnucpro.atomic import is_disk_full
from virnucpro.errors import VirNucProError


class _LogFile(logging.FileHandler):
    """The step's log file; a failed write (a full disk) is dropped: stderr still carries every line."""

    def handleError(self, record):
        pass


def run_step(log_path, fn, /, *args, **kwargs):
    """Run `fn(*args, **kwargs)` as one workflow step, logging to `log_path` and to stderr.

    A `VirNucProError` ends the step with exit status 1 and its one-line message (prefixed by the step
    name) in the log and on stderr; any other exception is written to the log with its traceback and
    re-raised, except a full disk, which also ends in one line and exit status 1.
    """
    handlers = [logging.StreamHandler(sys.stderr)]
    try:
        handlers.insert(0, _LogFile(log_path, mode="w"))
    except OSError as exc:
        print(f"cannot write the log {log_path}: {exc.strerror or exc}", file=sys.stderr)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        handlers=handlers,
        force=True,
    )
    log = logging.getLogger("virnucpro")
    try:
        return fn(*args, **kwargs)
    except VirNucProError as exc:
        log.error("%s: %s", fn.__name__, exc)
        sys.exit(1)
    except Exception as exc:
        if is_disk_full(exc):
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            log.error("%s: no space left on device (ENOSPC)%s: %s", fn.__name__, where, exc)
            sys.exit(1)
        log.error("%s failed:\n%s", fn.__name__, traceback.format_exc())
        raise
