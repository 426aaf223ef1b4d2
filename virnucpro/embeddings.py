"""Feature files (HDF5), as `virnucpro features` exports them.

A feature file holds dataset `ids` (N,) UTF-8 strings in input order, dataset `embeddings` (N, D)
float32, and attributes describing how they were made.
"""

import numpy as np

from virnucpro.atomic import atomic_outputs
from virnucpro.errors import VirNucProError


def write_embeddings(path, ids, embeddings, attrs):
    """Write `ids` and `embeddings` (N, D) to HDF5 at `path`, appearing only once complete."""
    import h5py  # heavy: only the embedding steps need it

    embeddings = np.asarray(embeddings, dtype=np.float32)
    ids = list(ids)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(ids):
        raise ValueError(f"embeddings {embeddings.shape} do not match {len(ids)} ids")
    with atomic_outputs(path) as (tmp,):
        with h5py.File(tmp, "w") as f:
            f.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
            f.create_dataset("embeddings", data=embeddings)
            for key, value in attrs.items():
                f.attrs[key] = value


def read_embeddings(path):
    """(ids: list[str], embeddings: (N, D) float32, attrs: dict) from an embedding file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            ids = [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in f["ids"][()]]
            emb = np.asarray(f["embeddings"][()], dtype=np.float32)
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    except (OSError, KeyError) as exc:
        raise VirNucProError(f"{path}: not a readable embedding file ({exc})") from None
    return ids, emb, attrs
