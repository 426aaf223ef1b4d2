"""Given features put into a real embedding store, as the embedding stage leaves them for a sample.

`stored_features(directory, ids, features, dna_dim)` writes a sample's frames (`frames.fna`, `frames.faa`,
one random frame per id, distinct contents), stores `features[:, :dna_dim]` as its DNABERT-S embeddings and
the rest as its ESM-2 embeddings (two store files each, so reads cross files), and plans the sample with
the real `plan_embeddings`, which finds every frame stored; returns the sample's member plan.
"""

from pathlib import Path

import numpy as np

from virnucpro.io.store import Namespace, frame_key, write_store_file
from virnucpro.steps.plan import plan_embeddings

NAMESPACES = {
    "esm2": Namespace.of("esm2", model_sha256="e" * 64, precision="float32", pooling="test"),
    "dnabert_s": Namespace.of("dnabert_s", weights_sha256="d" * 64, precision="float32", pooling="test"),
}


def random_frames(ids, seed=0):
    """{id: (nucleotide, protein)}: distinct random frames."""
    rng = np.random.default_rng(seed)
    frames = {}
    for i in ids:
        protein = "M" + "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 40))
        frames[i] = ("".join(rng.choice(list("ACGT"), 3 * len(protein) + 1)), protein)
    return frames


def stored_features(directory, ids, features, dna_dim, name="s", seed=0):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    frames = random_frames(ids, seed)
    dna, protein = directory / "frames.fna", directory / "frames.faa"
    dna.write_text("".join(f">{i}\n{frames[i][0]}\n" for i in ids))
    protein.write_text("".join(f">{i}\n{frames[i][1]}\n" for i in ids))
    keys = [frame_key(*frames[i]) for i in ids]
    features = np.asarray(features, dtype=np.float32)
    store = directory / "store"
    half = len(ids) // 2
    for part, rows in (("a", slice(0, half)), ("b", slice(half, None))):
        write_store_file(store, NAMESPACES["dnabert_s"], part, keys[rows], features[rows, :dna_dim], {})
        write_store_file(store, NAMESPACES["esm2"], part, keys[rows], features[rows, dna_dim:], {})
    plan_embeddings({name: (dna, protein)}, directory / "plan", directory / "members", store, NAMESPACES, 10**9, "cpu")
    return directory / "members" / f"{name}.json"
