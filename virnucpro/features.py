"""Classifier features: DNABERT-S and ESM-2 embeddings of the same frames, joined by frame id.

`merge_embeddings(dna, protein, out)` reads two embedding files (see `virnucpro.embeddings`) and writes
one in the same layout whose row i is `dna[i] ++ protein[id_i]` (768 + 2560 = 3328 values for the real
models; DNABERT-S first, as the original concatenates them), rows in the DNA file's id order. Every
frame must appear exactly once in each file: a frame missing from either file, or an id repeated
within a file, is an error naming the frame and the files. The output's attributes record both
sources (path, sha256, width) and the model attributes of each, prefixed `dna_` / `protein_`.
With `frames` (the shard's FASTA that both embedding steps read), the embedded ids must be exactly that
file's frames in its order: a frame that was not embedded, or an embedding of a frame the shard does not
hold, is an error naming the frame, so the counts embedded, merged and classified always agree.
"""

import logging
from collections import Counter

import numpy as np

from virnucpro.embeddings import file_sha256, read_embeddings, write_embeddings
from virnucpro.errors import VirNucProError
from virnucpro.seqio import read_fasta

log = logging.getLogger("virnucpro")
_SHOWN = 3  # ids named in an error message


def _named(ids):
    shown = ", ".join(f"'{i}'" for i in ids[:_SHOWN])
    more = f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else ""
    return f"{shown}{more}"


def _check_unique(ids, path):
    if len(set(ids)) != len(ids):
        dup = [i for i, n in Counter(ids).items() if n > 1]
        raise VirNucProError(f"{path}: frame id {_named(dup)} appears more than once")


def check_same_frames(expected, expected_path, found, found_path, what):
    """`found` (ids of `found_path`) must be `expected` (ids of `expected_path`) in the same order."""
    if found == expected:
        return
    present = set(found)
    missing = [i for i in expected if i not in present]
    if missing:
        raise VirNucProError(f"frame {_named(missing)} of {expected_path} has no {what} in {found_path}")
    known = set(expected)
    extra = [i for i in found if i not in known]
    if extra:
        raise VirNucProError(f"{found_path}: {what} of frame {_named(extra)}, which {expected_path} does not hold")
    raise VirNucProError(f"{found_path}: frames are not in the order of {expected_path} (or repeated)")


def merge_embeddings(dna, protein, out, frames=None):
    """Join DNABERT-S (`dna`) and ESM-2 (`protein`) embeddings by frame id into `out`; returns N frames."""
    dna_ids, dna_emb, dna_attrs = read_embeddings(dna)
    prot_ids, prot_emb, prot_attrs = read_embeddings(protein)
    _check_unique(dna_ids, dna)
    _check_unique(prot_ids, protein)
    if frames is not None:
        shard_ids = [i for i, _ in read_fasta(frames)]
        check_same_frames(shard_ids, frames, dna_ids, dna, "DNABERT-S embedding")
        check_same_frames(shard_ids, frames, prot_ids, protein, "ESM-2 embedding")
    row = {frame: i for i, frame in enumerate(prot_ids)}
    missing = [i for i in dna_ids if i not in row]
    if missing:
        raise VirNucProError(f"frame {_named(missing)} of {dna} is missing from {protein}")
    if len(prot_ids) != len(dna_ids):
        present = set(dna_ids)
        extra = [i for i in prot_ids if i not in present]
        raise VirNucProError(f"frame {_named(extra)} of {protein} is missing from {dna}")
    order = np.fromiter((row[i] for i in dna_ids), dtype=np.int64, count=len(dna_ids))
    if dna_emb.ndim != 2 or prot_emb.ndim != 2:
        raise VirNucProError(f"{dna}, {protein}: embeddings must be (frames, values) matrices")
    features = np.concatenate([dna_emb, prot_emb[order]], axis=1)
    attrs = {f"dna_{k}": v for k, v in dna_attrs.items()}
    attrs.update({f"protein_{k}": v for k, v in prot_attrs.items()})
    attrs.update({
        "content": "classifier features: DNABERT-S embedding then ESM-2 embedding",
        "dna_source": str(dna),
        "dna_sha256": file_sha256(dna),
        "dna_dim": dna_emb.shape[1],
        "protein_source": str(protein),
        "protein_sha256": file_sha256(protein),
        "protein_dim": prot_emb.shape[1],
    })
    write_embeddings(out, dna_ids, features, attrs)
    log.info("merged %d frames (%d + %d values) -> %s", len(dna_ids), attrs["dna_dim"], attrs["protein_dim"], out)
    return len(dna_ids)
