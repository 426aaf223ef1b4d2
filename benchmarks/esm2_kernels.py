"""Per-layer pieces of the packed ESM-2 3B forward on one GPU: the Triton kernels against what they replace.

    python benchmarks/esm2_kernels.py --out benchmarks/results/esm2_kernels_h200.txt

One 3B layer's shapes (2560 wide, 40 heads of 64) on one packed batch of about 65 K tokens, for two
workloads (every protein 166 residues; lengths uniform in 20..166). Each piece is checked against a
float32 reference on the same inputs, then timed with CUDA events (median of `triton.testing.do_bench`):

- attention (rotary included): torch.compile'd rotary + torch varlen_attn (FlashAttention-2) against
  `kernels.rotary_attention` under several block shapes;
- residual add + LayerNorm: torch.compile'd against `kernels.add_layer_norm` (bf16 and float32 stream);
- erf GELU: eager, torch.compile'd and `kernels.gelu_`;
- a plain copy of the same bytes (the memory floor of an elementwise pass), and the cuBLAS GEMMs.
GB/s counts each tensor read once and written once.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from virnucpro.models import kernels  # noqa: E402
from virnucpro.models.attention import varlen_attention  # noqa: E402

DIM, HEADS, HEAD_DIM, FFN = 2560, 40, 64, 10240
BLOCK_VARIANTS = [
    dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=1),
    dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2),
    dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3),
    dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2),
    dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=2),
]


def batch_lengths(kind, budget=65536, seed=0):
    rng = np.random.default_rng(seed)
    lengths, total = [], 0
    while True:
        n = 168 if kind == "fixed166" else int(rng.integers(22, 169))
        if total + n > budget:
            return lengths
        lengths.append(n)
        total += n


def bench(fn):
    return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def reference_attention(qkv, cu, lengths, cos_tab, sin_tab):
    """float32 rotary + per-sequence softmax attention."""
    t = qkv.shape[0]
    q, k, v = qkv.float().view(t, 3, HEADS, HEAD_DIM).unbind(1)
    pos = torch.cat([torch.arange(n, device=qkv.device) for n in lengths])
    c, s = cos_tab[pos].repeat(1, 2)[:, None], sin_tab[pos].repeat(1, 2)[:, None]
    q = q * HEAD_DIM**-0.5
    q, k = q * c + rotate_half(q) * s, k * c + rotate_half(k) * s
    return varlen_attention(q, k, v, cu, max(lengths), scale=1.0, backend="padded_sdpa")


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="also write the table here")
    ap.add_argument("--workloads", default="fixed166,uniform20-166")
    args = ap.parse_args()
    lines = []

    def log(msg):
        print(msg, flush=True)
        lines.append(msg)

    dev, bf16 = torch.device("cuda"), torch.bfloat16
    torch.manual_seed(0)
    p = torch.cuda.get_device_properties(dev)
    log(f"# {p.name}, {p.multi_processor_count} SMs, torch {torch.__version__}, triton {triton.__version__}")
    inv_freq = 1.0 / (10000 ** (torch.arange(0, HEAD_DIM, 2, device=dev).float() / HEAD_DIM))
    cos_tab, sin_tab = kernels.rotary_tables(inv_freq, 1024)
    qkv_w = torch.randn(3 * DIM, DIM, device=dev, dtype=bf16) * DIM**-0.5
    qkv_b = torch.randn(3 * DIM, device=dev, dtype=bf16) * 0.1
    fc1_w = torch.randn(FFN, DIM, device=dev, dtype=bf16) * DIM**-0.5
    fc1_b = torch.randn(FFN, device=dev, dtype=bf16) * 0.1
    fc2_w = torch.randn(DIM, FFN, device=dev, dtype=bf16) * FFN**-0.5
    out_w = torch.randn(DIM, DIM, device=dev, dtype=bf16) * DIM**-0.5
    ln_w = 1 + 0.1 * torch.randn(DIM, device=dev, dtype=bf16)
    ln_b = 0.1 * torch.randn(DIM, device=dev, dtype=bf16)

    for wl in args.workloads.split(","):
        lengths = batch_lengths(wl)
        t = sum(lengths)
        cu = torch.tensor([0, *np.cumsum(lengths)], device=dev, dtype=torch.int32)
        log(f"## {wl}: {len(lengths)} sequences, {t} tokens, max {max(lengths)}")
        h = torch.randn(t, DIM, device=dev, dtype=bf16)
        qkv = F.linear(h, qkv_w, qkv_b)

        # --- attention
        ref = reference_attention(qkv, cu, lengths, cos_tab, sin_tab)
        pos = torch.cat([torch.arange(n, device=dev) for n in lengths])
        cos_t, sin_t = cos_tab[pos].repeat(1, 2)[:, None], sin_tab[pos].repeat(1, 2)[:, None]

        @torch.compile
        def rot_tok(qkv, cos, sin):
            q, k, v = qkv.view(qkv.shape[0], 3, HEADS, HEAD_DIM).unbind(1)
            q = q * HEAD_DIM**-0.5
            q = (q.float() * cos + rotate_half(q.float()) * sin).to(qkv.dtype)
            k = (k.float() * cos + rotate_half(k.float()) * sin).to(qkv.dtype)
            return q, k, v

        def old():
            q, k, v = rot_tok(qkv, cos_t, sin_t)
            return varlen_attention(q, k, v, cu, max(lengths), scale=1.0, backend="torch_varlen")

        o_old = old()
        log(f"attention torch.compile rotary + varlen_attn: rel err vs fp32 {rel(o_old, ref):.2e}, "
            f"{bench(old):.3f} ms (rotary alone {bench(lambda: rot_tok(qkv, cos_t, sin_t)):.3f} ms)")
        for blocks in BLOCK_VARIANTS:
            scratch = qkv.clone()  # k is rotated in place: checked on one copy, timed on another

            def new(blocks=blocks, qkv=scratch):
                return kernels.rotary_attention(qkv, cu, max(lengths), HEADS, HEAD_DIM**-0.5, cos_tab, sin_tab,
                                                blocks=blocks)

            o_new = new(qkv=qkv.clone())
            log(f"attention triton {blocks}: rel err vs fp32 {rel(o_new, ref):.2e}, {bench(new):.3f} ms")
            del scratch
        nbytes = t * (3 * DIM + DIM) * 2
        log(f"# attention bytes (qkv read once, output written once): {nbytes / 1e9:.2f} GB")

        # --- residual add + LayerNorm
        x = torch.randn(t, DIM, device=dev, dtype=bf16)
        d = torch.randn(t, DIM, device=dev, dtype=bf16)

        @torch.compile
        def add_ln(x, d):
            x = x + d
            return x, F.layer_norm(x, (DIM,), ln_w, ln_b, 1e-5)

        want_x, want_h = add_ln(x, d)
        xs = x.clone()
        got_h = kernels.add_layer_norm(xs, d, ln_w, ln_b, 1e-5)
        ref_h = F.layer_norm((x + d).float(), (DIM,), ln_w.float(), ln_b.float(), 1e-5)
        log(f"add+LayerNorm: x exact {torch.equal(xs, x + d)}, rel err vs fp32 triton {rel(got_h, ref_h):.2e} "
            f"compiled {rel(want_h, ref_h):.2e}")
        ln_bytes = 4 * t * DIM * 2
        for name, fn in (("compiled", lambda: add_ln(x, d)),
                         ("triton", lambda: kernels.add_layer_norm(xs, d, ln_w, ln_b, 1e-5))):
            ms = bench(fn)
            log(f"add+LayerNorm {name}: {ms:.3f} ms, {ln_bytes / ms / 1e6:.0f} GB/s")

        x32 = x.float()
        got32 = kernels.add_layer_norm(x32.clone(), d, ln_w, ln_b, 1e-5, out_dtype=bf16)
        ref32 = F.layer_norm(x.float() + d.float(), (DIM,), ln_w.float(), ln_b.float(), 1e-5)
        ms = bench(lambda: kernels.add_layer_norm(x32, d, ln_w, ln_b, 1e-5, out_dtype=bf16))
        log(f"add+LayerNorm triton, float32 residual: rel err vs fp32 {rel(got32, ref32):.2e}, {ms:.3f} ms, "
            f"{t * DIM * 12 / ms / 1e6:.0f} GB/s")
        del x32, got32, ref32

        # --- GELU
        f = F.linear(h, fc1_w, fc1_b)
        ref_g = F.gelu(f.float())
        g = kernels.gelu_(f.clone())
        log(f"gelu: triton vs fp32 rel err {rel(g, ref_g):.2e}, eager bf16 {rel(F.gelu(f), ref_g):.2e}")
        compiled_gelu = torch.compile(F.gelu)
        work = f.clone()
        g_bytes = 2 * f.numel() * 2
        for name, fn in (("eager", lambda: F.gelu(f)), ("compiled", lambda: compiled_gelu(f)),
                         ("triton in place", lambda: kernels.gelu_(work)),
                         ("copy of the same bytes", lambda: work.copy_(f))):
            ms = bench(fn)
            log(f"gelu {name}: {ms:.3f} ms, {g_bytes / ms / 1e6:.0f} GB/s")

        # --- GEMMs
        gemm_ms = 0.0
        for name, a, w, b in (("qkv", h, qkv_w, qkv_b), ("out", h, out_w, ln_b), ("fc1", h, fc1_w, fc1_b),
                              ("fc2", f, fc2_w, ln_b)):
            ms = bench(lambda a=a, w=w, b=b: F.linear(a, w, b))
            gemm_ms += ms
            log(f"gemm {name}: {ms:.3f} ms, {2 * t * w.shape[0] * w.shape[1] / ms / 1e9:.0f} TFLOP/s")
        wt = fc1_w.t().contiguous()
        log(f"gemm fc1 without bias {bench(lambda: F.linear(h, fc1_w)):.3f} ms; "
            f"x @ W (weights pre-transposed) {bench(lambda: h @ wt):.3f} ms")
        del wt
        log(f"# gemms {gemm_ms:.3f} ms per layer = {t / (36 * gemm_ms / 1e3) / 1e3:.1f} K tokens/s for 36 layers")
        del h, qkv, f, work, x, xs, d
        torch.cuda.empty_cache()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
