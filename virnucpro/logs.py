"""Logging for workflow steps run by Snakemake's `script:` adapters."""

import logging
import sys
import traceback

from virnucpro.errors import VirNucProError


def run_step(log_path, fn, /, *args, **kwargs):
    """Run `fn(*args, **kwargs)` as one workflow step, logging to `log_path` and to stderr.

    A `VirNucProError` ends the step with exit status 1 and its one-line message (prefixed by the step
    name) in the log and on stderr; any other exception is written to the log with its traceback and
    re-raised.
    """
    handlers = [logging.FileHandler(log_path, mode="w"), logging.StreamHandler(sys.stderr)]
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
    except Exception:
        log.error("%s failed:\n%s", fn.__name__, traceback.format_exc())
        raise
