"""Lock files in the embedding store, safe on a cluster's shared file system (no flock, which NFS may
not honour across hosts).

`hold_lock(path, ...)` creates `path` with O_CREAT | O_EXCL (atomic on NFSv3 and later and on local file
systems), writing one JSON line `{"host", "pid", "created", "token"}`, and deletes it when the block ends.
While held, a daemon thread refreshes the file's mtime every `heartbeat_s` seconds: the mtime is the
holder's heartbeat. A lock held by someone else is waited for, one log line when the wait starts, then
a poll every `poll_s` seconds (at most), until it is released or found stale:
- its holder ran on this host and its pid is gone (the process died), or
- its heartbeat (the file's mtime) is older than `stale_after_s` seconds (a holder on another host, or
  one whose record cannot be read).
A stale lock is taken over with one warning line: it is renamed aside under a name of the taker's own,
checked to be the very lock judged stale (its token), deleted, and the lock is tried again. Two takers
of one stale lock cannot both win: only one rename of that file succeeds, and a taker that renamed a
lock newer than the one it judged stale puts it back.
"""

import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from virnucpro.errors import VirNucProError

log = logging.getLogger("virnucpro")

STALE_AFTER_S = 600.0  # a lock whose heartbeat is this old belongs to a dead holder (config: embed.lock_stale_s)
POLL_S = 10.0  # at most this long between two looks at a lock held by another
HEARTBEAT_S = 30.0  # the holder refreshes its lock's mtime this often


def read_holder(path):
    """The lock's record ({"host", "pid", "created", "token"}) and its mtime, or None if there is no lock;
    the record is {} while it cannot be read (being written, or damaged)."""
    try:
        mtime = os.stat(path).st_mtime
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = {}
    return (record if isinstance(record, dict) else {}), mtime


def pid_alive(pid):
    """Whether a process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def stale_reason(record, mtime, now, stale_after_s, host=None, alive=pid_alive):
    """Why the lock (`read_holder`'s record and mtime) is stale at time `now`, or None while it is held."""
    host = host or socket.gethostname()
    if record.get("host") == host and isinstance(record.get("pid"), int) and not alive(record["pid"]):
        return f"its holder, pid {record['pid']} on this host, is gone"
    age = now - mtime
    if age > stale_after_s:
        return f"its heartbeat is {age:.0f} s old (more than {stale_after_s:g} s)"
    return None


def _describe(record):
    if not record:
        return "a holder whose record cannot be read"
    return f"pid {record.get('pid')} on {record.get('host')}"


def _create(path, token):
    """Create the lock file; False when it exists already."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    record = {"host": socket.gethostname(), "pid": os.getpid(), "created": time.time(), "token": token}
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(record) + "\n")
    return True


def _break(path, judged, token):
    """Take a stale lock away: rename it aside, check it is the lock judged stale (its record), delete it.
    A lock that changed meanwhile (another taker won and holds it now) goes back."""
    aside = Path(f"{path}.stale-{token}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    held = read_holder(aside)
    if held is not None and held[0] != judged:
        try:
            os.link(aside, path)  # back, unless yet another lock is there already
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)


def acquire(path, what, stale_after_s=STALE_AFTER_S, poll_s=POLL_S, sleep=time.sleep, clock=time.time,
            alive=pid_alive):
    """Create the lock file `path`, waiting while another holds it and taking over a stale one (see the
    module docstring); returns the lock's token. `what` names the locked work in log lines; `sleep`,
    `clock` and `alive` are injectable for tests."""
    if poll_s <= 0 or stale_after_s <= 0:
        raise VirNucProError(f"lock {path}: the poll interval and the stale timeout must be positive")
    token = uuid.uuid4().hex
    waiting = False
    while not _create(path, token):
        held = read_holder(path)
        if held is None:  # released between the two looks
            continue
        record, mtime = held
        reason = stale_reason(record, mtime, clock(), stale_after_s, alive=alive)
        if reason:
            log.warning("%s: taking over the lock %s of %s: %s", what, path, _describe(record), reason)
            _break(path, record, token)
            continue
        if not waiting:
            log.info("%s: waiting for %s, which holds its lock %s (polling every %g s)", what,
                     _describe(record), path, poll_s)
            waiting = True
        sleep(min(poll_s, stale_after_s / 2))
    return token


def release(path, token):
    """Delete the lock file if it is still this holder's (`token`)."""
    held = read_holder(path)
    if held is not None and held[0].get("token") == token:
        Path(path).unlink(missing_ok=True)


def _heartbeat(path, token, every_s, stop):
    """Refresh the lock's mtime every `every_s` seconds until `stop` is set, while it is still ours."""
    while not stop.wait(every_s):
        held = read_holder(path)
        if held is None or held[0].get("token") != token:
            log.warning("lock %s is no longer held by this process", path)
            return
        os.utime(path)


@contextmanager
def hold_lock(path, what, stale_after_s=STALE_AFTER_S, poll_s=POLL_S, heartbeat_s=None, sleep=time.sleep,
              clock=time.time, alive=pid_alive):
    """Hold the lock file `path` for the block (`acquire`, a heartbeat thread, `release`). The heartbeat
    comes every `heartbeat_s` seconds (default: HEARTBEAT_S, at most a quarter of `stale_after_s`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    token = acquire(path, what, stale_after_s, poll_s, sleep, clock, alive)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, daemon=True,
                            args=(path, token, heartbeat_s or min(HEARTBEAT_S, stale_after_s / 4), stop))
    beat.start()
    try:
        yield token
    finally:
        stop.set()
        beat.join()
        release(path, token)
