"""The embedding store: frame embeddings kept by content, shared between runs and projects.

A frame's key is `frame_key(nucleotide, protein)`: the sha256 (64 hex digits) of its nucleotide slice and
its protein. Embeddings live in namespaces, one per encoder and per everything that decides its numbers
(the model files' checksums, the precision, the pooling rule, the truncation): a `Namespace`, whose `id`
is the first 16 hex digits of the sha256 of its canonical JSON. A changed model, precision or pooling
rule is another namespace, so it can never reuse old embeddings. On disk:

    {root}/{encoder}-{id}/namespace.json   the namespace's fields
    {root}/{encoder}-{id}/{name}.h5        one file per embedded shard

A store file is plain HDF5: dataset `keys` (N,) 64-character ASCII strings, dataset `embeddings` (N, D)
float32, and attributes holding every namespace field plus how the file was made (device, software,
batch size). Files are written under a temporary name, renamed when complete and never changed
afterwards: readers see whole files only, concurrent writers (each writing its own shard, locally or on
a cluster's shared file system) cannot corrupt the store, and a killed writer leaves only a `.tmp-*`
file, which readers ignore. A key may sit in more than one file (two runs embedding one frame at the
same time); the first file in name order serves it.
"""

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import atomic_outputs

log = logging.getLogger("virnucpro")

FORMAT = 1  # of the store layout; part of every namespace
KEY_LENGTH = 64
READ_GAP = 256  # rows: needed rows closer than this are read as one slice
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


def _open(path):
    import h5py  # heavy: only the embedding stage needs it

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise VirNucProError(f"{path}: not a readable store file ({exc})") from None


def read_keys(path):
    """The keys of one store file, (N,) bytes array."""
    with _open(path) as f:
        try:
            keys = f["keys"][()]
        except KeyError:
            raise VirNucProError(f"{path}: not a store file (no 'keys' dataset)") from None
    return np.asarray(keys, dtype=f"S{KEY_LENGTH}")


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
            f.create_dataset("keys", data=keys)
            f.create_dataset("embeddings", data=embeddings)
            for key, value in {**dict(namespace.fields), **provenance}.items():
                f.attrs[key] = str(value) if isinstance(value, str) else value  # plain str (torch's version is a subclass)
            f.attrs["encoder"] = namespace.encoder
            f.attrs["namespace"] = namespace.id
    return path


class StoreIndex:
    """Where each key of a set of store files lives; reads embeddings by key.

    `files` are read in the order given; the first file holding a key serves it.
    """

    def __init__(self, files):
        self.files = [Path(p) for p in files]
        self.where = {}  # key (bytes) -> (file index, row)
        self._width = None
        for f, path in enumerate(self.files):
            for row, key in enumerate(read_keys(path).tolist()):
                self.where.setdefault(key, (f, row))

    def __contains__(self, key):
        return _as_bytes(key) in self.where

    def __len__(self):
        return len(self.where)

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
                    self._width = int(f["embeddings"].shape[1])
        return self._width


def _read_rows(path, rows):
    """Rows `rows` (any order, repeats allowed) of a store file's embeddings; needed rows less than
    READ_GAP apart are read as one slice."""
    order = np.unique(rows)
    breaks = np.flatnonzero(np.diff(order) > READ_GAP) + 1
    with _open(path) as f:
        data = f["embeddings"]
        unique = np.empty((order.size, data.shape[1]), dtype=np.float32)
        done = 0
        for run in np.split(order, breaks):
            lo, hi = int(run[0]), int(run[-1]) + 1
            unique[done : done + run.size] = np.asarray(data[lo:hi], dtype=np.float32)[run - lo]
            done += run.size
    return unique[np.searchsorted(order, rows)]


def _as_bytes(key):
    return key if isinstance(key, bytes) else key.encode("ascii")


def _as_str(key):
    return key.decode("ascii") if isinstance(key, bytes) else key
