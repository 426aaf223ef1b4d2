"""Attention over packed sequences: each sequence attends only to itself.

All backends take q, k, v (T, H, Dh) and `cu_seqlens` (B + 1,) int32 on the same device and return
(T, H, Dh) in q's dtype. `scale` multiplies q·k; `alibi_slopes` (H,) float32 adds the bias
`-slope_h * |i - j|` (DNABERT-S). The backend is picked once, by capability, with `select_backend`:

- "flash_attn":   flash_attn.flash_attn_varlen_func (CUDA, fp16/bf16; ALiBi supported)
- "torch_varlen": torch.nn.attention.varlen.varlen_attn, PyTorch's FlashAttention (CUDA, fp16/bf16; no ALiBi)
- "padded_sdpa":  sequences padded to (B, H, Lmax, Dh) and scaled_dot_product_attention with a key
                  mask (without ALiBi) or a per-batch plan of the additive ALiBi bias (with ALiBi: the
                  CUDA fallback for ALiBi without flash-attn)
- "reference":    one scaled_dot_product_attention call per sequence (CPU, float32; same numbers as a
                  padded batch, so the CPU path reproduces fair-esm's padded forward)

For ALiBi without flash-attn, padded SDPA is the only fallback (its comparison with FlexAttention
is in benchmarks/results/dnabert_throughput_h200.md). It builds a per-batch plan (padding indices and the bias) once and reuses it for
every layer: the plan of the last (cu_seqlens, max_seqlen, slopes) is kept, recognised by tensor
identity, so the layers of one batch must pass the same tensors.
"""

import weakref

import torch
import torch.nn.functional as F

from virnucpro.models.packing import segment_ids

BACKENDS = ("flash_attn", "torch_varlen", "padded_sdpa", "reference")


def _have_flash_attn():
    try:
        from flash_attn import flash_attn_varlen_func  # noqa: F401
    except ImportError:
        return False
    return True


def _have_torch_varlen():
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def select_backend(device, dtype, alibi=False):
    """The fastest backend that runs on `device` with `dtype` (and ALiBi when `alibi`)."""
    device = torch.device(device)
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        if _have_flash_attn():
            return "flash_attn"
        if not alibi and _have_torch_varlen():
            return "torch_varlen"
        # ALiBi without flash-attn: padded SDPA (module docstring)
        return "padded_sdpa"
    return "reference"


def varlen_attention(q, k, v, cu_seqlens, max_seqlen, scale, alibi_slopes=None, backend=None):
    """Attention within each packed sequence. q, k, v: (T, H, Dh); returns (T, H, Dh)."""
    if backend is None:
        backend = select_backend(q.device, q.dtype, alibi=alibi_slopes is not None)
    if backend == "flash_attn":
        from flash_attn import flash_attn_varlen_func

        return flash_attn_varlen_func(
            q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
            dropout_p=0.0, softmax_scale=scale, causal=False,
            alibi_slopes=None if alibi_slopes is None else alibi_slopes.to(torch.float32),
        )
    if backend == "torch_varlen":
        if alibi_slopes is not None:
            raise ValueError("torch varlen_attn has no ALiBi; use another backend")
        from torch.nn.attention.varlen import varlen_attn

        return varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, scale=scale)
    if backend == "padded_sdpa" and alibi_slopes is not None:
        return _padded_sdpa_alibi(q, k, v, cu_seqlens, max_seqlen, scale, alibi_slopes)
    if backend == "padded_sdpa":
        return _padded_sdpa(q, k, v, cu_seqlens, max_seqlen, scale)
    if backend == "reference":
        return _reference(q, k, v, cu_seqlens, scale, alibi_slopes)
    raise ValueError(f"unknown attention backend {backend!r}; expected one of {BACKENDS}")


def _alibi_bias(slopes, n, device, dtype):
    acc = torch.promote_types(dtype, torch.float32)  # at least float32, float64 for float64 inputs
    pos = torch.arange(n, device=device)
    dist = (pos[None, :] - pos[:, None]).abs().to(acc)  # (n, n)
    return (-slopes.to(acc)[:, None, None] * dist).to(dtype)  # (H, n, n)


def _reference(q, k, v, cu_seqlens, scale, alibi_slopes):
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end == start:
            continue
        qs, ks, vs = (t[start:end].transpose(0, 1) for t in (q, k, v))  # (H, L, Dh)
        bias = None if alibi_slopes is None else _alibi_bias(alibi_slopes, end - start, q.device, q.dtype)
        o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=bias, scale=scale)
        out[start:end] = o.transpose(0, 1)
    return out


