"""Feature files (HDF5), as `virnucpro features` exports them.

A feature file holds dataset `ids` (N,) UTF-8 strings in input order, dataset `embeddings` (N, D)
float32, and attributes describing how they were made.
"""

import numpy as np

from virnucpro.io.atomic import atomic_outputs


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

