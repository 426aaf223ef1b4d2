"""The embedding plan: the frames of all members pooled, identical frames once, the store's frames left
out per encoder, token-balanced contiguous shards named by their content, and a record per member."""

import json
import os

import numpy as np
import pytest

from tests.stored_features import NAMESPACES, random_frames
from virnucpro.errors import VirNucProError
from virnucpro.io.seqio import read_fasta
from virnucpro.io.store import Namespace, frame_key, write_store_file
from virnucpro.steps.plan import plan_embeddings, shard_bounds


def write_member(folder, frames, ids):
    """frames.fna / frames.faa of a member holding `ids` (keys of `frames`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "frames.fna").write_text("".join(f">{i}\n{frames[i][0]}\n" for i in ids))
    (folder / "frames.faa").write_text("".join(f">{i}\n{frames[i][1]}\n" for i in ids))
    return folder / "frames.fna", folder / "frames.faa"


def shard_contents(plan_dir, plan):
    """[(shard, [keys in .faa], [keys in .fna])] in plan order."""
    out = []
    for s in plan["shards"]:
        faa = [k for k, _ in read_fasta(plan_dir / "shards" / f"{s['name']}.faa")]
        fna = [k for k, _ in read_fasta(plan_dir / "shards" / f"{s['name']}.fna")]
        out.append((s["name"], faa, fna))
    return out


@pytest.fixture
def pool(tmp_path):
    """Two members sharing frames (b repeats three of a's and one of its own), frames of 41 residues."""
    frames = random_frames([f"f{i}" for i in range(30)])
    a = write_member(tmp_path / "a", frames, [f"f{i}" for i in range(20)])
    b = write_member(tmp_path / "b", {**frames, "dup": frames["f25"]},
                     ["f3", "f20", "f21", "f22", "f23", "f24", "f25", "f4", "dup", "f26", "f27", "f28", "f29", "f5"])
    return tmp_path, frames, {"a": a, "b": b}


def test_bounds_balance_tokens_not_records():
    tokens = np.r_[np.full(100, 1000), np.full(1000, 10)]  # heavy frames first
    bounds = shard_bounds(tokens, 27_500)
    sums = [tokens[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])]
    assert len(sums) == 4 and max(sums) - min(sums) <= 1000
    assert bounds[0] == 0 and bounds[-1] == tokens.size
    assert shard_bounds([], 100) == [0]


def test_a_frame_counts_the_tokens_esm2_will_see_truncated_at_1022_residues(tmp_path):
    """Shards balance what the GPU runs: a 1,500-residue frame is 1,022 residues + BOS + EOS."""
    frames = random_frames(["short"])
    rng = np.random.default_rng(3)
    long = "M" + "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 1499))
    frames["long"] = ("".join(rng.choice(list("ACGT"), 3 * len(long))), long)
    members = {"m": write_member(tmp_path / "m", frames, ["long", "short"])}
    plan = plan_embeddings(members, tmp_path / "plan", tmp_path / "members", tmp_path / "store", NAMESPACES,
                           10_000, "cpu")
    assert [s["tokens"] for s in plan["shards"]] == [1024 + 43]


def test_frames_of_all_members_are_pooled_and_embedded_once(pool):
    tmp_path, frames, members = pool
    plan = plan_embeddings(members, tmp_path / "plan", tmp_path / "members", tmp_path / "store", NAMESPACES, 43 * 10, "cpu")
    assert plan["frames"] == 20 + 14 and plan["distinct_frames"] == 30 and plan["frames_to_embed"] == 30
    assert len(plan["shards"]) == 3  # 30 frames x 43 tokens / 430 per shard
    contents = shard_contents(tmp_path / "plan", plan)
    order = [frame_key(*frames[f"f{i}"]) for i in range(30)]  # first appearance: a, then b's new ones
    assert [k for _, faa, _ in contents for k in faa] == order
    assert [k for _, _, fna in contents for k in fna] == order
    assert [s["tokens"] for s in plan["shards"]] == [430, 430, 430]
    sequences = dict(read_fasta(tmp_path / "plan" / "shards" / f"{contents[0][0]}.faa"))
    assert sequences[order[0]] == frames["f0"][1]
    record = json.loads((tmp_path / "members" / "b.json").read_text())
    assert record["frames"] == 14 and record["store"] == str((tmp_path / "store").resolve())
    assert "shards" not in record  # what is still to embed is the plan's, not the record's
    assert plan["member_shards"]["b"] == sorted({contents[0][0], contents[2][0]})  # f3..f5 in the first, f20.. in the last
    assert record["files"]["esm2"] == sorted(f"{contents[i][0]}.h5" for i in (0, 2))


def test_stored_frames_are_left_out_per_encoder(pool):
    tmp_path, frames, members = pool
    store = tmp_path / "store"
    first = [frame_key(*frames[f"f{i}"]) for i in range(10)]
    write_store_file(store, NAMESPACES["esm2"], "old", first, np.zeros((10, 3)), {})
    write_store_file(store, NAMESPACES["dnabert_s"], "old", first[:5], np.zeros((5, 3)), {})
    plan = plan_embeddings(members, tmp_path / "plan", tmp_path / "members", store, NAMESPACES, 10**9, "cpu")
    (name, faa, fna), = shard_contents(tmp_path / "plan", plan)
    assert len(faa) == 20 and len(fna) == 25  # f5..f9 need DNABERT-S only
    assert set(first) & set(faa) == set() and set(first[:5]) & set(fna) == set()
    record = json.loads((tmp_path / "members" / "a.json").read_text())
    assert record["files"] == {e: sorted(["old.h5", f"{name}.h5"]) for e in ("esm2", "dnabert_s")}
    whole = {**NAMESPACES, "esm2": Namespace.of("esm2", model_sha256="f" * 64)}  # another model: nothing stored
    other = plan_embeddings(members, tmp_path / "plan2", tmp_path / "members", store, whole, 10**9, "cpu")
    assert other["shards"][0]["esm2"] == 30


