"""Store files that check themselves: Fletcher-32 on every chunk of both datasets and a sha256 of each;
a damaged file found by the plan is set aside (kept, with one warning line) and its frames embedded
again, to the clean run's values; one found when classifying is set aside and the read stops with one
line; `virnucpro verify-store` lists every bad store file and model file, and passes a clean store."""

import hashlib
import json
import logging
import os
import shutil

import h5py
import numpy as np
import pytest

from tests.stored_features import NAMESPACES, stored_features
from tests.embed_runs import embed_all, plan, sample
from tests.workflow_runs import REPO, TABLES, snakemake, tiny_workdir
from virnucpro.cli import main as cli_main
from virnucpro.errors import VirNucProError
from virnucpro.io.checksums import checked_sha256, write_record
from virnucpro.io.store import (
    CHUNK_ROWS,
    FORMAT,
    Namespace,
    StoreFileError,
    StoreIndex,
    frame_key,
    read_keys,
    set_aside,
    store_files,
    verify_store_file,
    write_store_file,
)
from virnucpro.io.features import gather_features
from virnucpro.steps.plan import plan_embeddings

NS = Namespace.of("esm2", model_sha256="a" * 64, precision="float32", pooling="mean", truncation=1022)


def keys(n):
    return [frame_key("ACGT" * (i + 1), f"M{i}") for i in range(n)]


