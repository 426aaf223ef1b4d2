"""Logging, thread limits and interrupts for workflow steps run by Snakemake's `script:` adapters."""

import contextlib
import logging
import os
import resource
import signal
import sys
import threading
import time
import traceback

from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import is_disk_full

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS")
STEP_DONE = "%s: done in %.1f s, peak memory %.0f MB, %d thread(s)"  # the last line of a step's log
INTERRUPT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal's number, as shells report


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


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while a step ran; `signum` is the signal. A KeyboardInterrupt, so that
    whatever cleans up after Ctrl-C (atomic outputs among them) cleans up after SIGTERM too."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum, frame):
    for sig in INTERRUPT_STATUS:  # a second signal, while the step cleans up after the first, ends it now
        signal.signal(sig, _exit_now)
    raise Interrupted(signum)


def _exit_now(signum, frame):
    os._exit(128 + signum)


@contextlib.contextmanager
def _interrupts():
    """While the block runs, SIGINT and SIGTERM raise `Interrupted` (in the main thread, where signals
    arrive; elsewhere nothing changes); the previous handlers are back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupt) for sig in INTERRUPT_STATUS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def _start_log(log_path):
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


def peak_memory_mb():
    """The largest resident memory of this process so far, in MB: Linux's VmHWM (getrusage's maxrss would
    count the memory of the process that started this one, which Linux carries across fork and exec)."""
    try:
        with open("/proc/self/status") as fh:
            kib = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; elsewhere a bound
    return kib / 1024


def run_step(log_path, fn, /, *args, threads, **kwargs):
    """Run `fn(*args, **kwargs)` as one workflow step on `threads` threads (`limit_threads`), logging to
    `log_path` and to stderr. A step that returns logs its time and its peak memory (`STEP_DONE`).

    A `VirNucProError` ends the step with exit status 1 and its one-line message (prefixed by the step
    name) in the log and on stderr; SIGINT or SIGTERM (Ctrl-C, a cluster's cancel) ends it with the
    error line `<step>: interrupted (SIGINT)` (or SIGTERM) and exit status 130 (143), after the step's
    atomic outputs have removed their temporary files; any other exception is written to the log with
    its traceback and re-raised, except a full disk, which also ends in one line and exit status 1.
    The signal handlers are in place before the log file is created.
    """
    log = logging.getLogger("virnucpro")
    started = time.monotonic()
    with _interrupts():
        try:
            _start_log(log_path)
            limit_threads(threads)
            result = fn(*args, **kwargs)
            log.info(STEP_DONE, fn.__name__, time.monotonic() - started, peak_memory_mb(), threads)
            return result
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            log.error("%s: interrupted (%s)", fn.__name__, signal.Signals(signum).name)
            sys.exit(INTERRUPT_STATUS[signum])
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
