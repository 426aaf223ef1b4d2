"""Model file checksums, computed once per file content and checked cheaply wherever a file is used.

One mechanism, one record format. The record of a file `F` is the JSON file `F.checksum.json`:
{"sha256", "size", "mtime_ns", "verified"}. `verified` says how the content was verified when the record
was written (a download, or a file placed by hand where the download would be, checked against a
published id; a conversion checked against its source), or is null for a file that was only hashed:
an unverified file (`verification` reads it as "unverified"). The record lives beside F; where F's folder is not writable, the
same record lives in the user's cache instead (`$XDG_CACHE_HOME/virnucpro/checksums/`, named after F's
absolute path). Where neither can be written, the sha256 is kept for the rest of the process.

`checked_sha256(F)` is what every step calls before it loads F: while F's size and mtime equal the
record's, the recorded sha256 is returned without reading F. Otherwise F is hashed again (a file
replaced in place has another mtime, even when it is an older file): if the record was verified and the
content differs, F changed since it was verified and the step stops with one line; if the content is the
same (a copy, a touch), or the record was not a verified one, the record is rewritten and the new sha256
returned. By hand: `sha256sum F` and the record's "sha256".
"""

import hashlib
import json
import logging
import os
from pathlib import Path

from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import atomic_outputs

log = logging.getLogger("virnucpro")

SUFFIX = ".checksum.json"
_CHUNK = 16 << 20
_HASH_NOTE_ABOVE = 1 << 30  # bytes: hashing larger files is logged (it takes seconds)
_HASHED = {}  # (path, device, inode, size, mtime_ns, ctime_ns) -> sha256 of files no record could be kept for


def record_path(path):
    """Where the record of `path` lives: beside it (the cache only when its folder is read-only)."""
    path = Path(path)
    beside = path.with_name(path.name + SUFFIX)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # a folder still to be made: its ancestor decides
        folder = folder.parent
    if beside.exists() or os.access(folder, os.W_OK):
        return beside
    return _cache_path(path)


def _cache_path(path):
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "virnucpro" / "checksums"
    return base / (hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:32] + ".json")


def sha256_of(path):
    path = Path(path)
    if path.stat().st_size > _HASH_NOTE_ABOVE:
        log.info("computing the sha256 of %s (%.1f GB) once", path, path.stat().st_size / 1e9)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_record(path, digest=None, verified=None, record=None):
    """Record `path`'s sha256 (computed unless given), size and mtime, in `record` (default: its record
    path; a temporary name when the caller renames it into place with the file). Returns the sha256."""
    path = Path(path)
    st = path.stat()
    digest = digest or sha256_of(path)
    data = {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "verified": verified}
    with atomic_outputs(Path(record) if record is not None else record_path(path)) as (tmp,):
        tmp.write_text(json.dumps(data) + "\n")
    return digest


def read_record(path):
    """The record of `path` as a dict, or None when there is none; a malformed one is an error."""
    record = record_path(path)
    if not record.is_file():
        return None
    try:
        data = json.loads(record.read_text())
        ok = isinstance(data, dict) and isinstance(data.get("sha256"), str) and len(data["sha256"]) == 64
        ok = ok and all(isinstance(data.get(k), int) for k in ("size", "mtime_ns"))
    except (OSError, ValueError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise VirNucProError(f"{record}: not a checksum record; delete it (the file is then hashed again)")
    return data


def checked_sha256(path):
    """The sha256 of `path`, from its record while size and mtime match; see the module docstring."""
    path = Path(path)
    st = path.stat()
    record = read_record(path)
    if record and record["size"] == st.st_size and record["mtime_ns"] == st.st_mtime_ns:
        return record["sha256"]
    state = (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if state in _HASHED:  # hashed by this process already, its record could not be written
        return _HASHED[state]
    digest = sha256_of(path)
    verified = record.get("verified") if record else None
    if verified and digest != record["sha256"]:
        raise VirNucProError(
            f"{path}: sha256 {digest} differs from the checksum recorded when it was verified "
            f"({record['sha256']}, {verified}): the file changed since; download or convert it again, or "
            f"delete {record_path(path).name} if the change is intended"
        )
    try:
        write_record(path, digest, verified)  # keeps `verified`: the content is the verified one
    except OSError as exc:
        _HASHED[state] = digest
        log.warning("cannot record the checksum of %s (%s); this process hashes it only once", path, exc)
    return digest


def is_verified(path):
    """True when `path` has a verified record for its size and modification time now."""
    st = Path(path).stat()
    record = read_record(path)
    return bool(record and record.get("verified") and record["size"] == st.st_size
                and record["mtime_ns"] == st.st_mtime_ns)


def verification(path):
    """How `path` was verified, as its record says, or "unverified" (call `checked_sha256` first: it
    keeps the record current)."""
    return (read_record(path) or {}).get("verified") or "unverified"
