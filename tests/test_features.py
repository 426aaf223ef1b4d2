"""Merging DNABERT-S and ESM-2 embeddings by frame id."""

import numpy as np
import pytest

from virnucpro.embeddings import read_embeddings, write_embeddings
from virnucpro.errors import VirNucProError
from virnucpro.features import merge_embeddings

FRAMES = ["seq_a_chunk_1F1", "seq_a_chunk_1R2", "seq_a_chunk_2F3", "b_chunk_1R1", "c_1_chunk_3F2"]


def make_inputs(tmp_path, dna_ids=FRAMES, protein_ids=None, seed=0):
    rng = np.random.default_rng(seed)
    protein_ids = list(reversed(FRAMES)) if protein_ids is None else protein_ids
    dna = {i: rng.normal(size=768).astype(np.float32) for i in dna_ids}
    protein = {i: rng.normal(size=2560).astype(np.float32) for i in protein_ids}
    write_embeddings(tmp_path / "dna.h5", dna_ids, np.stack([dna[i] for i in dna_ids]),
                     {"model": "DNABERT-S", "model_sha256": "d" * 64})
    write_embeddings(tmp_path / "protein.h5", protein_ids, np.stack([protein[i] for i in protein_ids]),
                     {"model": "esm2_t36_3B_UR50D", "layer": 36})
    return dna, protein


def test_join_by_id_in_dna_order(tmp_path):
    dna, protein = make_inputs(tmp_path)  # the protein file holds the frames in another order
    n = merge_embeddings(tmp_path / "dna.h5", tmp_path / "protein.h5", tmp_path / "features.h5")
    ids, emb, attrs = read_embeddings(tmp_path / "features.h5")
    assert n == len(FRAMES) and ids == FRAMES
    assert emb.shape == (len(FRAMES), 3328) and emb.dtype == np.float32
    for i, frame in enumerate(FRAMES):
        assert np.array_equal(emb[i, :768], dna[frame])  # DNABERT-S first
        assert np.array_equal(emb[i, 768:], protein[frame])
    assert attrs["dna_model"] == "DNABERT-S" and attrs["protein_model"] == "esm2_t36_3B_UR50D"
    assert attrs["dna_source"].endswith("dna.h5") and attrs["protein_source"].endswith("protein.h5")
    assert len(attrs["dna_sha256"]) == 64 and attrs["dna_sha256"] != attrs["protein_sha256"]
    assert (attrs["dna_dim"], attrs["protein_dim"]) == (768, 2560)


@pytest.mark.parametrize(
    "dna_ids, protein_ids, message",
    [
        (FRAMES, FRAMES[:-1], r"frame 'c_1_chunk_3F2' of .*dna\.h5 is missing from .*protein\.h5"),
        (FRAMES[1:], FRAMES, r"frame 'seq_a_chunk_1F1' of .*protein\.h5 is missing from .*dna\.h5"),
        (FRAMES + FRAMES[:1], FRAMES, r"dna\.h5: frame id 'seq_a_chunk_1F1' appears more than once"),
        (FRAMES, FRAMES + FRAMES[2:3], r"protein\.h5: frame id 'seq_a_chunk_2F3' appears more than once"),
    ],
)
def test_mismatches_are_errors(tmp_path, dna_ids, protein_ids, message):
    make_inputs(tmp_path, dna_ids, protein_ids)
    with pytest.raises(VirNucProError, match=message):
        merge_embeddings(tmp_path / "dna.h5", tmp_path / "protein.h5", tmp_path / "features.h5")
    assert not (tmp_path / "features.h5").exists()


def test_same_count_but_different_frames(tmp_path):
    make_inputs(tmp_path, FRAMES, FRAMES[:-1] + ["z_chunk_1F1"])
    with pytest.raises(VirNucProError, match="'c_1_chunk_3F2'"):
        merge_embeddings(tmp_path / "dna.h5", tmp_path / "protein.h5", tmp_path / "features.h5")


def test_empty_shard(tmp_path):
    write_embeddings(tmp_path / "dna.h5", [], np.zeros((0, 768), np.float32), {})
    write_embeddings(tmp_path / "protein.h5", [], np.zeros((0, 2560), np.float32), {})
    assert merge_embeddings(tmp_path / "dna.h5", tmp_path / "protein.h5", tmp_path / "features.h5") == 0
    ids, emb, _ = read_embeddings(tmp_path / "features.h5")
    assert ids == [] and emb.shape == (0, 3328)
