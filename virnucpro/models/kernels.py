"""Triton kernels of the packed ESM-2 forward on CUDA.

One layer of the packed forward is four cuBLAS GEMMs (q/k/v, attention output, fc1, fc2) and these
kernels, each one pass over its data:

- `rotary_attention(qkv, cu_seqlens, max_seqlen, heads, scale, cos, sin)`: attention within each packed
  sequence, reading q, k and v straight from the fused projection output (T, 3 * H * Dh). q is scaled,
  then q and k are rotated ("rotate halves", positions restarting at 0 in every sequence, float32
  cos/sin tables) and rounded to the input dtype, as fair-esm's bf16 forward does before its attention;
  scores and softmax are float32, the probabilities are rounded to the input dtype for the p·v product
  (as FlashAttention does), the output is normalised in float32. A first kernel rotates the k columns
  of `qkv` in place, once per key, so `qkv` is left with its k rotated.
- `add_layer_norm(x, delta, weight, bias, eps, out_dtype)`: x += delta in place (rounded to x's dtype,
  as an eager `x + delta` is; the model keeps x in float32), then LayerNorm of the new x with float32
  statistics (biased variance, eps inside the square root, as `torch.nn.functional.layer_norm`).
- `gelu_(x)`: the GELU of the fc1 output, in place.

The float8 model (`virnucpro.models.fp8`) also uses `add_layer_norm(..., quantize=True)`, which writes
the LayerNorm output in e4m3 with one scale per row as well, and `gelu_quantize(x)`, the GELU straight
into e4m3 with one scale per row; `split_rotary_attention` reads q, k and the values from two tensors.

The GELU is the erf form, x * Phi(x), with erfc from Abramowitz & Stegun 7.1.26 (absolute error
<= 1.5e-7, about float32's own; `_gelu`). The kernels take any float dtype; the GPU path runs them in
bf16, the tests run them on the CPU in float32 and float16 through Triton's interpreter
(`TRITON_INTERPRET=1`, read when this module is imported). `supported(head_dim)` says whether
`rotary_attention` handles a head size (a power of two from 32 to 128: each rotary half is a
matrix-multiply operand). `ATTENTION_BLOCKS` are the attention kernel's block shapes
(benchmarks/esm2_kernels.py compares others).
"""

import torch
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
ATTENTION_BLOCKS = dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2)
GELU_BLOCK = 2048


def supported(head_dim):
    return head_dim in (32, 64, 128)


@triton.jit
def _rotate(x1, x2, cos, sin):
    """fair-esm's rotary on the two halves of a head, in float32: (x1 cos - x2 sin, x2 cos + x1 sin)."""
    return x1 * cos - x2 * sin, x2 * cos + x1 * sin


