"""GPU faults at the level of the embedding step, on CPU with fake forwards.

The out-of-memory split and the NaN check of the runner itself are tested in test_esm2.py
(`test_out_of_memory_split_gives_the_same_embeddings`, `test_nan_embedding_names_the_sequence`). Here:
a non-finite embedding and a device failure that is not an out-of-memory (a lost GPU, a driver or ECC
error: CUDA errors arrive as RuntimeError "CUDA error: ..." or torch.AcceleratorError) in either
encoder stop `embed` with one line naming the shard, the error and, for NaN, the frame and its
sample, and leave neither a store file nor a receipt; through the Snakemake adapter's `run_step` the job
exits with status 1. The rerun then finds the receipt missing and runs the shard again: that is the
kill-and-resume test (test_resume.py).
"""

import json

import pytest
import torch

from virnucpro.models import dnabert, esm2
from virnucpro.errors import VirNucProError
from virnucpro.steps.models import make_note
from virnucpro.io.store import Namespace, store_files
from virnucpro.harness import run_step
from virnucpro.steps.embed import embed
from virnucpro.steps.plan import plan as plan_step

FRAMES = [("a_chunk_1F1", "ATGAAAACCGCGTATATTGCGAAACAGCGCA", "MKTAYIAKQR"),
          ("b_chunk_1F2", "ATGAGCACCAACCCGAAACCGCAGCGCAAAA", "MSTNPKPQRK"),
          ("c_chunk_2R1", "ATGCTGAGCGATGAAGATTTTAAAGCGGTGA", "MLSDEDFKAV")]
LOST_GPU = [
    RuntimeError("CUDA error: unspecified launch failure\nCUDA kernel errors might be asynchronously reported"),
    torch.AcceleratorError("CUDA error: an illegal memory access was encountered"),
    RuntimeError("CUDA error: uncorrectable ECC error encountered"),
]
ENCODERS = {"esm2": esm2.PackedESM2, "dnabert_s": dnabert.DnabertS}


@pytest.fixture
def shard(tmp_path, tiny_models):
    """A one-shard plan of the three frames; returns the arguments of embed."""
    (tmp_path / "f.fna").write_text("".join(f">{i}\n{n}\n" for i, n, _ in FRAMES))
    (tmp_path / "f.faa").write_text("".join(f">{i}\n{p}\n" for i, _, p in FRAMES))
    notes = {"esm2": make_note("esm2", tiny_models["models.esm2"], tmp_path / "models"),
             "dnabert_s": make_note("dnabert_s", tiny_models["models.dnabert_s"])}
    plan = plan_step({"s": (tmp_path / "f.fna", tmp_path / "f.faa")}, tmp_path / "plan", tmp_path / "members",
                     tmp_path / "store", notes, "cpu", 10**9)
    (only,) = plan["shards"]
    return dict(plan_dir=tmp_path / "plan", shard=only["name"], notes=notes, receipt=tmp_path / "done" / "x.json")


def _fault(monkeypatch, encoder, fake):
    """`fake(rows, batch)` on every batch of the shard's frames (the models' warm-up batch, whose
    sequences have no input position, passes untouched)."""
    cls = ENCODERS[encoder]
    real = cls.embed

    def embed(self, batch):
        rows = real(self, batch)
        return rows if (batch.index < 0).all() else fake(rows, batch)

    monkeypatch.setattr(cls, "embed", embed)


def _nothing_written(args):
    assert not args["receipt"].exists()
    store = args["plan_dir"].parent / "store"
    for ns in json.loads((args["plan_dir"] / "plan.json").read_text())["namespaces"].values():
        folder = Namespace.from_json(ns).directory(store)
        assert store_files(store, Namespace.from_json(ns)) == []
        assert not (folder.exists() and list(folder.glob(".tmp-*")))


@pytest.mark.parametrize("encoder", ENCODERS)
def test_nan_for_one_frame_names_frame_and_shard_and_writes_nothing(encoder, shard, monkeypatch):
    def fake(rows, batch):
        rows = rows.clone()
        rows[list(batch.index).index(1)] = float("nan")  # the second frame of the shard
        return rows

    _fault(monkeypatch, encoder, fake)
    with pytest.raises(VirNucProError) as err:
        embed(**shard)
    message = str(err.value)
    assert "\n" not in message and shard["shard"] in message and "NaN" in message
    assert f"{encoder}: non-finite embedding" in message and "'s:b_chunk_1F2'" in message
    _nothing_written(shard)


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("fault", LOST_GPU, ids=["launch-failure", "AcceleratorError", "ECC"])
def test_lost_gpu_fails_cleanly_naming_the_shard(encoder, fault, shard, monkeypatch, tmp_path):
    calls = []

    def fake(rows, batch):
        calls.append(len(batch.index))
        if len(calls) == 2:  # the second batch of this encoder: the first one went through
            raise fault
        return rows

    _fault(monkeypatch, encoder, fake)
    with pytest.raises(VirNucProError) as err:
        _one_per_batch(shard)
    message = str(err.value)
    assert "\n" not in message and shard["shard"] in message and "device failure" in message
    assert str(fault).splitlines()[0] in message
    assert len(calls) == 2  # no retry: a device fault is not an out-of-memory
    _nothing_written(shard)

    # through the Snakemake adapter: exit status 1, one line in the job's log
    log = tmp_path / "embed.log"
    calls.clear()
    with pytest.raises(SystemExit) as exit_:
        run_step(log, _one_per_batch, shard, threads=1)
    assert exit_.value.code == 1
    lines = [line for line in log.read_text().splitlines() if " ERROR " in line]
    assert len(lines) == 1 and "device failure" in lines[0] and "Traceback" not in log.read_text()
    _nothing_written(shard)


def _one_per_batch(shard):
    """embed with batches too small for two frames: one batch per frame."""
    return embed(**shard, tokens_per_batch={"esm2": 1, "dnabert_s": 1})


def test_out_of_memory_is_still_split_not_failed(shard, monkeypatch):
    """The device-failure path must not catch an out-of-memory: that one is split and retried."""
    seen = []

    def fake(rows, batch):
        seen.append(len(batch.index))
        if len(batch.index) > 1:
            raise RuntimeError("CUDA error: out of memory")
        return rows

    _fault(monkeypatch, "esm2", fake)
    note = embed(**shard)
    assert shard["receipt"].exists() and note["frames"] == {"esm2": 3, "dnabert_s": 3}
    assert seen[0] == 3 and seen.count(1) == 3
