"""Recorded model checksums: written when a model file has been verified, checked before it is loaded.

The record of a model file `F` is `F.sha256sum`, one line in `sha256sum` format (`<hex>  <name>`), so
`sha256sum -c F.sha256sum` checks it by hand as well. The download rules write the records of the files
they fetched and verified (with the files, atomically), and `convert_classifier` the record of the file
it converted. Every step that loads a model calls `verify_recorded(F)` first: when a record exists, the
file's sha256 must equal it, or the step stops with one line before anything is loaded or written. A file
the user points at without a record is not checked here; its sha256 goes into the outputs' attributes
(`virnucpro.embeddings.file_sha256`) as before. (The JSON `F.sha256` beside a file is a different thing:
a hash cache keyed on size and mtime, never a reference.)
"""

import hashlib
from pathlib import Path

from virnucpro.errors import VirNucProError

SUFFIX = ".sha256sum"
_CHUNK = 16 << 20


def record_path(path):
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_record(path, record=None, digest=None):
    """Write the record of `path` (to `record`, default `record_path(path)`, e.g. a temporary name)."""
    path = Path(path)
    digest = digest or sha256_of(path)
    Path(record or record_path(path)).write_text(f"{digest}  {path.name}\n")
    return digest


def verify_recorded(path):
    """Check `path` against its record, if there is one; returns the sha256 checked, or None."""
    path = Path(path)
    record = record_path(path)
    if not record.is_file():
        return None
    try:
        expected = record.read_text().split()[0].lower()
    except (OSError, UnicodeDecodeError, IndexError):
        raise VirNucProError(f"{record}: unreadable checksum record; delete it or download the model again") from None
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise VirNucProError(f"{record}: not a sha256 checksum record; delete it or download the model again")
    digest = sha256_of(path)
    if digest != expected:
        raise VirNucProError(
            f"{path}: sha256 {digest} differs from the checksum recorded when it was verified ({expected}, "
            f"in {record.name}): the file changed since; download it again, or delete the record if the "
            "change is intended"
        )
    return digest
