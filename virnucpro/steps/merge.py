"""Classifier features read back from the embedding store: DNABERT-S then ESM-2 values of every frame.

A member (a sample or a training set) is named by its frames (`frames.fna` and `frames.faa` from
`prepare`) and its plan record (`members/{name}.json` of the embedding plan: the store, the namespaces and
the store files holding its frames). `iter_features` yields its frames in the order of its frames files,
in chunks of at most `chunk` frames: (frame ids, features (n, 768 + 2560) float32 for the real models,
DNABERT-S first, as the original concatenates them). Every frame must be in the store under both
namespaces: a missing one is an error naming the frame, so that the counts embedded, read and
classified always agree. Every chunk read is checked against its checksum: a store file that fails (it
was damaged after the plan checked it) is set aside and the read stops with one line saying to plan
again. The frames must be those the plan was made from, and, where a width is asked for, every frame
must have that many values. `gather_features` (all frames at once) and `write_features`
(the `features` step: an HDF5 file) read through `iter_features`, so every reader makes the same checks.
"""

import json
import logging
from pathlib import Path

import numpy as np

from virnucpro.errors import VirNucProError
from virnucpro.io.store import Namespace, StoreFileError, StoreIndex, set_aside
from virnucpro.steps.plan import ENCODERS, member_frames

log = logging.getLogger("virnucpro")
CHUNK = 8192  # frames read and classified at once


def read_member(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise VirNucProError(f"{path}: not a readable plan record ({exc})") from None


def member_indexes(record):
    """{encoder: StoreIndex} over the store files a plan record names (a file gone from the store is left
    out: its frames are then reported missing; a file that fails its check is set aside, see `_failed`)."""
    indexes = {}
    for e in ENCODERS:
        folder = Namespace.from_json(record["namespaces"][e]).directory(record["store"])
        try:
            indexes[e] = StoreIndex([folder / n for n in record["files"][e] if (folder / n).is_file()])
        except StoreFileError as exc:
            raise _failed(exc) from None
    return indexes


PLAN_AGAIN = "plan again (snakemake --forcerun plan): the plan embeds its frames again"


def _failed(exc):
    """The one-line error for a store file that failed its check after the plan: it is set aside first,
    so that the next plan embeds its frames again."""
    return VirNucProError(f"store file {exc.path}: {exc.problem}; {set_aside(exc.path)}; {PLAN_AGAIN}")


def iter_features(dna, protein, member, chunk=CHUNK, width=None, wanted_by="the classifier"):
    """Yield (ids, features) chunks of a member's frames; see the module docstring. `width`, when given,
    is the number of values per frame that `wanted_by` (for the message) expects."""
    record = read_member(member)
    if record.get("skipped"):
        raise VirNucProError(f"'{record['member']}' was left out of the embedding plan: its front end failed "
                             f"({record['skipped']})")
    indexes = member_indexes(record)
    frames = member_frames(record["member"], dna, protein)
    seen = 0
    while True:
        part = [f for _, f in zip(range(chunk), frames)]
        if not part:
            break
        seen += len(part)
        ids, keys = [f[0] for f in part], [f[1] for f in part]
        values = [_read(indexes[e], keys, ids, record, e) for e in ENCODERS]
        features = np.concatenate([values[1], values[0]], axis=1)  # DNABERT-S first
        if width is not None and features.shape[1] != width:
            raise VirNucProError(f"{member}: features have {features.shape[1]} values per frame, {wanted_by} "
                                 f"expects {width}")
        yield ids, features
    if seen != record["frames"]:
        raise VirNucProError(
            f"{dna}: {seen} frames, but the embedding plan ({member}) was made for {record['frames']}; "
            "the frames changed since: run the workflow again"
        )


def _read(index, keys, ids, record, encoder):
    try:
        return index.read(keys, labels=ids)
    except StoreFileError as exc:
        raise _failed(exc) from None
    except VirNucProError as exc:
        where = Namespace.from_json(record["namespaces"][encoder]).directory(record["store"])
        raise VirNucProError(
            f"{exc} ({encoder}, {where}): the store lost it since the plan was made; plan again "
            "(snakemake --forcerun plan)"
        ) from None


def gather_features(dna, protein, member, width=None):
    """(ids, features) of all of a member's frames at once (`width` as in `iter_features`)."""
    ids, parts = [], []
    for chunk_ids, values in iter_features(dna, protein, member, width=width):
        ids += chunk_ids
        parts.append(values)
    return ids, (np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32))


FEATURES_CONTENT = "classifier features: DNABERT-S embedding then ESM-2 embedding"


def write_features(dna, protein, member, out):
    """The `features` step: all of a member's features (`gather_features`) written to the HDF5 file `out`
    (datasets ids, embeddings; attributes naming the content and each encoder's namespace)."""
    from virnucpro.io.embeddings import write_embeddings

    ids, values = gather_features(dna, protein, member)
    record = read_member(member)
    attrs = {"content": FEATURES_CONTENT, **{f"{e}_namespace": ns["id"] for e, ns in record["namespaces"].items()}}
    write_embeddings(out, ids, values, attrs)
    log.info("%d frames of %s: features -> %s", len(ids), record["member"], out)
    return out
