"""The embedding store: keys, namespaces, plain-HDF5 files written atomically by concurrent writers, reads
by key across files, and the features read back for a sample (DNABERT-S first)."""

import hashlib
import json
import multiprocessing
import os
import time

import h5py
import numpy as np
import pytest

from tests.stored_features import stored_features
from virnucpro.errors import VirNucProError
from virnucpro.io.store import (
    Namespace,
    StoreIndex,
    frame_key,
    read_keys,
    remove_stale_temporaries,
    store_files,
    write_store_file,
)
from virnucpro.io.features import gather_features, iter_features

NS = Namespace.of("esm2", model_sha256="a" * 64, precision="float32", pooling="mean", truncation=1022)


def keys(n, seed=0):
    return [frame_key("ACGT" * (i + 1), f"M{i}K{seed}") for i in range(n)]


def test_frame_key_is_the_sha256_of_nucleotides_and_protein():
    assert frame_key("ATGAAA", "MK") == hashlib.sha256(b"ATGAAA\tMK").hexdigest()
    assert frame_key("ATGAAA", "MK") != frame_key("ATGAAAC", "MK")


def test_namespace_changes_with_every_field_and_survives_json():
    base = dict(model_sha256="a" * 64, precision="float32", pooling="mean", truncation=1022)
    ids = {Namespace.of("esm2", **base).id}
    for field, other in (("model_sha256", "b" * 64), ("precision", "float16"), ("pooling", "max"),
                         ("truncation", 1000)):
        ids.add(Namespace.of("esm2", **{**base, field: other}).id)
    ids.add(Namespace.of("dnabert_s", **base).id)
    assert len(ids) == 6
    assert Namespace.from_json(json.loads(json.dumps(NS.to_json()))) == NS
    assert NS.name == f"esm2-{NS.id}" and len(NS.id) == 16


def test_store_file_is_plain_hdf5(tmp_path):
    emb = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    path = write_store_file(tmp_path, NS, "shard1", keys(5), emb, {"device": "cpu", "tokens_per_batch": 4096})
    assert path == tmp_path / NS.name / "shard1.h5"
    with h5py.File(path, "r") as f:  # readable without our code
        assert [k.decode() for k in f["keys"][()]] == keys(5)
        np.testing.assert_array_equal(f["embeddings"][()], emb)
        assert f.attrs["model_sha256"] == "a" * 64 and f.attrs["precision"] == "float32"
        assert f.attrs["namespace"] == NS.id and f.attrs["tokens_per_batch"] == 4096
    assert json.loads((tmp_path / NS.name / "namespace.json").read_text())["id"] == NS.id
    assert sorted(p.name for p in (tmp_path / NS.name).iterdir()) == ["namespace.json", "shard1.h5"]


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        write_store_file(tmp_path, NS, "bad", keys(3), np.zeros((2, 4)), {})
    with pytest.raises(TypeError):
        write_store_file(tmp_path, NS, "bad", keys(2), np.zeros((2, 4)), {"x": object()})
    assert store_files(tmp_path, NS) == [] and not list((tmp_path / NS.name).glob(".tmp-*"))


def test_index_reads_by_key_across_files_first_file_wins(tmp_path):
    rng = np.random.default_rng(1)
    k = keys(10)
    a, b = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(6, 4)).astype(np.float32)
    write_store_file(tmp_path, NS, "a", k[:6], a, {})
    write_store_file(tmp_path, NS, "b", k[4:], b, {})  # k[4], k[5] in both files
    index = StoreIndex(store_files(tmp_path, NS))
    assert len(index.where) == 10 and index.missing([k[9], frame_key("x", "y")]) == [1]
    want = np.concatenate([a, b[2:]])
    order = [9, 0, 5, 5, 3]
    np.testing.assert_array_equal(index.read([k[i] for i in order]), want[order])
    assert index.read([]).shape == (0, 4)
    with pytest.raises(VirNucProError, match=r"frame 'frame_2' and 1 more are not in the embedding store"):
        index.read([k[0], frame_key("x", "y"), frame_key("x", "z")], labels=["frame_1", "frame_2", "frame_3"])


