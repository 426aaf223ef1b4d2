"""The embedding stage run directly, on the CPU, through `virnucpro plan` and `virnucpro embed` (the
models: the `embed_models` fixture in tests/conftest.py): a sample's frames, a plan against a store
under the test's directory, and every planned shard embedded."""

import json

import numpy as np

from tests.tiny_dnabert import random_dna
from virnucpro.cli import main as cli_main

AA = list("ACDEFGHIKLMNPQRSTVWY")


def sample(folder, n=40, seed=0):
    """frames.fna / frames.faa of `n` frames (lower case and IUPAC codes among the nucleotides)."""
    rng = np.random.default_rng(seed)
    proteins = ["".join(rng.choice(AA, int(k))) for k in rng.integers(1, 170, n)]
    nucleotides = random_dna(n, [3 * len(p) + 1 for p in proteins], seed=seed)
    nucleotides[1] = nucleotides[1].lower()
    nucleotides[2] = nucleotides[2][:4] + "NNRYK" + nucleotides[2][9:]
    ids = [f"contig{i}_chunk_{i + 1}{'FR'[i % 2]}{i % 3 + 1}" for i in range(n)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "frames.fna").write_text("".join(f">{i}\n{s}\n" for i, s in zip(ids, nucleotides)))
    (folder / "frames.faa").write_text("".join(f">{i}\n{s}\n" for i, s in zip(ids, proteins)))
    return folder / "frames.fna", folder / "frames.faa", ids, proteins, nucleotides


def plan(tmp_path, models, frames, tokens_per_shard=2000, name="plan"):
    """`virnucpro plan` of sample `s` (`frames`: what `sample` returns) for the CPU, store tmp_path/store,
    into tmp_path/`name`; returns that directory and its plan.json."""
    esm_path, dna_dir, _ = models
    out = tmp_path / name
    rc = cli_main(["plan", "--sample", "s", str(frames[0]), str(frames[1]), "--esm2", str(esm_path),
                   "--dnabert-s", str(dna_dir), "--models-dir", str(tmp_path / "models"), "--store",
                   str(tmp_path / "store"), "--device", "cpu", "--tokens-per-shard", str(tokens_per_shard),
                   "--out", str(out)])
    assert rc == 0
    return out, json.loads((out / "plan.json").read_text())


def embed_all(tmp_path, models, plan_dir, shards):
    """`virnucpro embed` of each of `shards`, receipts under tmp_path/done; returns the receipts."""
    esm_path, dna_dir, _ = models
    receipts = []
    for shard in shards:
        out = tmp_path / "done" / f"{shard['name']}.json"
        rc = cli_main(["embed", str(plan_dir), shard["name"], "--esm2", str(esm_path), "--dnabert-s", str(dna_dir),
                       "--models-dir", str(tmp_path / "models"), "--esm2-tokens-per-batch", "1100",
                       "--dnabert-tokens-per-batch", "700", "--out", str(out)])
        assert rc == 0
        receipts.append(json.loads(out.read_text()))
    return receipts
