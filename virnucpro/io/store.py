"""The embedding store: frame embeddings kept by content, shared between runs and projects.

A frame's key is `frame_key(nucleotide, protein)`: the sha256 (64 hex digits) of its nucleotide slice and
its protein. Embeddings live in namespaces, one per encoder and per everything that decides its numbers
(the model files' checksums, the precision, the pooling rule, the truncation): a `Namespace`, whose `id`
is the first 16 hex digits of the sha256 of its canonical JSON. A changed model, precision or pooling
rule is another namespace, so it can never reuse old embeddings. On disk:

    {root}/{encoder}-{id}/namespace.json   the namespace's fields
    {root}/{encoder}-{id}/{name}.h5        one file per embedded shard
    {root}/{encoder}-{id}/quarantine/      store files that failed their check, set aside (never read)

A store file is plain HDF5: dataset `keys` (N,) 64-character ASCII strings, dataset `embeddings` (N, D)
float32, and attributes holding every namespace field plus how the file was made (device, software,
batch size). Files are written under a temporary name, renamed when complete and never changed
afterwards: readers see whole files only, concurrent writers (each writing its own shard, locally or on
a cluster's shared file system) cannot corrupt the store, and a killed writer leaves only a `.tmp-*`
file, which readers ignore. A key may sit in more than one file (two runs embedding one frame at the
same time); the first file in name order serves it.

Every store file checks itself. Both datasets are stored in chunks of CHUNK_ROWS rows with HDF5's
Fletcher-32 filter, so every read (`read_keys`, `StoreIndex.read`) verifies each chunk it touches; and
each dataset's attribute `sha256` holds the sha256 of its bytes as an array (C order, `S64` keys,
little-endian float32 embeddings: `hashlib.sha256(f["embeddings"][()].tobytes())`), which the full
check `verify_store_file` compares as well. The sha256 catches what Fletcher-32 cannot: HDF5's
Fletcher-32 sums 16-bit words modulo 65535, so a word turned from 0x0000 to 0xFFFF (the high half of a
0.0 turned into NaN) passes it. A file that fails a check raises `StoreFileError`; `set_aside` moves it
into the namespace's `quarantine/` folder, where no reader looks.
"""

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from virnucpro.errors import VirNucProError, first_line
from virnucpro.io.atomic import atomic_outputs

log = logging.getLogger("virnucpro")

FORMAT = 2  # of the store layout, part of every namespace; 2: checksummed chunks and sha256 per dataset
KEY_LENGTH = 64
CHUNK_ROWS = 256  # rows per HDF5 chunk, each with its Fletcher-32 checksum
READ_GAP = CHUNK_ROWS  # rows: needed rows closer than this are read as one slice (so no chunk is read twice)
VERIFY_ROWS = 16 * CHUNK_ROWS  # rows hashed at once by the full check
QUARANTINE = "quarantine"
STALE_TEMP_S = 24 * 3600  # a temporary file this old belongs to a killed writer


def frame_key(nucleotide, protein):
    """The store key of a frame: sha256 hex of `nucleotide` + TAB + `protein` (both str, as prepare writes them)."""
    return hashlib.sha256(f"{nucleotide}\t{protein}".encode("ascii")).hexdigest()


@dataclass(frozen=True)
class Namespace:
    """What makes an encoder's embeddings: `encoder` (e.g. "esm2") and `fields` (JSON-able values)."""

    encoder: str
    fields: tuple  # sorted (name, value) pairs

    @classmethod
    def of(cls, encoder, **fields):
        return cls(encoder, tuple(sorted({**fields, "format": FORMAT}.items())))

    @classmethod
    def from_json(cls, data):
        return cls(data["encoder"], tuple(sorted((k, v) for k, v in data["fields"].items())))

    def to_json(self):
        return {"encoder": self.encoder, "id": self.id, "fields": dict(self.fields)}

    @property
    def id(self):
        canonical = json.dumps({"encoder": self.encoder, **dict(self.fields)}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def name(self):
        return f"{self.encoder}-{self.id}"

    def directory(self, root):
        return Path(root) / self.name


def store_files(root, namespace):
    """The complete store files of a namespace, in name order (temporary files left out)."""
    folder = namespace.directory(root)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.h5") if not p.name.startswith(".tmp-"))


def remove_stale_temporaries(root, namespace, now=None):
    """Delete `.tmp-*` files of killed writers (older than STALE_TEMP_S); returns how many went."""
    folder = namespace.directory(root)
    now = time.time() if now is None else now
    removed = 0
    for tmp in folder.glob(".tmp-*") if folder.is_dir() else []:
        try:
            if now - tmp.stat().st_mtime > STALE_TEMP_S:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    if removed:
        log.info("removed %d stale temporary file(s) of killed writers from %s", removed, folder)
    return removed


class StoreFileError(VirNucProError):
    """A store file failed its check (unreadable, not a store file, or content that differs from its
    checksums): `path` and `problem` make up the one-line message."""

    def __init__(self, path, problem):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


_H5_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError)  # what h5py raises on a damaged file


