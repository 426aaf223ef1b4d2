"""A member's classifier features, read back from the embedding store: DNABERT-S then ESM-2 values of
every frame, and the feature file the `features` command writes.

A member (a sample or a training set) is named by its plan (`virnucpro.io.members`: the store, the
namespaces, the store files holding its frames, and its frame list). `iter_features(member)` yields
its frames in the order of its frame list, in chunks of at most `CHUNK` frames: (frame ids, features
(n, 768 + 2560) float32 for the real models, DNABERT-S first, as the original concatenates them).
Every frame must be in the store under both namespaces: a missing one is an error naming the frame,
so that the counts embedded, read and classified always agree. Every chunk read is checked against
its checksum: a store file that fails (damaged after the plan checked it) is set aside and the read
stops with one line saying to plan again. Where a width is asked for, every frame must have that many
values. `gather_features` (all frames at once) and `write_features` (the feature file: HDF5 datasets
`ids` (N,) UTF-8 strings and `embeddings` (N, D) float32, with attributes naming the content and each
encoder's namespace) read through `iter_features`, so every reader makes the same checks.
"""

import logging

import numpy as np

from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import atomic_outputs
from virnucpro.io.members import ENCODERS, PLAN_AGAIN, frame_list, read_member
from virnucpro.io.store import Namespace, StoreFileError, StoreIndex, set_aside

log = logging.getLogger("virnucpro")
CHUNK = 8192  # frames read (and classified) at once
CONTENT = "classifier features: DNABERT-S embedding then ESM-2 embedding"


def _failed(exc):
    """The one-line error for a store file that failed its check after the plan: it is set aside first,
    so that the next plan embeds its frames again."""
    return VirNucProError(f"store file {exc.path}: {exc.problem}; {set_aside(exc.path)}; {PLAN_AGAIN}: the plan "
                          "embeds its frames again")


def _indexes(member):
    """{encoder: StoreIndex} over the store files a member's plan names (a file gone from the store is
    left out: its frames are then reported missing)."""
    indexes = {}
    for e in ENCODERS:
        folder = Namespace.from_json(member["namespaces"][e]).directory(member["store"])
        try:
            indexes[e] = StoreIndex([folder / n for n in member["files"][e] if (folder / n).is_file()])
        except StoreFileError as exc:
            raise _failed(exc) from None
    return indexes


def iter_features(path, chunk=CHUNK, width=None, wanted_by="the classifier"):
    """Yield (ids, features) chunks of the member whose plan is `path`; see the module docstring. `width`,
    when given, is the number of values per frame that `wanted_by` (for the message) expects."""
    member = read_member(path)
    indexes = _indexes(member)
    frames = frame_list(path, member)
    while part := [f for _, f in zip(range(chunk), frames)]:
        ids, keys = [f[0] for f in part], [f[1] for f in part]
        values = [_read(indexes[e], keys, ids, member, e) for e in ENCODERS]
        features = np.concatenate([values[1], values[0]], axis=1)  # DNABERT-S first
        if width is not None and features.shape[1] != width:
            raise VirNucProError(f"{path}: features have {features.shape[1]} values per frame, {wanted_by} "
                                 f"expects {width}")
        yield ids, features


def _read(index, keys, ids, member, encoder):
    try:
        return index.read(keys, labels=ids)
    except StoreFileError as exc:
        raise _failed(exc) from None
    except VirNucProError as exc:
        where = Namespace.from_json(member["namespaces"][encoder]).directory(member["store"])
        raise VirNucProError(f"{exc} ({encoder}, {where}): the store lost it since the plan was made; "
                             f"{PLAN_AGAIN}") from None


def gather_features(path, width=None):
    """(ids, features) of all of a member's frames at once (`width` as in `iter_features`)."""
    ids, parts = [], []
    for chunk_ids, values in iter_features(path, width=width):
        ids += chunk_ids
        parts.append(values)
    return ids, (np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32))


def write_features(path, out):
    """The `features` command: all of a member's features (`gather_features`) written to the HDF5 file
    `out`, which appears only once complete."""
    import h5py  # heavy: only the steps that read embeddings need it

    ids, values = gather_features(path)
    member = read_member(path)
    with atomic_outputs(out) as (tmp,):
        with h5py.File(tmp, "w") as f:
            f.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
            f.create_dataset("embeddings", data=np.asarray(values, dtype=np.float32))
            f.attrs["content"] = CONTENT
            for e, namespace in member["namespaces"].items():
                f.attrs[f"{e}_namespace"] = namespace["id"]
    log.info("%d frames of %s: features -> %s", len(ids), member["member"], out)
    return out
