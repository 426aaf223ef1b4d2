"""bf16 packed DNABERT-S on a GPU against the float32 one-sequence reference (skipped without CUDA).

Criterion, per sequence, on the pooled embeddings: cosine similarity to the float32 reference >= 0.9999,
and relative error at most 2x that of the same reference run in bf16 (the original arithmetic at the
same precision; the two round at different points, fused kernels vs separate matmuls). bf16 keeps 8
significant bits (relative rounding 2^-9 = 2e-3 per operation); through 12 post-LN layers the pooled
error stays near 5e-3 relative, i.e. cosine ~ 1 - 1e-5, so 0.9999 passes bf16 done right and fails a
real defect (a slope, a distance across packed sequences, [CLS]/[SEP] left out of the mean), each
>= 1e-3 in cosine and 10x or more in relative error. Two identical runs must give the same bits.
"""

import numpy as np
import pytest
import torch
from tests.tiny_dnabert import build_tiny_dnabert, hf_token_ids, random_dna, reference_embeddings, train_tokenizer

from virnucpro.models.attention import _have_flash_attn
from virnucpro.models.dnabert import load_dnabert
from tests.packed_runs import embed_packed

pytestmark = pytest.mark.gpu

BACKENDS = ["padded_sdpa"] + (["flash_attn"] if _have_flash_attn() else [])
# 300 and 500 bp frames as `prepare` writes them, short ones, and sequences of more than 512 tokens
LENGTHS_BP = [294, 298, 299, 300, 300, 498, 499, 500, 500, 1, 3, 20, 120, 3000, 4000]


def _cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _rel(a, b):
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module", autouse=True)
def no_tf32():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_dnabert(tmp_path_factory.mktemp("gpu") / "tiny", tokenizer=train_tokenizer(256))


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    """The DNABERT-S architecture (12 x 768, 12 heads, 3072, vocabulary 4096), random weights drawn
    at the config's initializer_range (0.02) as the model's own initialisation does; at 1/sqrt(fan_in)
    the random 12-layer post-LN net is chaotic and bf16 weights alone cost ~1e-4 in cosine (see
    tests/tiny_dnabert.py), which no implementation could avoid."""
    return build_tiny_dnabert(
        tmp_path_factory.mktemp("gpu") / "full", hidden_size=768, num_hidden_layers=12,
        num_attention_heads=12, intermediate_size=3072, vocab_size=4096,
        tokenizer=train_tokenizer(4096, n_seqs=2000), std=0.02,
    )


def _check(snapshot, seqs, tokens_per_batch, backend):
    directory, state, cfg = snapshot
    model, tok, _ = load_dnabert(directory, "cuda", torch.bfloat16, attention=backend)
    ids = [f"s{i}" for i in range(len(seqs))]
    dim = cfg["hidden_size"]
    got = embed_packed(ids, tok(seqs), lambda t: t, model.embed, dim, "cuda", tokens_per_batch, "gpu-test")
    again = embed_packed(ids, tok(seqs), lambda t: t, model.embed, dim, "cuda", tokens_per_batch, "gpu-test")
    token_ids = hf_token_ids(directory, seqs)
    assert max(len(t) for t in token_ids) > 512
    ref = reference_embeddings(state, token_ids, device="cuda")
    ref_bf16 = reference_embeddings(state, token_ids, device="cuda", dtype=torch.bfloat16)
    cos, err, ref_err = _cosine(got, ref), _rel(got, ref), _rel(ref_bf16, ref)
    print(f"\n{backend}: packed bf16 vs fp32 reference: min cosine "
          f"{cos.min():.7f}, max rel err {err.max():.2e}; reference in bf16: max rel err {ref_err.max():.2e}")
    assert np.array_equal(got, again), "packed GPU embeddings differ between two identical runs"
    assert cos.min() >= 0.9999
    assert err.max() <= 2 * ref_err.max()


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_bf16_packed_vs_fp32_reference(tiny, backend):
    _check(tiny, random_dna(len(LENGTHS_BP) * 4, LENGTHS_BP * 4, seed=10), 4096, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_size_bf16_packed_vs_fp32_reference(full_size, backend):
    _check(full_size, random_dna(len(LENGTHS_BP) * 8, LENGTHS_BP * 8, seed=11), 65536, backend)


def test_default_backend_is_chosen_by_capability(tiny):
    model, _, _ = load_dnabert(tiny[0], "cuda", torch.bfloat16)
    assert model.attention_backend == ("flash_attn" if _have_flash_attn() else "padded_sdpa")
