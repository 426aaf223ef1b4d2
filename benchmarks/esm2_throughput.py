"""ESM-2 3B throughput: the original extract path, fair-esm padded bf16, and the packed path.

The packed variants run in each of `--dtypes` (float16, the workflow's compute dtype, first); `float8`
is the float8 model (q, k, fc1 and fc2 in e4m3, the rest in float16: `embed.precision: float8`).

    python benchmarks/esm2_throughput.py --out benchmarks/results/esm2_throughput_h200.txt

Random weights with the esm2_t36_3B_UR50D architecture (36 layers, 2560 wide, 40 heads); two workloads:
every protein 166 residues, and lengths uniform in 20..166. Tokens counted are the real ones (<cls> and
<eos> included, no padding); TFLOP/s uses 5.66 GFLOP per token (the linear layers of a forward pass).
Each variant is warmed up on a slice of the workload (torch.compile compiles there), then timed over the
whole workload end to end (tokenising, copies, forward, pooling, results back on the host).
Peak memory is the most the variant allocated above what was resident before it, weights excluded.
"""

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import esm  # noqa: E402
from esm.model.esm2 import ESM2  # noqa: E402

from benchmarks.timing import sync, timed  # noqa: E402
from tests.tiny_esm2 import packed_from_fair_esm
from virnucpro.models.esm2 import Esm2Tokenizer  # noqa: E402
from tests.packed_runs import embed_packed  # noqa: E402

GFLOP_PER_TOKEN = 5.66
ARCHS = {"3B": (36, 2560, 40), "tiny": (2, 64, 4)}
AA = list("ACDEFGHIKLMNPQRSTVWY")