def data_offset(path, name, row=None):
    """Byte offset in the file of dataset `name`'s data: the middle of its chunk holding `row` (the middle
    row when not given)."""
    with h5py.File(path, "r") as f:
        ds = f[name]
        row = ds.shape[0] // 2 if row is None else row
        info = ds.id.get_chunk_info_by_coord((row // ds.chunks[0] * ds.chunks[0],) + (0,) * (ds.ndim - 1))
    return info.byte_offset + info.size // 2


def flip(path, offset, n=16):
    """Flip every bit of `n` bytes at `offset`, in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        data = f.read(n)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


def test_both_datasets_are_chunked_with_fletcher32_and_carry_their_sha256(tmp_path):
    emb = np.random.default_rng(0).normal(size=(600, 8)).astype(np.float32)
    path = write_store_file(tmp_path, NS, "a", keys(600), emb, {})
    with h5py.File(path, "r") as f:
        assert f["keys"].fletcher32 and f["embeddings"].fletcher32
        assert f["keys"].chunks == (CHUNK_ROWS,) and f["embeddings"].chunks == (CHUNK_ROWS, 8)
        assert f["embeddings"].attrs["sha256"] == hashlib.sha256(f["embeddings"][()].tobytes()).hexdigest()
        assert f["keys"].attrs["sha256"] == hashlib.sha256(f["keys"][()].tobytes()).hexdigest()
    assert verify_store_file(path, NS) == 600
    empty = write_store_file(tmp_path, NS, "empty", [], np.zeros((0, 8)), {})
    assert verify_store_file(empty, NS) == 0 and StoreIndex([empty]).read([]).shape == (0, 8)
    assert dict(NS.fields)["format"] == FORMAT == 2  # files without checksums live in other namespaces


def test_flipped_bytes_in_the_embeddings_fail_every_read_of_their_chunk(tmp_path):
    emb = np.random.default_rng(1).normal(size=(600, 8)).astype(np.float32)
    path = write_store_file(tmp_path, NS, "a", keys(600), emb, {})
    flip(path, data_offset(path, "embeddings", row=300))  # the second chunk: rows 256-511
    index = StoreIndex([path])  # the keys are intact
    np.testing.assert_array_equal(index.read(keys(600)[:256]), emb[:256])  # other chunks still read
    with pytest.raises(StoreFileError, match=rf"^{path}: 'embeddings' rows 300-300 fail their checksums"):
        index.read([keys(600)[300]])
    with pytest.raises(StoreFileError, match=r"'embeddings' rows 0-599 fail their checksums"):
        verify_store_file(path, NS)


def test_flipped_bytes_in_the_keys_fail_reading_them(tmp_path):
    path = write_store_file(tmp_path, NS, "a", keys(10), np.zeros((10, 4)), {})
    flip(path, data_offset(path, "keys"))
    with pytest.raises(StoreFileError, match=r"its keys fail their checksums"):
        read_keys(path)
    bad = []
    assert StoreIndex([path], bad=bad).files == [] and [e.path for e in bad] == [path]


def test_a_zero_turned_nan_passes_fletcher32_but_not_the_sha256(tmp_path):
    """HDF5's Fletcher-32 sums 16-bit words modulo 65535: 0x0000 and 0xFFFF count the same."""
    emb = np.ones((4, 4), dtype=np.float32)
    emb[2, 1] = 0.0
    path = write_store_file(tmp_path, NS, "a", keys(4), emb, {})
    with h5py.File(path, "r") as f:
        at = f["embeddings"].id.get_chunk_info(0).byte_offset + (2 * 4 + 1) * 4 + 2  # the high half of 0.0
    flip(path, at, 2)
    assert np.isnan(StoreIndex([path]).read([keys(4)[2]])[0, 1])  # what a chunk's checksum lets through
    with pytest.raises(StoreFileError, match=r"'embeddings' differs from its sha256"):
        verify_store_file(path, NS)


def test_files_without_checksums_or_of_another_namespace_fail_the_full_check(tmp_path):
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:  # as store format 1 wrote them
        f.create_dataset("keys", data=np.asarray(keys(3), dtype="S64"))
        f.create_dataset("embeddings", data=np.zeros((3, 4), np.float32))
        f.attrs["namespace"] = NS.id
    with pytest.raises(StoreFileError, match=r"'keys' carries no checksums"):
        verify_store_file(path, NS)
    other = Namespace.of("esm2", model_sha256="b" * 64)
    good = write_store_file(tmp_path, other, "a", keys(3), np.zeros((3, 4)), {})
    with pytest.raises(StoreFileError, match=rf"written for namespace {other.id}, not {NS.id}"):
        verify_store_file(good, NS)
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(StoreFileError, match=r"not a readable store file"):
        verify_store_file(tmp_path / "text.h5")


def test_set_aside_keeps_the_file_where_no_reader_looks(tmp_path):
    path = write_store_file(tmp_path, NS, "a", keys(3), np.zeros((3, 4)), {})
    content = path.read_bytes()
    assert set_aside(path, now=0) == f"moved to {path.parent / 'quarantine' / 'a.h5.corrupt-19700101T000000Z'}"
    assert (path.parent / "quarantine" / "a.h5.corrupt-19700101T000000Z").read_bytes() == content
    assert store_files(tmp_path, NS) == [] and not path.exists()
    assert set_aside(path) == "gone already (set aside by another job)"


# ----------------------------------------------------------------------------------- plan and classify


def test_a_damaged_store_file_is_set_aside_by_the_plan_and_its_frames_embedded_again(tmp_path, embed_models, caplog):
    """The observed case: 16 bytes flipped in the middle of `embeddings` of one ESM-2 store file."""
    frames = sample(tmp_path / "s")
    plan_dir, planned = plan(tmp_path, embed_models, frames)
    embed_all(tmp_path, embed_models, plan_dir, planned["shards"])
    ids, clean = gather_features(tmp_path / "members" / "s.json")
    victim = store_files(tmp_path / "store", Namespace.from_json(planned["namespaces"]["esm2"]))[0]
    held = read_keys(victim).size
    flip(victim, data_offset(victim, "embeddings"))
    damaged = victim.read_bytes()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="virnucpro"):
        plan_dir, replanned = plan(tmp_path, embed_models, frames, name="plan2")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    (kept,) = (victim.parent / "quarantine").iterdir()
    assert warning == (f"plan: store file {victim}: 'embeddings' rows 0-{held - 1} fail their checksums "
                       f"(Can't synchronously read data (filter returned failure during read)); moved to {kept}; "
                       "its frames are embedded again")
    assert not victim.exists() and kept.read_bytes() == damaged
    assert replanned["frames_to_embed"] == held and [s["dnabert_s"] for s in replanned["shards"]] == [0]
    embed_all(tmp_path, embed_models, plan_dir, replanned["shards"])
    again_ids, again = gather_features(tmp_path / "members" / "s.json")
    assert again_ids == ids
    np.testing.assert_array_equal(again, clean)  # what a clean run gives, bit for bit on the CPU


def test_a_file_damaged_after_the_plan_stops_the_read_with_one_line_and_is_set_aside(tmp_path):
    member = stored_features(tmp_path, [f"s{i}_chunk_1F1" for i in range(6)], np.ones((6, 12)), dna_dim=4)
    record = json.loads(member.read_text())
    victim = Namespace.from_json(record["namespaces"]["esm2"]).directory(record["store"]) / "b.h5"
    flip(victim, data_offset(victim, "embeddings"))
    with pytest.raises(VirNucProError) as caught:
        gather_features(member)
    (kept,) = (victim.parent / "quarantine").iterdir()
    assert str(caught.value) == (
        f"store file {victim}: 'embeddings' rows 0-2 fail their checksums (Can't synchronously read data "
        f"(filter returned failure during read)); moved to {kept}; plan again (snakemake --forcerun plan): the "
        "plan embeds its frames again")
    assert not victim.exists() and "\n" not in str(caught.value)
    keys_victim = victim.parent.parent / Namespace.from_json(record["namespaces"]["dnabert_s"]).name / "a.h5"
    flip(keys_victim, data_offset(keys_victim, "keys"))
    with pytest.raises(VirNucProError, match=rf"^store file {keys_victim}: its keys fail their checksums .*; "
                                             r"moved to .*quarantine.*; plan again \(snakemake --forcerun plan\)"):
        gather_features(member)


def test_a_file_this_user_cannot_read_is_an_error_not_damage(tmp_path, monkeypatch):
    """Permissions are a setup problem: the plan stops with one line and sets nothing aside."""
    stored_features(tmp_path, ["s0_chunk_1F1", "s1_chunk_1F1"], np.ones((2, 12)), dna_dim=4)
    dna, protein = tmp_path / "frames.fna", tmp_path / "frames.faa"
    monkeypatch.setattr("virnucpro.io.store.os.access", lambda path, mode: False)
    with pytest.raises(VirNucProError, match=r"a\.h5: store file not readable \(permission denied\)$") as caught:
        plan_embeddings({"s": (dna, protein)}, tmp_path / "plan2", tmp_path / "members2", tmp_path / "store",
                        NAMESPACES, 10**9, "cpu")
    assert not isinstance(caught.value, StoreFileError) and not list(tmp_path.rglob("quarantine"))


# ---------------------------------------------------------------------------------------- verify-store


def run_cli(capsys, *argv):
    rc = cli_main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture
def checked(tmp_path):
    """A store of two namespaces (two files each) and a models folder with a converted file and its
    verified checksum record, all good."""
    stored_features(tmp_path, [f"s{i}_chunk_1F1" for i in range(6)], np.ones((6, 12)), dna_dim=4)
    converted = tmp_path / "models" / "converted" / "m-0123.safetensors"
    converted.parent.mkdir(parents=True)
    converted.write_bytes(bytes(range(256)) * 4)
    write_record(converted, verified="converted from m.pth (sha256 ...)")
    (tmp_path / "models" / "notes").mkdir()
    (tmp_path / "models" / "notes" / "m.json").write_text("{}")  # no record: not a checked file
    return tmp_path / "store", tmp_path / "models", converted


def test_verify_store_passes_a_clean_store_with_one_line(checked, capsys):
    store, models_dir, _ = checked
    older = Namespace("esm2", (("format", 1), ("model_sha256", "a" * 64)))  # never used, not checked
    (store / older.name).mkdir()
    (store / older.name / "namespace.json").write_text(json.dumps(older.to_json()))
    (store / older.name / "x.h5").write_bytes(b"no checksums")
    rc, out, err = run_cli(capsys, "verify-store", store, "--models-dir", models_dir)
    assert (rc, err) == (0, "")
    assert out == (f"all 5 file(s) good in {store} and {models_dir} (2 namespace folder(s); 1 folder(s) of an "
                   "older store format not checked (never used))\n")


def test_verify_store_lists_every_bad_file(checked, capsys):
    store, models_dir, converted = checked
    (victim,) = [p for p in store.glob("esm2-*/a.h5")]
    flip(victim, data_offset(victim, "embeddings"))
    st = converted.stat()
    flip(converted, 100, 1)
    os.utime(converted, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
    recorded = checked_sha256(converted)  # what every job sees: the record, unchanged
    (moved,) = [p for p in store.glob("dnabert_s-*")]
    shutil.copytree(moved, store / "dnabert_s-ffffffffffffffff")  # a namespace.json in the wrong folder
    rc, out, err = run_cli(capsys, "verify-store", store, "--models-dir", models_dir)
    lines = out.splitlines()
    assert rc == 1 and err == f"virnucpro verify-store: error: 3 bad file(s) in {store} and {models_dir} " \
                              "(listed above), 7 checked\n"
    assert lines[0].startswith(f"BAD {store / 'dnabert_s-ffffffffffffffff' / 'namespace.json'}: describes "
                               f"namespace {moved.name}")
    assert lines[1].startswith(f"BAD {victim}: 'embeddings' rows 0-2 fail their checksums")
    assert lines[2] == (f"BAD {converted}: content changed under the same size and modification time (sha256 "
                        f"{hashlib.sha256(converted.read_bytes()).hexdigest()}, recorded {recorded}): the steps, "
                        "which compare only those, would use it")
    assert len(lines) == 3 and victim.exists()  # listed, not moved
    rc, out, _ = run_cli(capsys, "verify-store", store, "--quarantine")
    assert rc == 1 and not victim.exists() and f"; moved to {victim.parent / 'quarantine'}" in out
    rc, out, _ = run_cli(capsys, "verify-store", store)  # what is left is good but for the misplaced namespace
    assert rc == 1 and out.count("BAD") == 1


# ------------------------------------------------------------------------------------ through the workflow


@pytest.mark.workflow
@pytest.mark.slow
def test_a_damaged_store_copy_gives_the_clean_runs_tables(tmp_path, tiny_models):
    """The observed case through snakemake: a second project runs sample_a against a copy of a finished
    run's store with 16 bytes flipped in the middle of `embeddings` of one ESM-2 store file: the plan sets
    it aside with one warning line and embeds its frames again, and the tables are the clean run's. (A
    file damaged after the plan: the unit test above, then test_reliability_inputs'
    `test_frame_missing_from_the_store_fails_the_classification`, a file gone from the store.)"""
    sheet, shards = {"sample_a": REPO / "example" / "sample_a.fa"}, {"shards.tokens_per_shard": 6000}
    clean = tiny_workdir(tmp_path / "clean", tiny_models, sheet=sheet, **shards)
    snakemake(clean, "--cores", "2")
    store = tmp_path / "copy"
    shutil.copytree(clean / "resources" / "embeddings", store)
    work = tiny_workdir(tmp_path / "work", tiny_models, sheet=sheet, **shards, **{"embed.store": str(store)})
    member = json.loads((clean / "results" / "embedding" / "samples" / "members" / "sample_a.json").read_text())
    first, _ = store_files(store, Namespace.from_json(member["namespaces"]["esm2"]))
    flip(first, data_offset(first, "embeddings"))
    snakemake(work, "--cores", "2")
    log = (work / "results" / "embedding" / "samples" / "logs" / "plan.log").read_text()
    (warning,) = [line for line in log.splitlines() if "WARNING" in line]
    assert f"store file {first}: 'embeddings' rows" in warning and warning.endswith("its frames are embedded again")
    planned = json.loads((work / "results" / "embedding" / "samples" / "plan" / "plan.json").read_text())
    assert planned["frames_to_embed"] == read_keys(list((first.parent / "quarantine").iterdir())[0]).size
    out = work / "results" / "sample_a"
    for table in TABLES:
        assert (out / table).read_bytes() == (clean / "results" / "sample_a" / table).read_bytes(), table