@triton.jit
def _program(cu_seqlens, n_mblocks, heads):
    """This program's (block of rows, head, first token, sequence length): sequences outermost, so that
    the programs of one sequence and head run side by side and share its keys in L2."""
    pid = tl.program_id(0)
    seq = pid // (n_mblocks * heads)
    start = tl.load(cu_seqlens + seq).to(tl.int64)
    length = (tl.load(cu_seqlens + seq + 1) - start).to(tl.int32)
    return pid % n_mblocks, (pid // n_mblocks) % heads, start, length


@triton.jit
def _attend(q1, q2, m_i, l_i, acc, k_base, v_base, n0, length, stride_t, stride_v,
            HALF: tl.constexpr, BLOCK_N: tl.constexpr):
    """One block of (rotated) keys (from k_base) and values (from v_base), rows n0.., folded into the
    online softmax; the probabilities are rounded to the values' dtype for the p·v product."""
    dtype = q1.dtype
    half = tl.arange(0, HALF)
    keys = n0 + tl.arange(0, BLOCK_N)
    in_n = keys < length
    k_at = k_base + keys[:, None] * stride_t + half[None, :]
    k1 = tl.load(k_at, mask=in_n[:, None], other=0.0).to(tl.float32)
    k2 = tl.load(k_at + HALF, mask=in_n[:, None], other=0.0).to(tl.float32)
    scores = tl.dot(q1, tl.trans(k1.to(dtype))) + tl.dot(q2, tl.trans(k2.to(dtype)))  # float32
    scores = tl.where(in_n[None, :], scores * LOG2E, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(scores, 1))
    p = tl.math.exp2(scores - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    dims = tl.arange(0, 2 * HALF)
    v = tl.load(v_base + keys[:, None] * stride_v + dims[None, :], mask=in_n[:, None], other=0.0)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return m_new, l_i * alpha + tl.sum(p, 1), acc


@triton.jit
def _rotary_attention_kernel(
    qkv, vals, out, cu_seqlens, cos_tab, sin_tab, scale, n_mblocks, heads,
    stride_t, stride_v, stride_o, D: tl.constexpr, HALF: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # one program per (sequence, head, block of query rows)
    mblock, head, start, length = _program(cu_seqlens, n_mblocks, heads)
    m0 = mblock * BLOCK_M
    if m0 >= length:
        return
    dtype = qkv.dtype.element_ty
    half = tl.arange(0, HALF)
    col = head * 2 * HALF + half  # first half of this head's q columns
    rows = m0 + tl.arange(0, BLOCK_M)
    in_m = rows < length
    q_at = qkv + (start + rows)[:, None] * stride_t + col[None, :]
    q1 = tl.load(q_at, mask=in_m[:, None], other=0.0).to(tl.float32) * scale
    q2 = tl.load(q_at + HALF, mask=in_m[:, None], other=0.0).to(tl.float32) * scale
    c = tl.load(cos_tab + rows[:, None] * HALF + half[None, :], mask=in_m[:, None], other=0.0)
    s = tl.load(sin_tab + rows[:, None] * HALF + half[None, :], mask=in_m[:, None], other=0.0)
    q1, q2 = _rotate(q1, q2, c, s)
    q1, q2 = q1.to(dtype), q2.to(dtype)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, 2 * HALF], tl.float32)
    k_base = qkv + start * stride_t + D + head * 2 * HALF
    v_base = vals + start * stride_v + head * 2 * HALF
    for n0 in range(0, length, BLOCK_N):
        m_i, l_i, acc = _attend(q1, q2, m_i, l_i, acc, k_base, v_base, n0, length, stride_t, stride_v,
                                HALF, BLOCK_N)
    o = acc / l_i[:, None]
    o_at = out + (start + rows)[:, None] * stride_o + head * 2 * HALF + tl.arange(0, 2 * HALF)[None, :]
    tl.store(o_at, o.to(out.dtype.element_ty), mask=in_m[:, None])


@triton.jit
def _rotate_keys_kernel(qkv, cu_seqlens, cos_tab, sin_tab, n_mblocks, heads, stride_t,
                        D: tl.constexpr, HALF: tl.constexpr, BLOCK_M: tl.constexpr):
    # rotary on the k columns of qkv, in place, once per key (same program grid as the attention)
    mblock, head, start, length = _program(cu_seqlens, n_mblocks, heads)
    rows = mblock * BLOCK_M + tl.arange(0, BLOCK_M)
    half = tl.arange(0, HALF)
    inside = (rows < length)[:, None]
    at = qkv + (start + rows)[:, None] * stride_t + D + head * 2 * HALF + half[None, :]
    k1 = tl.load(at, mask=inside, other=0.0).to(tl.float32)
    k2 = tl.load(at + HALF, mask=inside, other=0.0).to(tl.float32)
    c = tl.load(cos_tab + rows[:, None] * HALF + half[None, :], mask=inside, other=0.0)
    s = tl.load(sin_tab + rows[:, None] * HALF + half[None, :], mask=inside, other=0.0)
    k1, k2 = _rotate(k1, k2, c, s)
    tl.store(at, k1.to(qkv.dtype.element_ty), mask=inside)
    tl.store(at + HALF, k2.to(qkv.dtype.element_ty), mask=inside)


def rotary_tables(inv_freq, max_positions):
    """cos, sin (max_positions, Dh / 2) float32 of position * inv_freq, as fair-esm computes them."""
    pos = torch.arange(max_positions, device=inv_freq.device, dtype=torch.float32)
    freqs = pos[:, None] * inv_freq.to(torch.float32)[None, :]
    return freqs.cos().contiguous(), freqs.sin().contiguous()


def rotary_attention(qkv, cu_seqlens, max_seqlen, heads, scale, cos, sin, blocks=None):
    """qkv (T, 3 * H * Dh) with q, k, v blocks in that order -> attention output (T, H, Dh).

    cu_seqlens (B + 1,) int32; cos/sin from `rotary_tables` with at least max_seqlen positions;
    `blocks` overrides ATTENTION_BLOCKS (benchmarks). The k columns of qkv are left rotated.
    """
    d = qkv.shape[1] // 3
    return split_rotary_attention(qkv[:, : 2 * d], qkv[:, 2 * d :], cu_seqlens, max_seqlen, heads, scale, cos,
                                  sin, blocks)


def split_rotary_attention(qk, v, cu_seqlens, max_seqlen, heads, scale, cos, sin, blocks=None):
    """`rotary_attention` with q and k from `qk` (T, 2 * H * Dh) and the values from `v` (T, H * Dh), each
    with unit column stride; they may differ in dtype (the output and p·v take v's). The k columns of qk
    are left rotated."""
    t, d = v.shape
    head_dim = d // heads
    if qk.stride(1) != 1 or v.stride(1) != 1 or qk.shape != (t, 2 * d) or not supported(head_dim) \
            or cos.shape[0] < max_seqlen:
        raise ValueError(f"rotary_attention: unsupported input (head size {head_dim}, {cos.shape[0]} positions)")
    out = torch.empty(t, heads, head_dim, device=v.device, dtype=v.dtype)
    blocks = {**ATTENTION_BLOCKS, **(blocks or {})}
    n_mblocks = triton.cdiv(max(int(max_seqlen), 1), blocks["BLOCK_M"])
    grid = ((cu_seqlens.shape[0] - 1) * heads * n_mblocks,)
    if grid[0]:  # k rotated once, in place, instead of once per block of queries
        _rotate_keys_kernel[grid](qk, cu_seqlens, cos, sin, n_mblocks, heads, qk.stride(0), D=d,
                                  HALF=head_dim // 2, BLOCK_M=blocks["BLOCK_M"])
        _rotary_attention_kernel[grid](
            qk, v, out, cu_seqlens, cos, sin, float(scale), n_mblocks, heads, qk.stride(0), v.stride(0),
            d, D=d, HALF=head_dim // 2, **blocks,
        )
    return out


@triton.jit
def _quantize_row(y, cols, inside, q_ptr, s_ptr, row, n):
    """Row y (float32, columns `cols`) in e4m3 at q_ptr, with its scale max|y| / 448 at s_ptr."""
    amax = tl.maximum(tl.max(tl.where(inside, tl.abs(y), 0.0), 0), 1e-12)
    q = tl.minimum(tl.maximum(y * (448.0 / amax), -448.0), 448.0)
    tl.store(q_ptr + row * n + cols, q.to(q_ptr.dtype.element_ty), mask=inside)
    tl.store(s_ptr + row, amax / 448.0)


@triton.jit
def _add_layer_norm_kernel(x_ptr, d_ptr, w_ptr, b_ptr, h_ptr, q_ptr, s_ptr, n, eps, BLOCK: tl.constexpr,
                           QUANTIZE: tl.constexpr, PLAIN: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    inside = cols < n
    x = tl.load(x_ptr + row * n + cols, mask=inside, other=0.0).to(tl.float32)
    d = tl.load(d_ptr + row * n + cols, mask=inside, other=0.0).to(tl.float32)
    s = (x + d).to(x_ptr.dtype.element_ty)
    tl.store(x_ptr + row * n + cols, s, mask=inside)
    s = s.to(tl.float32)
    mean = tl.sum(s, 0) / n
    diff = tl.where(inside, s - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(diff * diff, 0) / n + eps)
    w = tl.load(w_ptr + cols, mask=inside, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=inside, other=0.0).to(tl.float32)
    y = diff * rstd * w + b
    if PLAIN:
        tl.store(h_ptr + row * n + cols, y.to(h_ptr.dtype.element_ty), mask=inside)
    if QUANTIZE:
        _quantize_row(y, cols, inside, q_ptr, s_ptr, row, n)


def add_layer_norm(x, delta, weight, bias, eps, out_dtype=None, quantize=False, plain=True):
    """x (T, D) += delta, in place; returns LayerNorm(x) (T, D) in out_dtype (default: x's dtype).

    With `quantize`, returns (h, h8, scale): also the float32 LayerNorm output in e4m3 (T, D) with one
    scale per row (T, 1) float32, max|row| / 448, as `virnucpro.models.fp8.quantize_rows` makes them;
    h is None unless `plain` (where only e4m3 linears read the output)."""
    if not (x.is_contiguous() and delta.is_contiguous() and x.shape == delta.shape):
        raise ValueError("add_layer_norm: x and delta must be contiguous and of one shape")
    t, d = x.shape
    plain = plain or not quantize
    h = torch.empty_like(x, dtype=out_dtype or x.dtype) if plain else x
    h8 = torch.empty_like(x, dtype=torch.float8_e4m3fn) if quantize else h
    scale = torch.empty(t, 1, device=x.device, dtype=torch.float32) if quantize else h
    block = triton.next_power_of_2(d)
    if t:
        _add_layer_norm_kernel[(t,)](x, delta, weight, bias, h, h8, scale, d, float(eps), BLOCK=block,
                                     QUANTIZE=quantize, PLAIN=plain, num_warps=min(max(block // 256, 1), 16))
    return (h if plain else None, h8, scale) if quantize else h


@triton.jit
def _gelu(x):
    """erf GELU of float32 x: x * Phi(x), Phi from erfc by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7).

    The error is about that of float32's own erf (1 + erf(x / sqrt 2) loses the same digits to
    cancellation); in bf16 the outputs round as `torch.nn.functional.gelu`'s do (tests/test_kernels.py).
    One exp2 and a reciprocal instead of libdevice's two-branch erf: the GELU stays memory-bound.
    """
    t = tl.abs(x) * 0.7071067811865476
    k = 1.0 / (1.0 + 0.3275911 * t)
    poly = ((((1.061405429 * k - 1.453152027) * k + 1.421413741) * k - 0.284496736) * k + 0.254829592) * k
    erfc = poly * tl.math.exp2(-(t * t) * LOG2E)  # erfc(|x| / sqrt 2)
    return x * tl.where(x >= 0, 1.0 - 0.5 * erfc, 0.5 * erfc)


@triton.jit
def _gelu_kernel(x_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    x = tl.load(x_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    tl.store(x_ptr + offs, _gelu(x).to(x_ptr.dtype.element_ty), mask=inside)


def gelu_(x):
    """The erf GELU of a contiguous tensor, in place; returns x."""
    if not x.is_contiguous():
        raise ValueError("gelu_: x must be contiguous")
    n = x.numel()
    if n:
        _gelu_kernel[(triton.cdiv(n, GELU_BLOCK),)](x, n, BLOCK=GELU_BLOCK, num_warps=8)
    return x


@triton.jit
def _gelu_quantize_kernel(x_ptr, q_ptr, s_ptr, n, BLOCK: tl.constexpr):
    # one program per row: GELU in float32, then the row in e4m3 with its scale
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    inside = cols < n
    x = tl.load(x_ptr + row * n + cols, mask=inside, other=0.0).to(tl.float32)
    _quantize_row(_gelu(x), cols, inside, q_ptr, s_ptr, row, n)


def gelu_quantize(x):
    """The erf GELU of x (T, K), contiguous, in e4m3 with one scale per row: (x8 (T, K), scale (T, 1)
    float32), the GELU computed in float32 and never rounded to x's dtype."""
    if not x.is_contiguous() or x.dim() != 2:
        raise ValueError("gelu_quantize: x must be a contiguous matrix")
    t, k = x.shape
    out = torch.empty_like(x, dtype=torch.float8_e4m3fn)
    scale = torch.empty(t, 1, device=x.device, dtype=torch.float32)
    block = triton.next_power_of_2(k)
    if t:
        _gelu_quantize_kernel[(t,)](x, out, scale, k, BLOCK=block, num_warps=min(max(block // 512, 1), 16))
    return out, scale