def workload(kind, n, seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.full(n, 166) if kind == "fixed166" else rng.integers(20, 167, size=n)
    return ["".join(rng.choice(AA, int(k))) for k in lengths]


def fresh_bf16_copy(model):
    """A bf16 copy of a fair-esm model as `model.to(torch.bfloat16)` gives it fresh (no cached fp32 rotary tables)."""
    fair = copy.deepcopy(model).to(torch.bfloat16)
    for layer in fair.layers:
        layer.self_attn.rot_emb._seq_len_cached = None
    return fair


def n_tokens(seqs):
    return int(sum(min(len(s), 1022) + 2 for s in seqs))


@torch.no_grad()
def run_original(model, seqs, device, toks_per_batch=2048):
    """VirNucPro's extract: fair-esm batches by get_batch_indices(2048, extra_toks_per_seq=1), fp32,
    representations copied to the host, mean over [1, len + 1) per sequence."""
    alphabet = model.alphabet
    dataset = esm.FastaBatchedDataset([str(i) for i in range(len(seqs))], seqs)
    batches = dataset.get_batch_indices(toks_per_batch, extra_toks_per_seq=1)
    loader = torch.utils.data.DataLoader(
        dataset, collate_fn=alphabet.get_batch_converter(1022), batch_sampler=batches
    )
    out = {}
    for labels, strs, toks in loader:
        toks = toks.to(device, non_blocking=True)
        rep = model(toks, repr_layers=[model.num_layers], return_contacts=False)["representations"]
        rep = rep[model.num_layers].to("cpu")
        for i, label in enumerate(labels):
            out[label] = rep[i, 1 : min(1022, len(strs[i])) + 1].mean(0).clone()
    return len(batches)


@torch.no_grad()
def run_fair_padded(model, seqs, device, toks_per_batch):
    """fair-esm's own forward in bf16 over length-sorted padded batches, pooled on the device."""
    alphabet = model.alphabet
    dataset = esm.FastaBatchedDataset([str(i) for i in range(len(seqs))], seqs)
    batches = dataset.get_batch_indices(toks_per_batch, extra_toks_per_seq=2)
    convert = alphabet.get_batch_converter(1022)
    results = []
    for b in batches:
        _, strs, toks = convert([dataset[i] for i in b])
        rep = model(toks.to(device, non_blocking=True), repr_layers=[model.num_layers])["representations"]
        rep = rep[model.num_layers]
        mask = (toks != alphabet.padding_idx) & (toks != alphabet.cls_idx) & (toks != alphabet.eos_idx)
        mask = mask.to(device)[..., None].to(rep.dtype)
        results.append(((rep * mask).sum(1) / mask.sum(1)).float().cpu())
    return len(batches)


def run_packed(packed, tok, seqs, device, tokens_per_batch):
    ids = [str(i) for i in range(len(seqs))]
    embed_packed(ids, seqs, tok, packed.embed, packed.embed_dim, device, tokens_per_batch, "bench")
    return None


@torch.no_grad()
def gemm_ceiling(packed, device, tokens=65536, reps=3):
    """Tokens/s of the 4 bias GEMMs of all layers alone (cuBLAS, in the packed model's dtype): the bound for any forward."""
    x = torch.randn(tokens, packed.embed_dim, device=device, dtype=packed.dtype)
    h = torch.randn(tokens, 4 * packed.embed_dim, device=device, dtype=packed.dtype)

    def once():
        for block in packed.layers:
            block.qkv(x)
            block.attn_out(x)
            block.fc1(x)
            block.fc2(h)

    once()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        once()
    sync(device)
    return tokens * reps / (time.perf_counter() - t0)


def profile_batch(packed, tok, seqs, device, tokens_per_batch, log):
    """Kernel-time breakdown of one packed batch (after warm-up): where the time goes besides GEMMs."""
    from torch.profiler import ProfilerActivity, profile

    from virnucpro.models.packing import pack, plan_batches

    lengths = np.array([min(len(s), 1022) + 2 for s in seqs])
    index = plan_batches(lengths, tokens_per_batch)[0]
    batch = pack(tok([seqs[i] for i in index]), index).to(device)
    for _ in range(2):
        packed.embed(batch)
    sync(device)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        packed.embed(batch)
        sync(device)
    wall = time.perf_counter() - t0
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    key = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
    total = sum(getattr(e, key) for e in events)
    log(f"# profile: one batch of {batch.num_tokens} tokens, kernels {total / 1e3:.1f} ms of {wall * 1e3:.1f} ms wall")
    for e in sorted(events, key=lambda e: -getattr(e, key))[:14]:
        log(f"#   {getattr(e, key) / 1e3:8.2f} ms {100 * getattr(e, key) / total:5.1f}%  x{e.count:<5} {e.key[:90]}")


def measure(name, fn, seqs, warm, device, results, log):
    dt, peak, batches = timed(fn, seqs, warm, device)
    tokens = n_tokens(seqs)
    row = dict(name=name, seqs=len(seqs), tokens=tokens, seconds=dt, tps=tokens / dt,
               tflops=tokens / dt * GFLOP_PER_TOKEN / 1e3, peak=peak, batches=batches)
    results.append(row)
    log(f"{name:<44} {len(seqs):>6} seqs {tokens:>9} tok {dt:7.2f} s {tokens / dt / 1e3:8.1f} K tok/s "
        f"{row['tflops']:6.1f} TFLOP/s  peak {peak:6.2f} GiB")


def packed_variants(model, tok, seqs, warm, wl, name, dtype, variants, budgets, args, results, log, out_of_time):
    """The packed paths in one compute dtype: eager torch ops, torch.compile and the Triton kernels."""
    device, dim = torch.device(args.device), model.embed_dim
    fp8 = dict(float8=True) if name == "float8" else {}
    if "packed_eager" in variants and not out_of_time():
        packed = packed_from_fair_esm(model, device, dtype, compile=False, kernels=False, **fp8)
        for b in (16384, 65536):
            if not out_of_time():
                measure(f"{wl} packed {name} eager {b} tok/batch",
                        lambda s: run_packed(packed, tok, s, device, b), seqs, warm, device, results, log)
        packed = None  # frees the copy before the next variant
    for variant, label, options in (("packed_compiled", "compiled", dict(compile=True, kernels=False)),
                                    ("packed_triton", "triton kernels", dict(kernels=True))):
        if variant not in variants or out_of_time():
            continue
        packed = packed_from_fair_esm(model, device, dtype, **options, **fp8)
        chosen, check = packed.backend, seqs[:300]
        ids = [str(i) for i in range(len(check))]
        eager = packed_from_fair_esm(model, device, dtype, compile=False, kernels=False, **fp8)
        a = embed_packed(ids, check, tok, eager.embed, dim, device, 16384, "check")
        c = embed_packed(ids, check, tok, packed.embed, dim, device, 16384, "check")
        del eager
        if packed.produced_by is not chosen:
            log(f"# {label} failed to build and fell back to {packed.backend.name}: skipped")
            continue
        cos = (a * c).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(c, axis=1)
        log(f"# {label} vs eager packed {name}, {len(check)} proteins: min cosine {cos.min():.7f}")
        for b in budgets:
            if not out_of_time():
                measure(f"{wl} packed {name} {label} {b} tok/batch",
                        lambda s: run_packed(packed, tok, s, device, b), seqs, warm, device, results, log)
        if args.profile and wl == "fixed166":
            profile_batch(packed, tok, seqs, device, 65536, log)
        packed = None  # frees the copy before the next variant


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="3B", choices=sorted(ARCHS))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", help="also write the table here")
    ap.add_argument("--workloads", default="fixed166,uniform20-166")
    ap.add_argument("--n-packed", type=int, default=6000, help="sequences per packed / padded-bf16 run")
    ap.add_argument("--n-original", type=int, default=500, help="sequences per original-path run")
    ap.add_argument("--variants", default="original,fair_bf16,packed_eager,packed_compiled,packed_triton,gemm")
    ap.add_argument("--budgets", default="16384,32768,65536,131072", help="packed token budgets (compiled)")
    ap.add_argument("--profile", action="store_true", help="kernel breakdown of one batch per packed variant")
    ap.add_argument("--dtypes", default="float16,float8,bfloat16", help="compute dtypes of the packed variants")
    ap.add_argument("--time-limit", type=float, default=480, help="skip remaining variants after this many s")
    args = ap.parse_args()

    device = torch.device(args.device)
    dtypes = [(name, torch.float16 if name == "float8" else getattr(torch, name)) for name in args.dtypes.split(",")]
    variants = set(args.variants.split(","))
    budgets = [int(b) for b in args.budgets.split(",")]
    start = time.perf_counter()
    lines = []

    def log(msg):
        print(msg, flush=True)
        lines.append(msg)

    def out_of_time():
        return time.perf_counter() - start > args.time_limit

    layers, dim, heads = ARCHS[args.arch]
    torch.manual_seed(0)
    with torch.device(device):
        model = ESM2(num_layers=layers, embed_dim=dim, attention_heads=heads).eval()
        with torch.no_grad():
            model.embed_tokens.weight.normal_(0.0, 1.0)
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        log(f"# {p.name}, {p.multi_processor_count} SMs, torch {torch.__version__}, "
            f"ESM-2 {args.arch} ({layers} layers, {dim} wide, {heads} heads), random weights")
    tok = Esm2Tokenizer(esm.data.Alphabet.from_architecture("ESM-1b"))
    results = []
    for wl in args.workloads.split(","):
        seqs = workload("fixed166" if wl == "fixed166" else "uniform", args.n_packed)
        warm = seqs[:1500]
        log(f"## workload {wl}: {len(seqs)} proteins, {n_tokens(seqs)} tokens")
        if "original" in variants and not out_of_time():
            sub = seqs[: args.n_original]
            measure(f"{wl} original extract fp32 2048 tok/batch", lambda s: run_original(model, s, device),
                    sub, sub[:50], device, results, log)
        if "fair_bf16" in variants and not out_of_time():
            fair = fresh_bf16_copy(model)
            n = min(len(seqs), 3000)
            measure(f"{wl} fair-esm padded bf16 65536 tok/batch",
                    lambda s: run_fair_padded(fair, s, device, 65536), seqs[:n], warm[:400], device, results, log)
            del fair
        for name, dtype in dtypes:
            packed_variants(model, tok, seqs, warm, wl, name, dtype, variants, budgets, args, results, log,
                            out_of_time)
        if "ablations" in variants and not out_of_time():  # the Triton path with a 16-bit residual stream
            packed = packed_from_fair_esm(model, device, dtypes[0][1], kernels=True, residual_dtype=dtypes[0][1])
            measure(f"{wl} triton kernels, {dtypes[0][0]} residual stream, 65536 tok/batch",
                    lambda s: run_packed(packed, tok, s, device, 65536), seqs, warm, device, results, log)
            del packed
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if "gemm" in variants and device.type == "cuda":
        packed = packed_from_fair_esm(model, device, dtypes[0][1], compile=False, kernels=False)
        tps = gemm_ceiling(packed, device)
        log(f"# cuBLAS {dtypes[0][0]} bias GEMMs alone (36 layers, 65536-token M): {tps / 1e3:.1f} K tok/s "
            f"= {tps * GFLOP_PER_TOKEN / 1e3:.0f} TFLOP/s")
    log(f"# total {time.perf_counter() - start:.0f} s")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