def test_rows_far_apart_are_read_correctly(tmp_path, monkeypatch):
    monkeypatch.setattr("virnucpro.io.store.READ_GAP", 3)  # several slices per read
    emb = np.arange(40 * 2, dtype=np.float32).reshape(40, 2)
    write_store_file(tmp_path, NS, "a", keys(40), emb, {})
    index = StoreIndex(store_files(tmp_path, NS))
    rows = [39, 0, 1, 20, 22, 21, 38, 0]
    np.testing.assert_array_equal(index.read([keys(40)[r] for r in rows]), emb[rows])


def _writer(root, worker, files, rows):
    rng = np.random.default_rng(worker)
    for f in range(files):
        k = keys(rows, seed=worker * 1000 + f)
        write_store_file(root, NS, f"w{worker}-{f}", k, rng.normal(size=(rows, 256)), {"worker": worker})


def test_concurrent_writers_and_a_reader_never_meet_a_partial_file(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_writer, args=(tmp_path, w, 6, 2000)) for w in range(3)]
    for p in workers:
        p.start()
    seen = set()
    while any(p.is_alive() for p in workers) or len(seen) < 18:
        for path in store_files(tmp_path, NS):
            assert len(read_keys(path)) == 2000  # whole files only
            seen.add(path.name)
        time.sleep(0.01)
        if not any(p.is_alive() for p in workers) and len(seen) < 18:
            break
    for p in workers:
        p.join()
        assert p.exitcode == 0
    assert len(store_files(tmp_path, NS)) == 18
    assert len(StoreIndex(store_files(tmp_path, NS)).where) == 18 * 2000


def test_only_old_temporaries_are_removed(tmp_path):
    folder = tmp_path / NS.name
    folder.mkdir()
    old, fresh = folder / ".tmp-aaaa-x.h5", folder / ".tmp-bbbb-y.h5"
    old.write_bytes(b"partial")
    fresh.write_bytes(b"being written")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    assert remove_stale_temporaries(tmp_path, NS) == 1
    assert not old.exists() and fresh.exists()


# --------------------------------------------------------------------------------------- features


def test_features_are_dnabert_then_esm2_in_frame_order(tmp_path):
    ids = [f"s{i}_chunk_1F1" for i in range(50)]
    x = np.random.default_rng(2).normal(size=(50, 12)).astype(np.float32)
    sample = stored_features(tmp_path, ids, x, dna_dim=4)
    got_ids, got = gather_features(sample)
    assert got_ids == ids
    np.testing.assert_array_equal(got, x)
    chunks = list(iter_features(sample, chunk=7))
    assert [len(i) for i, _ in chunks] == [7] * 7 + [1]
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), x)


def test_a_frame_missing_from_the_store_is_named(tmp_path):
    ids = [f"s{i}_chunk_1F1" for i in range(6)]
    member = stored_features(tmp_path, ids, np.zeros((6, 12)), dna_dim=4)
    (tmp_path / "store" / NS_OF(member, "esm2") / "b.h5").unlink()  # the second half of the frames
    with pytest.raises(VirNucProError, match=r"frame 's3_chunk_1F1' and 2 more are not in the embedding store "
                                             r"\(esm2, .*\).*snakemake --forcerun plan"):
        gather_features(member)


def test_a_frame_list_changed_since_its_member_plan_is_refused(tmp_path):
    ids = [f"s{i}_chunk_1F1" for i in range(4)]
    member = stored_features(tmp_path, ids, np.zeros((4, 12)), dna_dim=4)
    listed = member.with_name("s.frames.tsv")
    lines = listed.read_text().splitlines(keepends=True)
    for changed in (lines[:2], [lines[1], lines[0], *lines[2:]]):  # two frames left; two swapped
        listed.write_text("".join(changed))
        with pytest.raises(VirNucProError, match=r"s\.frames\.tsv: does not match its member plan .*s\.json .*"
                                                 r"plan again \(snakemake --forcerun plan\)"):
            gather_features(member)


def NS_OF(member, encoder):
    return Namespace.from_json(json.loads(member.read_text())["namespaces"][encoder]).name
