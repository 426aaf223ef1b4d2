"""GPU faults at the level of the embedding steps (issue 7, item 7), on CPU with fake forwards.

The out-of-memory split and the NaN check of the runner itself are tested in test_esm2.py
(`test_out_of_memory_split_gives_the_same_embeddings`, `test_nan_embedding_names_the_sequence`). Here:
a non-finite embedding and a device failure that is not an out-of-memory (a lost GPU, a driver or ECC
error: CUDA errors arrive as RuntimeError "CUDA error: ..." or torch.AcceleratorError) stop
embed_protein / embed_dna with one line naming the shard, the error and, for NaN, the frame, and leave no
output file; through the Snakemake adapter's `run_step` the job exits with status 1. The rerun then
finds the shard's output missing and runs it again: that is the kill-and-resume test (test_resume.py).
"""

import pytest
import torch

from virnucpro import dnabert, esm2
from virnucpro.errors import VirNucProError
from virnucpro.logs import run_step

PROTEINS = [("a_chunk_1F1", "MKTAYIAKQR"), ("b_chunk_1F2", "MSTNPKPQRK"), ("c_chunk_2R1", "MLSDEDFKAV")]
NUCLEOTIDES = [("a_chunk_1F1", "ATGAAAACCGCGTATATTGCG"), ("b_chunk_1F2", "ATGAGCACCAACCCGAAACCG"),
               ("c_chunk_2R1", "ATGCTGAGCGATGAAGATTTT")]
LOST_GPU = [
    RuntimeError("CUDA error: unspecified launch failure\nCUDA kernel errors might be asynchronously reported"),
    torch.AcceleratorError("CUDA error: an illegal memory access was encountered"),
    RuntimeError("CUDA error: uncorrectable ECC error encountered"),
]


def _write(path, records):
    path.write_text("".join(f">{i}\n{s}\n" for i, s in records))
    return path


STEPS = {
    "protein": (esm2.embed_protein, esm2.PackedESM2, "models.esm2", PROTEINS, "faa"),
    "dna": (dnabert.embed_dna, dnabert.DnabertS, "models.dnabert_s", NUCLEOTIDES, "fna"),
}


def _run(step, tmp_path, tiny_models, monkeypatch, fake):
    embed, cls, key, records, ext = STEPS[step]
    real = cls.embed
    monkeypatch.setattr(cls, "embed", lambda self, batch: fake(real(self, batch), batch))
    frames = _write(tmp_path / f"0007.{ext}", records)
    out = tmp_path / "out" / "0007.h5"
    return embed, frames, out, tiny_models[key]


@pytest.mark.parametrize("step", STEPS)
def test_nan_for_one_frame_names_frame_and_shard_and_writes_nothing(step, tmp_path, tiny_models, monkeypatch):
    def fake(rows, batch):
        rows = rows.clone()
        rows[list(batch.index).index(1)] = float("nan")  # the second frame of the shard
        return rows

    embed, frames, out, model = _run(step, tmp_path, tiny_models, monkeypatch, fake)
    with pytest.raises(VirNucProError) as err:
        embed(frames, model, out, device="cpu", tokens_per_batch=4096)
    message = str(err.value)
    assert "\n" not in message and str(frames) in message and "'b_chunk_1F2'" in message and "NaN" in message
    assert not out.exists() and not (out.parent.exists() and list(out.parent.iterdir()))


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("fault", LOST_GPU, ids=["launch-failure", "AcceleratorError", "ECC"])
def test_lost_gpu_fails_cleanly_naming_the_shard(step, fault, tmp_path, tiny_models, monkeypatch):
    calls = []

    def fake(rows, batch):
        calls.append(len(batch.index))
        if len(calls) == 2:  # the second batch: the first one went through
            raise fault
        return rows

    embed, frames, out, model = _run(step, tmp_path, tiny_models, monkeypatch, fake)
    with pytest.raises(VirNucProError) as err:
        embed(frames, model, out, device="cpu", tokens_per_batch=12)  # a batch per frame
    message = str(err.value)
    assert "\n" not in message and str(frames) in message and "device failure" in message
    assert str(fault).splitlines()[0] in message
    assert len(calls) == 2  # no retry: a device fault is not an out-of-memory
    assert not out.exists() and not (out.parent.exists() and list(out.parent.iterdir()))

    # through the Snakemake adapter: exit status 1, one line in the job's log
    log = tmp_path / "embed.log"
    calls.clear()
    with pytest.raises(SystemExit) as exit_:
        run_step(log, embed, frames, model, out=out, device="cpu", tokens_per_batch=12, threads=1)
    assert exit_.value.code == 1
    lines = [line for line in log.read_text().splitlines() if " ERROR " in line]
    assert len(lines) == 1 and "device failure" in lines[0] and "Traceback" not in log.read_text()
    assert not out.exists()


def test_out_of_memory_is_still_split_not_failed(tmp_path, tiny_models, monkeypatch):
    """The device-failure path must not catch an out-of-memory: that one is split and retried."""
    seen = []

    def fake(rows, batch):
        seen.append(len(batch.index))
        if len(batch.index) > 1:
            raise RuntimeError("CUDA error: out of memory")
        return rows

    embed, frames, out, model = _run("protein", tmp_path, tiny_models, monkeypatch, fake)
    embed(frames, model, out, device="cpu", tokens_per_batch=4096)
    assert out.exists() and seen[0] == 3 and seen.count(1) == 3
