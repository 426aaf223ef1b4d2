"""Packed ESM-2 on a GPU in float16 (the workflow's precision) and bf16 against fair-esm's float32 padded
forward (skipped without CUDA).

Criterion: every protein's pooled embedding has a cosine similarity of at least 0.9999 with fair-esm's
float32 padded one. bf16 keeps 8 significant bits (relative rounding 2^-9 = 2e-3 per operation); over 36
layers the pooled error stays near 1e-2 relative, i.e. cosine ~ 1 - 5e-5, so 0.9999 passes bf16 done
right and fails a real defect (scaling, rotary in bf16 over long proteins, pooling of BOS/EOS), each
>= 1e-3 in cosine; float16 keeps 11 bits, 8x less rounding. Rotary positions offset by a constant
(global instead of per sequence) are not caught: q·k depends only on position differences. The packed error is also required to stay within 1.5x
fair-esm's own padded error at the same precision.
"""

import numpy as np
import pytest
import torch
from tests.tiny_esm2 import LENGTHS, build_tiny_esm2, packed_from_fair_esm, padded_reference, random_proteins

from virnucpro.models.esm2 import tokenizer
from tests.packed_runs import embed_packed

pytestmark = pytest.mark.gpu

def _cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _check(model, seqs, tokens_per_batch, kernels, dtype=torch.float16):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    layer = model.num_layers
    ref = padded_reference(model, seqs, layer, batch=4)
    packed = packed_from_fair_esm(model, "cuda", dtype)
    chosen = packed.backend  # the default CUDA path: Triton where the head size allows, else compiled torch
    assert (chosen.name == "triton") == kernels and chosen.compiled == (not kernels)
    tok = tokenizer()
    ids = [f"p{i}" for i in range(len(seqs))]
    got = embed_packed(ids, seqs, tok, packed.embed, model.embed_dim, "cuda", tokens_per_batch, "gpu-test")
    again = embed_packed(ids, seqs, tok, packed.embed, model.embed_dim, "cuda", tokens_per_batch, "gpu-test")
    packed_path = packed.attention_backend + (", compiled" if packed.compiled else "")
    assert packed.produced_by is chosen, "the chosen backend failed and a fallback produced the result"
    del packed
    model.to(dtype)
    for block in model.layers:  # as a fresh bf16 fair-esm model: no rotary tables cached in float32
        block.self_attn.rot_emb._seq_len_cached = None
    fair_low = padded_reference(model, seqs, layer, batch=4)
    cos = _cosine(got, ref)
    err = np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)
    fair_err = np.linalg.norm(fair_low - ref, axis=1) / np.linalg.norm(ref, axis=1)
    name = str(dtype).removeprefix("torch.")
    print(f"\npacked {name} ({packed_path}) vs fp32 padded: min cosine {cos.min():.7f}, max rel err "
          f"{err.max():.2e}; fair-esm {name} padded max rel err {fair_err.max():.2e}")
    assert np.array_equal(got, again), "packed GPU embeddings differ between two identical runs"
    assert cos.min() >= 0.9999
    assert err.max() <= 1.5 * fair_err.max()


DTYPES = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float16", "bfloat16"])
def test_tiny_model_packed_vs_fp32_padded(dtype):
    model = build_tiny_esm2(num_layers=3, embed_dim=64, heads=4).cuda()  # head size 16: torch path
    _check(model, random_proteins(LENGTHS * 3, seed=10), tokens_per_batch=4096, kernels=False, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float16", "bfloat16"])
def test_tiny_model_triton_path_packed_vs_fp32_padded(dtype):
    model = build_tiny_esm2(num_layers=3, embed_dim=128, heads=2).cuda()  # head size 64: Triton path
    _check(model, random_proteins(LENGTHS * 3, seed=12), tokens_per_batch=4096, kernels=True, dtype=dtype)


def test_3b_architecture_float16_packed_vs_fp32_padded():
    from esm.model.esm2 import ESM2

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = ESM2(num_layers=36, embed_dim=2560, attention_heads=40).eval()
        with torch.no_grad():
            model.embed_tokens.weight.normal_(0.0, 1.0)
    _check(model, random_proteins(LENGTHS, seed=11), tokens_per_batch=16384, kernels=True)