def _padded_sdpa(q, k, v, cu_seqlens, max_seqlen, scale):
    """Attention without ALiBi as one padded SDPA call with a key mask."""
    t, h, d = q.shape
    b = cu_seqlens.shape[0] - 1
    cu = cu_seqlens.to(torch.int64)
    lens = cu[1:] - cu[:-1]
    pos = torch.arange(max_seqlen, device=q.device)
    valid = pos[None, :] < lens[:, None]  # (B, L)
    src = (cu[:-1, None] + pos[None, :]).clamp_max(max(t - 1, 0))  # (B, L) token of each padded slot

    def to_padded(x):
        return x[src].permute(0, 2, 1, 3)  # (B, H, L, Dh)

    mask = torch.zeros(b, 1, 1, max_seqlen, device=q.device, dtype=q.dtype)
    mask.masked_fill_(~valid[:, None, None, :], float("-inf"))
    o = F.scaled_dot_product_attention(to_padded(q), to_padded(k), to_padded(v), attn_mask=mask, scale=scale)
    return o.permute(0, 2, 1, 3)[valid]  # (T, H, Dh)


# --------------------------------------------------------------------------- ALiBi on packed batches


class _LastPlan:
    """The plan of the most recent batch, reused while the same tensors (by identity) come back."""

    def __init__(self):
        self.refs, self.key, self.plan = (), None, None

    def get(self, tensors, key, build):
        same = len(self.refs) == len(tensors) and all(r() is t for r, t in zip(self.refs, tensors))
        if not same or self.key != key:
            self.plan = None  # free the old plan before building the new one
            self.plan = build()
            self.refs, self.key = tuple(weakref.ref(t) for t in tensors), key
        return self.plan


_padded_plans = _LastPlan()
_MASK_ALIGN = 16  # SDPA's memory-efficient kernel copies a bias whose row stride is not aligned


def _padded_alibi_plan(cu_seqlens, total, max_seqlen, slopes, dtype):
    """Padding indices and the (B, H, L, L) additive bias (ALiBi + key mask) of one packed batch."""
    b, n = cu_seqlens.shape[0] - 1, max_seqlen
    device = cu_seqlens.device
    cu = cu_seqlens.to(torch.int64)
    seg = segment_ids(cu_seqlens, total)  # (T,) sequence of each token
    pos = torch.arange(total, device=device) - cu[seg]  # (T,) position within its sequence
    slot = torch.arange(n, device=device)
    src = (cu[:-1, None] + slot[None, :]).clamp_max(max(total - 1, 0))  # (B, L) token of each padded slot
    valid = slot[None, :] < (cu[1:] - cu[:-1])[:, None]  # (B, L)
    acc = torch.promote_types(dtype, torch.float32)  # at least float32, float64 for float64 inputs
    dist = (slot[None, :] - slot[:, None]).abs().to(acc)  # (L, L)
    alibi = -slopes.to(device, acc)[:, None, None] * dist  # (H, L, L)
    key_mask = torch.zeros(b, 1, 1, n, device=device, dtype=acc)
    key_mask.masked_fill_(~valid[:, None, None, :], float("-inf"))
    width = -(-n // _MASK_ALIGN) * _MASK_ALIGN
    bias = torch.empty(b, slopes.shape[0], n, width, device=device, dtype=dtype)[..., :n]
    torch.add(alibi[None], key_mask, out=bias)  # (B, H, L, L), rounded once to `dtype`
    return src, seg, pos, bias


def _padded_sdpa_alibi(q, k, v, cu_seqlens, max_seqlen, scale, alibi_slopes):
    """ALiBi attention as one padded SDPA call; no host synchronisation (indices, not boolean masks)."""
    t = q.shape[0]
    key = (t, int(max_seqlen), q.dtype, q.device)
    src, seg, pos, bias = _padded_plans.get(
        (cu_seqlens, alibi_slopes), key,
        lambda: _padded_alibi_plan(cu_seqlens, t, int(max_seqlen), alibi_slopes, q.dtype),
    )

    def to_padded(x):
        return x[src].transpose(1, 2)  # (B, H, L, Dh)

    o = F.scaled_dot_product_attention(to_padded(q), to_padded(k), to_padded(v), attn_mask=bias, scale=scale)
    return o[seg, :, pos]  # (T, H, Dh): padded slot (seg, pos) of every packed token
