"""On a GPU, a frame's embeddings do not depend on the frames that share its shard or batch (skipped
without CUDA).

One set of frames is embedded in three mixes through the workflow's own path (`runner.run_packed` with
both encoders interleaved, every batch padded to the budget): alone; after other frames; reversed after
different other frames. The embeddings of the set must be
bit for bit the same in all three, with the models the workflow loads: ESM-2 from its converted float16
file on the Triton path (the 3B model's width, heads and head size, two layers) and DNABERT-S in bf16.
"""

import numpy as np
import pytest
import torch

from tests.tiny_dnabert import build_tiny_dnabert, random_dna, train_tokenizer
from tests.tiny_esm2 import build_tiny_esm2, save_fair_esm_checkpoint
from virnucpro.models import dnabert, esm2
from virnucpro.steps.models import ensure_converted
from virnucpro.models.runner import Task, run_packed

pytestmark = pytest.mark.gpu
AA = list("ACDEFGHIKLMNPQRSTVWY")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    path = save_fair_esm_checkpoint(build_tiny_esm2(num_layers=2, embed_dim=2560, heads=40), d)
    converted, digest = ensure_converted("esm2", path, d)
    protein = esm2.load_converted(converted, digest, "cuda")
    assert protein.backend.name == "triton" and protein.dtype == torch.float16
    directory, _, _ = build_tiny_dnabert(d / "DNABERT-S", hidden_size=768, num_hidden_layers=2,
                                         intermediate_size=3072, vocab_size=4096,
                                         tokenizer=train_tokenizer(4096, n_seqs=2000), std=0.02)
    dna, tokenizer, _ = dnabert.load_dnabert(directory, "cuda", torch.bfloat16)
    return protein, esm2.tokenizer(), dna, tokenizer


def frames(n, seed):
    rng = np.random.default_rng(seed)
    proteins = ["".join(rng.choice(AA, int(k))) for k in rng.integers(20, 167, n)]
    return proteins, random_dna(n, [3 * len(p) + 1 for p in proteins], seed=seed)


def embed(models, proteins, nucleotides, esm_budget, dna_budget):
    protein, tok, dna, dna_tok = models
    ids = [f"f{i}" for i in range(len(proteins))]
    tasks = [Task("esm2", ids, proteins, tok, protein.embed, protein.embed_dim, esm_budget),
             Task("dnabert_s", ids, dna_tok(nucleotides), lambda t: t, dna.embed, 768, dna_budget)]
    got = run_packed(tasks, "cuda")
    assert protein.produced_by.name == "triton", "the Triton kernels failed and the torch path produced the result"
    return got


def test_one_set_of_frames_in_three_mixes_is_bit_identical(models):
    target = frames(60, seed=1)
    others, more = frames(400, seed=2), frames(150, seed=3)
    alone = embed(models, *target, 65536, 65536)
    mixed = embed(models, others[0] + target[0], others[1] + target[1], 65536, 65536)
    reversed_ = embed(models, more[0] + target[0][::-1], more[1] + target[1][::-1], 65536, 65536)
    for encoder in range(2):
        assert np.array_equal(mixed[encoder][400:], alone[encoder]), ("mixed", encoder)
        assert np.array_equal(reversed_[encoder][150:][::-1], alone[encoder]), ("reversed", encoder)
