"""The embedding store: keys, namespaces, plain-HDF5 files written atomically by concurrent writers (writer
threads the test stops and releases at set points of the write: an interleaving it builds, no timing),
reads by key across files, and the features read back for a sample (DNABERT-S first)."""

import contextlib
import hashlib
import json
import os
import threading
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
    verify_store_file,
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


class Gate:
    """Writer threads, each named after its writer, stop at named points of `write_store_file` until the
    test lets them go on, so that the test, the reader, decides the interleaving. Waiting is on a condition
    only; the timeout just turns a writer that never moves on into a failure instead of a hang."""

    TIMEOUT_S = 60

    def __init__(self):
        self.cond = threading.Condition()
        self.held, self.returned, self.errors, self.opened = {}, set(), [], False

    def hold(self, point):
        """In a writer thread: stop at `point` until the test releases this writer."""
        name = threading.current_thread().name
        with self.cond:
            self.held[name] = point
            self.cond.notify_all()
            assert self.cond.wait_for(lambda: name not in self.held or self.opened, self.TIMEOUT_S), name

    def run(self, name, target):
        """A writer thread `name` running `target`; what it raises is kept for the test."""

        def guarded():
            try:
                target()
            except BaseException as exc:
                with self.cond:
                    self.errors.append((name, exc))
            finally:
                with self.cond:
                    self.returned.add(name)
                    self.cond.notify_all()

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        return thread

    def where(self, *writers):
        """{writer: the point it is held at, or "returned"}, once each of `writers` is at one or has returned."""
        with self.cond:
            settled = self.cond.wait_for(
                lambda: all(w in self.held or w in self.returned for w in writers), self.TIMEOUT_S)
            assert settled and not self.errors, self.errors
            return {w: self.held.get(w, "returned") for w in writers}

    def release(self, *writers):
        with self.cond:
            for w in writers:
                del self.held[w]
            self.cond.notify_all()

    def open(self):
        """Hold no one any longer (a failed test's writers run to their end)."""
        with self.cond:
            self.opened = True
            self.cond.notify_all()


def test_concurrent_writers_and_a_reader_never_meet_a_partial_file(tmp_path, monkeypatch):
    """Three writers in one namespace, W0 and W1 writing the same store file `shared.h5` (different
    embeddings) and W2 its own `own.h5`, stopped where a non-atomic write would show: all three writing
    namespace.json (none of them has renamed it yet, so each found it missing); each store file's keys
    written and flushed, its embeddings not yet; each temporary file complete and closed, not yet renamed.
    Between steps the reader lists and reads the store: it sees only whole files, with every value of
    exactly one writer, and the last writer of `shared.h5` wins, whole."""
    import virnucpro.io.store as store

    gate = Gate()
    real_atomic_outputs, real_write_dataset = store.atomic_outputs, store._write_dataset

    @contextlib.contextmanager
    def held_atomic_outputs(*paths):
        with real_atomic_outputs(*paths) as temps:
            yield temps
            # the block is done (files closed), the rename to the final name not yet
            gate.hold("namespace" if paths[0].name == "namespace.json" else "written")

    def held_write_dataset(f, name, data):
        real_write_dataset(f, name, data)
        if name == "keys":  # the file holds its keys, not yet its embeddings
            f.flush()
            gate.hold("partial")

    monkeypatch.setattr(store, "atomic_outputs", held_atomic_outputs)
    monkeypatch.setattr(store, "_write_dataset", held_write_dataset)
    rng = np.random.default_rng(0)
    shared_keys, own_keys = keys(2000, seed=1), keys(2000, seed=2)
    emb = {w: rng.normal(size=(2000, 256)).astype(np.float32) for w in ("W0", "W1", "W2")}
    jobs = {"W0": ("shared", shared_keys), "W1": ("shared", shared_keys), "W2": ("own", own_keys)}
    folder = tmp_path / NS.name

    def temporaries(suffix):
        return sorted(p.name for p in folder.glob(f".tmp-*{suffix}"))

    def reader_sees():
        """{store file name: (its writer, its keys, its embeddings)}, every listed file read whole."""
        seen = {}
        for path in store_files(tmp_path, NS):
            assert not path.name.startswith(".tmp-")
            assert verify_store_file(path, NS) == 2000  # every chunk and both checksums
            index = StoreIndex([path])
            file_keys = [k.decode() for k in read_keys(path)]
            with h5py.File(path, "r") as f:
                writer = f.attrs["writer"]
            seen[path.name] = writer, file_keys, index.read(file_keys)
        return seen

    def assert_written_by(seen, name, writer):
        got_writer, got_keys, got_emb = seen[name]
        assert got_writer == writer and got_keys == jobs[writer][1]
        np.testing.assert_array_equal(got_emb, emb[writer])  # every row, none from the other writer

    threads = {
        w: gate.run(w, lambda w=w: write_store_file(tmp_path, NS, jobs[w][0], jobs[w][1], emb[w], {"writer": w}))
        for w in jobs
    }
    try:
        # 1. all three are writing namespace.json (each found it missing): nothing under its final name yet
        assert gate.where(*jobs) == {w: "namespace" for w in jobs}
        assert not (folder / "namespace.json").exists() and len(temporaries("namespace.json")) == 3
        assert store_files(tmp_path, NS) == []
        gate.release("W2")  # W2 renames it first, then half writes its store file
        assert gate.where("W2") == {"W2": "partial"}
        assert json.loads((folder / "namespace.json").read_text()) == NS.to_json()
        assert reader_sees() == {} and len(temporaries(".h5")) == 1
        gate.release("W0", "W1")  # the other two replace it, whole
        # 2. every store file half written (keys in it, embeddings not): the reader lists none
        assert gate.where(*jobs) == {w: "partial" for w in jobs}
        assert json.loads((folder / "namespace.json").read_text()) == NS.to_json()
        assert temporaries("namespace.json") == [] and len(temporaries(".h5")) == 3
        assert reader_sees() == {}
        # 3. every temporary file complete and closed, none renamed: still none listed
        gate.release(*jobs)
        assert gate.where(*jobs) == {w: "written" for w in jobs}
        assert len(temporaries(".h5")) == 3 and reader_sees() == {}
        # 4. W1 renames shared.h5: the reader gets all of W1's file
        gate.release("W1")
        assert gate.where("W1") == {"W1": "returned"}
        seen = reader_sees()
        assert list(seen) == ["shared.h5"]
        assert_written_by(seen, "shared.h5", "W1")
        # 5. W0 renames its shared.h5 over W1's: all of W0's, nothing of W1's left
        gate.release("W0")
        assert gate.where("W0") == {"W0": "returned"}
        seen = reader_sees()
        assert list(seen) == ["shared.h5"]
        assert_written_by(seen, "shared.h5", "W0")
        # 6. W2 renames its own file
        gate.release("W2")
        assert gate.where("W2") == {"W2": "returned"}
    finally:
        gate.open()
        for thread in threads.values():
            thread.join(Gate.TIMEOUT_S)
    assert not gate.errors and not any(t.is_alive() for t in threads.values())
    seen = reader_sees()
    assert sorted(seen) == ["own.h5", "shared.h5"]
    assert_written_by(seen, "shared.h5", "W0")
    assert_written_by(seen, "own.h5", "W2")
    assert len(StoreIndex(store_files(tmp_path, NS)).where) == 2 * 2000
    assert sorted(p.name for p in folder.iterdir()) == ["namespace.json", "own.h5", "shared.h5"]  # no temporaries


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
