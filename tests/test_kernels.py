"""The Triton kernels of the packed ESM-2 path, each against an independent torch reference.

Where there is no GPU they run through Triton's CPU interpreter (conftest sets TRITON_INTERPRET=1), in
float32 and float16; on a GPU, in bfloat16 and float16. Tolerances follow from where each kernel rounds:
- float32: only summation order differs (~1e-7 relative); 1e-5 leaves room, and a wrong scale, head or
  sequence boundary is >= 1e-2. Rotary positions offset by a constant (global instead of restarting in
  every sequence) stay within it, as q·k depends only on the difference of two positions: they are
  caught bit for bit by `test_rotary_attention_keeps_sequences_apart` (each sequence alone and packed);
- float16 / bfloat16 attention: q, k (after rotary) and the softmax probabilities are rounded to 11 / 8
  significant bits before the matrix products, as in FlashAttention: ~2^-11 / 2^-8 per element, so the
  output's relative norm error stays under 2e-3 / 1.5e-2;
- add + LayerNorm and GELU round only their outputs, so they must match the reference rounded to the
  same dtype within torch's default tolerance for that dtype (about one unit in the last place).
The whole Triton path of `PackedESM2` is also checked against fair-esm's padded float32 forward, layer
by layer, on the CPU (float32 through the interpreter; the bf16 GPU check is tests/test_esm2_gpu.py).

Every test here is marked `triton`. Where triton is not installed they skip (tests/conftest.py), except
under --require-triton, which CI passes (.ci/run; the test extra installs triton on Linux x86_64): there
a missing triton fails every one of them, loudly, instead of skipping it silently.
"""

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.tiny_esm2 import assert_every_layer_matches_fair_esm, build_tiny_esm2, packed_from_fair_esm
from virnucpro.models.attention import varlen_attention
from virnucpro.models.esm2 import tokenizer
from virnucpro.models.packing import pack

if importlib.util.find_spec("triton") is not None:  # else conftest skips every test, or fails it (--require-triton)
    from virnucpro.models import kernels

pytestmark = pytest.mark.triton
GPU = torch.cuda.is_available()
DEVICE = "cuda" if GPU else "cpu"
DTYPES = [torch.bfloat16, torch.float16] if GPU else [torch.float32, torch.float16]
ATTENTION_RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}
AA = list("ACDEFGHIKLMNPQRSTVWY")


def _rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _reference_attention(qkv, lengths, heads, scale, inv_freq):
    """float64 with fair-esm's float32 cos/sin: fair-esm's rotary with per-sequence positions, then softmax attention per sequence."""
    t = qkv.shape[0]
    head_dim = qkv.shape[1] // 3 // heads
    q, k, v = qkv.double().view(t, 3, heads, head_dim).unbind(1)
    pos = torch.cat([torch.arange(n) for n in lengths]).to(qkv.device, torch.float32)
    freqs = pos[:, None] * inv_freq[None, :]  # float32, as fair-esm's RotaryEmbedding
    emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]
    emb = emb.cos().double(), emb.sin().double()
    q = q * scale
    q = q * emb[0] + _rotate_half(q) * emb[1]
    k = k * emb[0] + _rotate_half(k) * emb[1]
    cu = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32, device=qkv.device)
    return varlen_attention(q, k, v, cu, max(lengths), scale=1.0, backend="reference")


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [32, 64])
def test_rotary_attention_matches_reference(dtype, head_dim):
    torch.manual_seed(head_dim)
    heads = 3
    lengths = [1, 2, 63, 64, 65, 130, 7]  # block edges (64) on both sides, a sequence of one token
    t = sum(lengths)
    qkv = torch.randn(t, 3 * heads * head_dim, device=DEVICE).to(dtype)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=DEVICE).float() / head_dim))
    cos, sin = kernels.rotary_tables(inv_freq, 1024)
    cu = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32, device=DEVICE)
    out = torch.full((t, heads, head_dim), float("nan"), device=DEVICE, dtype=dtype)
    want = _reference_attention(qkv, lengths, heads, head_dim**-0.5, inv_freq)
    out.copy_(kernels.rotary_attention(qkv, cu, max(lengths), heads, head_dim**-0.5, cos, sin))
    assert not out.isnan().any()
    assert _rel(out, want) < ATTENTION_RTOL[dtype]
    for i, n in enumerate(lengths):  # every sequence on its own, not only the batch norm
        s = slice(sum(lengths[:i]), sum(lengths[: i + 1]))
        assert _rel(out[s], want[s]) < 2 * ATTENTION_RTOL[dtype], f"sequence {i} (length {n})"