def _open(path):
    import h5py  # heavy: only the embedding stage needs it

    path = Path(path)
    if path.exists() and not os.access(path, os.R_OK):  # a setup problem, not a damaged file
        raise VirNucProError(f"{path}: store file not readable (permission denied)")
    try:  # no file lock: store files never change once complete, and some network file systems have none
        return h5py.File(path, "r", locking=False)
    except _H5_ERRORS as exc:
        raise StoreFileError(path, f"not a readable store file ({first_line(exc)})") from None


def _dataset(f, path, name):
    try:
        return f[name]
    except _H5_ERRORS:
        raise StoreFileError(path, f"not a store file (no readable '{name}' dataset)") from None


def read_keys(path):
    """The keys of one store file, (N,) bytes array (every chunk checked against its Fletcher-32)."""
    with _open(path) as f:
        try:
            keys = _dataset(f, path, "keys")[()]
        except _H5_ERRORS as exc:
            raise StoreFileError(path, f"its keys fail their checksums ({first_line(exc)})") from None
    return np.asarray(keys, dtype=f"S{KEY_LENGTH}")


def verify_store_file(path, namespace=None):
    """Read every chunk of a store file's keys and embeddings (Fletcher-32 checked by HDF5) and compare
    each dataset's sha256 attribute, its shapes and dtypes, and, given `namespace`, the namespace it was
    written for; raises StoreFileError naming the first problem. Returns the number of rows."""
    with _open(path) as f:
        keys, emb = _dataset(f, path, "keys"), _dataset(f, path, "embeddings")
        if keys.ndim != 1 or keys.dtype != np.dtype(f"S{KEY_LENGTH}") or emb.ndim != 2 or emb.shape[0] != keys.shape[0]:
            raise StoreFileError(path, f"not a store file (keys {keys.shape} {keys.dtype}, embeddings {emb.shape})")
        if emb.dtype != np.float32:
            raise StoreFileError(path, f"embeddings are {emb.dtype}, not float32")
        if namespace is not None and f.attrs.get("namespace") != namespace.id:
            raise StoreFileError(path, f"written for namespace {f.attrs.get('namespace')}, not {namespace.id}")
        for data in (keys, emb):
            _verify_dataset(path, data)
        return int(keys.shape[0])


def _verify_dataset(path, data):
    """Every chunk of `data` read (Fletcher-32) and hashed against its sha256 attribute."""
    name = data.name.lstrip("/")
    if not data.fletcher32 or "sha256" not in data.attrs:
        raise StoreFileError(path, f"'{name}' carries no checksums (not written by this store format)")
    h = hashlib.sha256()
    for lo in range(0, data.shape[0], VERIFY_ROWS):
        hi = min(lo + VERIFY_ROWS, data.shape[0])
        try:
            h.update(np.ascontiguousarray(data[lo:hi]).tobytes())
        except _H5_ERRORS as exc:
            raise StoreFileError(path, f"'{name}' rows {lo}-{hi - 1} fail their checksums ({first_line(exc)})") from None
    if h.hexdigest() != data.attrs["sha256"]:
        raise StoreFileError(path, f"'{name}' differs from its sha256 ({h.hexdigest()}, recorded {data.attrs['sha256']})")


