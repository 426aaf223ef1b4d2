"""Logging and thread limits for workflow steps run by Snakemake's `script:` adapters."""

import logging
import os
import sys
import traceback

from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import is_disk_full

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS")


def limit_threads(threads):
    """Hold this process's compute threads to `threads` (a rule's `threads:`).

    Sets OMP_NUM_THREADS and MKL_NUM_THREADS, which torch reads for its intra-op pool when it is
    imported later (torch is not imported here, for steps that do not use it), the size of that pool
    when torch is imported already, and RAYON_NUM_THREADS, read by the Rust thread pool behind
    `tokenizers.Tokenizer.encode_batch` when the pool first starts. The package starts no other thread
    pool: the runner's packing thread is a single thread.
    """
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be 1 or more, not {threads}")
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


class _LogFile(logging.FileHandler):
    """The step's log file; a failed write (a full disk) is dropped: stderr still carries every line."""

    def handleError(self, record):
        pass


def run_step(log_path, fn, /, *args, threads, **kwargs):
    """Run `fn(*args, **kwargs)` as one workflow step on `threads` threads (`limit_threads`), logging to
    `log_path` and to stderr.

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
        format=LOG_FORMAT,
        datefmt=DATE_FORMAT,
        handlers=handlers,
        force=True,
    )
    log = logging.getLogger("virnucpro")
    limit_threads(threads)
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