def test_rotary_attention_keeps_sequences_apart():
    torch.manual_seed(1)
    heads, head_dim = 2, 32
    dtype = DTYPES[0]
    lengths = [40, 3, 90]
    qkv = torch.randn(sum(lengths), 3 * heads * head_dim, device=DEVICE).to(dtype)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=DEVICE).float() / head_dim))
    cos, sin = kernels.rotary_tables(inv_freq, 256)
    cu = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32, device=DEVICE)
    together = kernels.rotary_attention(qkv.clone(), cu, 90, heads, 0.2, cos, sin)  # k is rotated in place
    start = 0
    for n in lengths:
        alone = kernels.rotary_attention(qkv[start : start + n].clone(),
                                         torch.tensor([0, n], dtype=torch.int32, device=DEVICE), n, heads, 0.2, cos, sin)
        assert torch.equal(alone, together[start : start + n])
        start += n


def test_rotary_attention_rejects_what_it_does_not_handle():
    qkv = torch.zeros(4, 3 * 2 * 24, device=DEVICE)
    cos, sin = kernels.rotary_tables(torch.ones(12, device=DEVICE), 16)
    with pytest.raises(ValueError, match="head size 24"):
        kernels.rotary_attention(qkv, torch.tensor([0, 4], dtype=torch.int32, device=DEVICE), 4, 2, 1.0, cos, sin)
    assert kernels.supported(64) and not kernels.supported(16) and not kernels.supported(24)


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_layer_norm_matches_torch(dtype):
    torch.manual_seed(2)
    t, d = 37, 320  # a width that is not a power of two
    x = (3 + torch.randn(t, d, device=DEVICE)).to(dtype)
    delta = torch.randn(t, d, device=DEVICE).to(dtype)
    w = (1 + 0.1 * torch.randn(d, device=DEVICE)).to(dtype)
    b = (0.1 * torch.randn(d, device=DEVICE)).to(dtype)
    want_x = x + delta
    want_h = F.layer_norm(want_x.float(), (d,), w.float(), b.float(), 1e-5).to(dtype)
    h = kernels.add_layer_norm(x, delta, w, b, 1e-5)
    assert torch.equal(x, want_x)  # the residual stream, updated in place, rounded as an eager add
    torch.testing.assert_close(h, want_h)