def test_nothing_to_embed_gives_no_shard_and_names_repeat(pool):
    tmp_path, frames, members = pool
    plan = plan_embeddings(members, tmp_path / "plan", tmp_path / "members", tmp_path / "store", NAMESPACES, 500, "cpu")
    again = plan_embeddings(members, tmp_path / "plan", tmp_path / "members", tmp_path / "store", NAMESPACES, 500, "cpu")
    assert [s["name"] for s in plan["shards"]] == [s["name"] for s in again["shards"]]  # by content
    store = tmp_path / "store"
    keys = [frame_key(*frames[f"f{i}"]) for i in range(30)]
    for ns in NAMESPACES.values():
        write_store_file(store, ns, "all", keys, np.zeros((30, 3)), {})
    done = plan_embeddings(members, tmp_path / "plan", tmp_path / "members", store, NAMESPACES, 500, "cpu")
    assert done["shards"] == [] and list((tmp_path / "plan" / "shards").iterdir()) == []
    assert done["member_shards"] == {"a": [], "b": []}


def test_mismatched_frame_files_leave_no_plan(pool):
    tmp_path, _, members = pool
    dna, protein = members["b"]
    protein.write_text(">other\nMKV\n")
    with pytest.raises(VirNucProError, match="of 'b' do not hold the same frames in the same order"):
        plan_embeddings(members, tmp_path / "plan", tmp_path / "members", tmp_path / "store", NAMESPACES, 500, "cpu")
    assert not (tmp_path / "plan").exists() and not list(tmp_path.glob(".tmp-*"))


def test_every_frame_is_hashed_once(pool, monkeypatch):
    """The second pass, which writes the shards, takes the keys from the first."""
    tmp_path, _, members = pool
    hashed = []
    monkeypatch.setattr("virnucpro.io.members.frame_key", lambda n, p: hashed.append(n) or frame_key(n, p))
    plan = plan_embeddings(members, tmp_path / "plan", tmp_path / "members", tmp_path / "store", NAMESPACES, 430, "cpu")
    assert len(hashed) == plan["frames"] == 34


def test_a_plan_replaces_the_old_one_whole_and_a_failed_one_leaves_it(pool):
    tmp_path, _, members = pool
    out = tmp_path / "plan"
    plan_embeddings(members, out, tmp_path / "members", tmp_path / "store", NAMESPACES, 430, "cpu")
    (out / "shards" / "stale.faa").write_text(">old\nM\n")
    good = members["b"][1].read_text()
    members["b"][1].write_text(">other\nMKV\n")
    with pytest.raises(VirNucProError, match="do not hold the same frames"):
        plan_embeddings(members, out, tmp_path / "members", tmp_path / "store", NAMESPACES, 430, "cpu")
    assert (out / "shards" / "stale.faa").is_file() and (out / "plan.json").is_file()  # untouched
    members["b"][1].write_text(good)
    plan = plan_embeddings(members, out, tmp_path / "members", tmp_path / "store", NAMESPACES, 430, "cpu")
    assert sorted(p.name for p in (out / "shards").iterdir()) == sorted(
        f"{s['name']}{ext}" for s in plan["shards"] for ext in (".faa", ".fna"))
    assert not list(tmp_path.glob(".tmp-*"))


def test_member_plans_change_only_where_their_content_does(pool):
    """A member's plan (beside the plan) is rewritten only when its content changes: after its frames
    were embedded (the next plan has nothing of it to embed) it and its frame list keep their bytes and
    their mtimes."""
    tmp_path, frames, members = pool
    records = tmp_path / "records"
    first = plan_embeddings({"a": members["a"]}, tmp_path / "plan", records, tmp_path / "store", NAMESPACES, 500, "cpu")
    assert not (tmp_path / "plan" / "members").exists()
    record, listed = records / "a.json", records / "a.frames.tsv"
    before = record.read_bytes()
    for path in (record, listed):
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    for ns in NAMESPACES.values():  # a's frames embedded into the shards the plan named
        for shard in first["shards"]:
            names = [k for k, _ in read_fasta(tmp_path / "plan" / "shards" / f"{shard['name']}.faa")]
            write_store_file(tmp_path / "store", ns, shard["name"], names, np.zeros((len(names), 3)), {})
    second = plan_embeddings(members, tmp_path / "plan", records, tmp_path / "store", NAMESPACES, 500, "cpu")
    assert second["member_shards"]["a"] == [] and second["member_shards"]["b"]
    assert record.read_bytes() == before and record.stat().st_mtime_ns == 1_000_000_000
    assert listed.stat().st_mtime_ns == 1_000_000_000
    b = json.loads((records / "b.json").read_text())
    assert b["files"]["esm2"][0] in {f"{s['name']}.h5" for s in first["shards"]}  # b's f3..f5 are a's
    whole = {**NAMESPACES, "esm2": Namespace.of("esm2", model_sha256="f" * 64)}  # another model
    plan_embeddings(members, tmp_path / "plan", records, tmp_path / "store", whole, 500, "cpu")
    assert record.read_bytes() != before and record.stat().st_mtime_ns != 1_000_000_000