def set_aside(path, now=None):
    """Move a store file that failed its check into `quarantine/` beside it, as `{name}.corrupt-{UTC
    time}` (never deleted; readers do not look there). Returns what happened, for the caller's one line:
    "moved to ...", "gone already (set aside by another job)" or "cannot be moved (...)"."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    dest = path.parent / QUARANTINE / f"{path.name}.corrupt-{stamp}"
    try:
        dest.parent.mkdir(exist_ok=True)
        if dest.exists():  # set aside twice within a second: keep both
            dest = dest.with_name(f"{dest.name}-{os.getpid()}")
        os.rename(path, dest)
    except FileNotFoundError:
        return "gone already (set aside by another job)"
    except OSError as exc:
        return f"cannot be moved aside ({exc.strerror or exc}), so it is left in place"
    return f"moved to {dest}"


def write_store_file(root, namespace, name, keys, embeddings, provenance):
    """Write one store file `{name}.h5` of `namespace` (and its namespace.json); returns its path."""
    import h5py

    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    keys = np.asarray(keys, dtype=f"S{KEY_LENGTH}")
    if embeddings.ndim != 2 or embeddings.shape[0] != keys.shape[0]:
        raise ValueError(f"embeddings {embeddings.shape} do not match {keys.shape[0]} keys")
    folder = namespace.directory(root)
    folder.mkdir(parents=True, exist_ok=True)
    described = folder / "namespace.json"
    if not described.is_file():
        with atomic_outputs(described) as (tmp,):
            tmp.write_text(json.dumps(namespace.to_json(), indent=1, sort_keys=True) + "\n")
    path = folder / f"{name}.h5"
    with atomic_outputs(path) as (tmp,):
        with h5py.File(tmp, "w") as f:
            _write_dataset(f, "keys", keys)
            _write_dataset(f, "embeddings", embeddings)
            for key, value in {**dict(namespace.fields), **provenance}.items():
                f.attrs[key] = str(value) if isinstance(value, str) else value  # plain str (torch's version is a subclass)
            f.attrs["encoder"] = namespace.encoder
            f.attrs["namespace"] = namespace.id
    return path


def _write_dataset(f, name, data):
    """`data` as a dataset in chunks of CHUNK_ROWS rows with Fletcher-32, its sha256 as an attribute
    (maxshape open along the rows, so that an empty dataset can be chunked too)."""
    rows = max(1, min(CHUNK_ROWS, data.shape[0]))
    ds = f.create_dataset(name, data=data, chunks=(rows, *data.shape[1:]), maxshape=(None, *data.shape[1:]),
                          fletcher32=True)
    ds.attrs["sha256"] = hashlib.sha256(data.tobytes()).hexdigest()


class StoreIndex:
    """Where each key of a set of store files lives; reads embeddings by key.

    `files` are read in the order given; the first file holding a key serves it. A file whose keys cannot
    be read raises StoreFileError, unless `bad` is a list: then the error is appended to it and the file
    left out (`files` holds the others). Reads check every chunk they touch (Fletcher-32); a failing
    chunk raises StoreFileError.
    """

    def __init__(self, files, bad=None):
        self.files = []
        self.where = {}  # key (bytes) -> (file index, row)
        self._width = None
        for path in map(Path, files):
            try:
                keys = read_keys(path).tolist()
            except StoreFileError as exc:
                if bad is None:
                    raise
                bad.append(exc)
                continue
            for row, key in enumerate(keys):
                self.where.setdefault(key, (len(self.files), row))
            self.files.append(path)

    def missing(self, keys):
        """Indices of the keys (str or bytes) that no file holds."""
        return [i for i, k in enumerate(keys) if _as_bytes(k) not in self.where]

    def read(self, keys, labels=None):
        """(len(keys), D) float32 embeddings of `keys`; a missing key is an error naming it (or its label)."""
        absent = self.missing(keys)
        if absent:
            first = labels[absent[0]] if labels is not None else _as_str(keys[absent[0]])
            raise VirNucProError(
                f"frame '{first}' and {len(absent) - 1} more are not in the embedding store"
                if len(absent) > 1 else f"frame '{first}' is not in the embedding store"
            )
        located = [self.where[_as_bytes(k)] for k in keys]
        out = np.zeros((len(keys), self.width()), dtype=np.float32)
        if not located:
            return out
        file_of = np.fromiter((f for f, _ in located), dtype=np.int64, count=len(located))
        row_of = np.fromiter((r for _, r in located), dtype=np.int64, count=len(located))
        for f in np.unique(file_of):
            take = np.flatnonzero(file_of == f)
            out[take] = _read_rows(self.files[f], row_of[take])
        return out

    def width(self):
        """Values per embedding (0 without files), read from the first file once."""
        if self._width is None:
            self._width = 0
            if self.files:
                with _open(self.files[0]) as f:
                    self._width = int(_dataset(f, self.files[0], "embeddings").shape[1])
        return self._width


def _read_rows(path, rows):
    """Rows `rows` (any order, repeats allowed) of a store file's embeddings; needed rows less than
    READ_GAP apart are read as one slice."""
    order = np.unique(rows)
    breaks = np.flatnonzero(np.diff(order) > READ_GAP) + 1
    with _open(path) as f:
        data = _dataset(f, path, "embeddings")
        unique = np.empty((order.size, data.shape[1]), dtype=np.float32)
        done = 0
        for run in np.split(order, breaks):
            lo, hi = int(run[0]), int(run[-1]) + 1
            try:
                unique[done : done + run.size] = np.asarray(data[lo:hi], dtype=np.float32)[run - lo]
            except _H5_ERRORS as exc:
                raise StoreFileError(path, f"'embeddings' rows {lo}-{hi - 1} fail their checksums "
                                           f"({first_line(exc)})") from None
            done += run.size
    return unique[np.searchsorted(order, rows)]


def _as_bytes(key):
    return key if isinstance(key, bytes) else key.encode("ascii")


def _as_str(key):
    return key.decode("ascii") if isinstance(key, bytes) else key