def test_add_layer_norm_on_a_float32_residual_stream():
    torch.manual_seed(4)
    dtype = DTYPES[-1]  # a 16-bit type: delta and output; the stream itself stays float32
    x = 3 + torch.randn(9, 200, device=DEVICE)
    delta = torch.randn(9, 200, device=DEVICE).to(dtype)
    w, b = torch.randn(200, device=DEVICE).to(dtype), torch.randn(200, device=DEVICE).to(dtype)
    want_x = x + delta.float()
    want_h = F.layer_norm(want_x, (200,), w.float(), b.float(), 1e-5)
    h = kernels.add_layer_norm(x, delta, w, b, 1e-5, out_dtype=dtype)
    assert h.dtype == dtype
    torch.testing.assert_close(x, want_x, rtol=1e-6, atol=1e-6)  # float32 sum, not rounded to 16 bits
    torch.testing.assert_close(h, want_h.to(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_is_the_erf_form(dtype):
    torch.manual_seed(3)
    x = (4 * torch.randn(5000, 3, device=DEVICE)).to(dtype)
    want = F.gelu(x.float()).to(dtype)  # erf form (F.gelu's default, approximate="none")
    got = kernels.gelu_(x.clone())
    torch.testing.assert_close(got, want)
    tanh_form = F.gelu(x.float(), approximate="tanh").to(dtype)
    assert not torch.equal(tanh_form, want)  # the check can tell the two forms apart


# ------------------------------------------------------------------ the float8 path's kernels
# The e4m3 outputs must equal `virnucpro.models.fp8.quantize_rows` of the float32 result (the kernel and
# the reference compute the same float32 expression, so they may differ by one e4m3 step where a sum
# rounds differently: at most 1 % of the elements here), and the scales must agree to float32 rounding.
# GPU only: Triton's CPU interpreter converts to e4m3 wrongly where the rounding carries into the
# exponent (-126.2 becomes -64 instead of -128), so it cannot check these kernels.


def _assert_quantized_like(data, scale, y):
    from virnucpro.models.fp8 import quantize_rows

    want = quantize_rows(y)
    torch.testing.assert_close(scale, want.scale, rtol=1e-6, atol=0)
    got, ref = data.float(), want.data.float()
    off = got != ref
    assert off.float().mean() <= 0.01
    assert ((got - ref).abs()[off] <= ref.abs()[off] * 2.0**-3 + 2.0**-9).all()  # one e4m3 step at most


@pytest.mark.gpu
def test_add_layer_norm_quantizes_its_float32_output_per_row():
    torch.manual_seed(7)
    dtype = DTYPES[-1]
    x = 3 + torch.randn(21, 320, device=DEVICE)
    delta = torch.randn(21, 320, device=DEVICE).to(dtype)
    w, b = torch.randn(320, device=DEVICE).to(dtype), torch.randn(320, device=DEVICE).to(dtype)
    y = F.layer_norm(x + delta.float(), (320,), w.float(), b.float(), 1e-5)
    h, h8, scale = kernels.add_layer_norm(x, delta, w, b, 1e-5, out_dtype=dtype, quantize=True)
    assert h8.dtype == torch.float8_e4m3fn and scale.shape == (21, 1)
    torch.testing.assert_close(h, y.to(dtype))
    _assert_quantized_like(h8, scale, y)


@pytest.mark.gpu
def test_gelu_quantize_is_the_erf_gelu_in_e4m3_per_row():
    torch.manual_seed(8)
    x = (3 * torch.randn(13, 1000, device=DEVICE)).to(DTYPES[-1])
    data, scale = kernels.gelu_quantize(x)
    _assert_quantized_like(data, scale, F.gelu(x.float()))


def test_split_attention_equals_the_fused_one():
    torch.manual_seed(9)
    heads, hd, dtype = 2, 32, DTYPES[-1]
    cu = torch.tensor([0, 5, 38, 40], dtype=torch.int32, device=DEVICE)
    qkv = torch.randn(40, 3 * heads * hd, device=DEVICE).to(dtype)
    cos, sin = kernels.rotary_tables(torch.rand(hd // 2, device=DEVICE), 64)
    qk, v = qkv[:, : 2 * heads * hd].contiguous(), qkv[:, 2 * heads * hd :].contiguous()
    want = kernels.rotary_attention(qkv.clone(), cu, 33, heads, 0.3, cos, sin)
    got = kernels.split_rotary_attention(qk, v, cu, 33, heads, 0.3, cos, sin)
    assert torch.equal(got, want)


# ------------------------------------------------------------------------ the whole Triton path


def _check_every_layer(model):
    """The packed models of every depth, each checked against fair-esm, on the Triton path."""
    rng = np.random.default_rng(5)
    seqs = ["".join(rng.choice(AA, n)) for n in (1, 9, 70, 130)] + ["ACD<mask>EFGH<mask>K"]
    return assert_every_layer_matches_fair_esm(model, seqs, kernels=True)


@pytest.mark.skipif(GPU, reason="the float32 model check runs the kernels through Triton's CPU interpreter")
def test_triton_path_matches_fair_esm_layer_by_layer():
    model = build_tiny_esm2(num_layers=2, embed_dim=64, heads=2)  # head size 32
    for packed in _check_every_layer(model):
        assert packed.produced_by.name == "triton" and packed.attention_backend == "triton"


def _broken(exc):
    def rotary_attention(*args, **kwargs):
        raise exc

    return rotary_attention


def test_a_kernel_that_fails_to_build_falls_back_to_torch_ops(monkeypatch, caplog):
    from triton.runtime.errors import PTXASError

    model = build_tiny_esm2(num_layers=2, embed_dim=64, heads=2)
    monkeypatch.setattr(kernels, "rotary_attention", _broken(PTXASError("PTX assembly failed: sm_70\ndetails")))
    with caplog.at_level("WARNING", logger="virnucpro"):
        built = _check_every_layer(model)  # the whole batch again on the torch path: nothing half-done
    assert all(packed.produced_by.name == "reference" and not packed.compiled for packed in built)
    assert "the Triton kernels failed (" in caplog.text and "sm_70" in caplog.text
    assert "running ESM-2 on plain torch ops" in caplog.text
    assert packed_from_fair_esm(model, "cpu", torch.float32).backend.name != "triton"  # not off CUDA


@pytest.mark.parametrize("exc", [RuntimeError("CUDA error: an illegal memory access was encountered"),
                                 RuntimeError("PTX assembly failed"), IndexError("a bug")],
                         ids=["device-fault", "plain-runtime-error", "bug"])
def test_a_kernel_that_fails_otherwise_propagates(monkeypatch, exc):
    """Only a build failure falls back: a device fault or a bug inside the Triton forward is raised."""
    model = build_tiny_esm2(num_layers=1, embed_dim=64, heads=2)
    packed = packed_from_fair_esm(model, "cpu", torch.float32, kernels=True)
    monkeypatch.setattr(kernels, "rotary_attention", _broken(exc))
    batch = pack(tokenizer()(["MKTAYIAKQR"]), np.arange(1))
    with pytest.raises(type(exc)) as raised:
        packed.forward_packed(batch.input_ids, batch.cu_seqlens, batch.max_seqlen)
    assert raised.value is exc and packed.backend.name == "triton" and packed.produced_by is None
