"""DNABERT-S throughput: the original one-sequence-at-a-time float32 path against the packed path.

    python benchmarks/dnabert_throughput.py --out benchmarks/results/dnabert_throughput_h200.md
    python benchmarks/dnabert_throughput.py --quick --device cpu --out /tmp/dnabert_quick.md

Random weights with the DNABERT-S architecture (12 layers, 768 wide, 12 heads, gated MLP 3072, vocabulary
4096), written as a snapshot directory (config.json, a 4096-token BPE tokenizer.json trained here on
random DNA, model.safetensors) and read through `virnucpro.models.dnabert.load_dnabert`. Workloads: nucleotide
frames as `prepare` writes them for 300 and 500 bp fragments (lengths S-6 .. S, random bases).

- original: what VirNucPro ran: for each frame, tokenise it alone, run the model in float32 on that one
  unpadded sequence (matmul attention plus the ALiBi table, as the published model code computes it),
  mean over all tokens, copy to the host.
- packed: `tokenise all frames (encode_batch) + runner.embed_packed`, end to end, as `embed-dna` runs
  it, in bf16 on CUDA (float32 on CPU), for each ALiBi attention backend (the compiled variant of the
  recorded runs is no longer built: no job used it).
Tokens are the real ones ([CLS] and [SEP] included, no padding). Every variant is warmed up on a slice
of the workload first (compilation happens there). The ESM-2 comparison uses the ESM-2 packed rate
given by --esm2-tokens-per-s (the ESM-2 3B packed rate that benchmarks/esm2_throughput.py measures on
the same GPU) on the same frames' proteins ((bp - 1) // 3 residues + 2 tokens).
Needs only torch, numpy, tokenizers, safetensors and this repository.
"""

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from tests.tiny_dnabert import build_tiny_dnabert, random_dna, train_tokenizer  # noqa: E402

from benchmarks.timing import timed  # noqa: E402
from virnucpro.models.attention import _have_flash_attn  # noqa: E402
from virnucpro.models.dnabert import alibi_slopes, load_dnabert  # noqa: E402
from tests.packed_runs import embed_packed  # noqa: E402

ARCHS = {"full": (768, 12, 12, 3072, 4096), "tiny": (96, 2, 12, 160, 256)}  # D, layers, heads, I, vocab


def workload(size, n, seed):
    rng = np.random.default_rng(seed)
    return random_dna(n, rng.integers(size - 6, size + 1, size=n), seed=seed + 1)


# ------------------------------------------------------------------------------- the original path


class Original:
    """The published model's arithmetic, one unpadded sequence per forward, float32 (the baseline)."""

    def __init__(self, state, heads, device, alibi_size=512):
        self.w = {k.removeprefix("bert."): t.to(device, torch.float32) for k, t in state.items()}
        self.heads, self.device = heads, device
        self.layers = len({k.split(".")[2] for k in self.w if k.startswith("encoder.layer.")})
        self.slopes = torch.tensor(alibi_slopes(heads), device=device)
        self._build_alibi(alibi_size)

    def _build_alibi(self, size):  # the original keeps a (1, H, n, n) table and rebuilds it when too small
        pos = torch.arange(size, device=self.device)
        self.alibi = (-self.slopes[:, None, None] * (pos[None, :] - pos[:, None]).abs())[None]

    @torch.no_grad()
    def __call__(self, ids):
        w, h = self.w, self.heads
        length = ids.shape[1]
        if length > self.alibi.shape[-1]:
            self._build_alibi(length)
        d = w["embeddings.word_embeddings.weight"].shape[1]
        dh = d // h
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.token_type_embeddings.weight"][0]
        x = F.layer_norm(x, (d,), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], 1e-12)
        bias = self.alibi[:, :, :length, :length]
        for n in range(self.layers):
            p = f"encoder.layer.{n}"
            qkv = F.linear(x, w[f"{p}.attention.self.Wqkv.weight"], w[f"{p}.attention.self.Wqkv.bias"])
            qkv = qkv.view(1, length, 3, h, dh)
            q = qkv[:, :, 0].transpose(1, 2)  # (1, H, L, Dh)
            k = qkv[:, :, 1].permute(0, 2, 3, 1)  # (1, H, Dh, L)
            v = qkv[:, :, 2].transpose(1, 2)  # (1, H, L, Dh)
            probs = (q @ k / math.sqrt(dh) + bias).softmax(-1)
            a = (probs @ v).transpose(1, 2).reshape(1, length, d)
            a = F.linear(a, w[f"{p}.attention.output.dense.weight"], w[f"{p}.attention.output.dense.bias"])
            x = F.layer_norm(a + x, (d,), w[f"{p}.attention.output.LayerNorm.weight"],
                             w[f"{p}.attention.output.LayerNorm.bias"], 1e-12)
            g = F.linear(x, w[f"{p}.mlp.gated_layers.weight"])
            inter = g.shape[-1] // 2
            g = F.gelu(g[..., :inter]) * g[..., inter:]
            g = F.linear(g, w[f"{p}.mlp.wo.weight"], w[f"{p}.mlp.wo.bias"])
            x = F.layer_norm(g + x, (d,), w[f"{p}.mlp.layernorm.weight"], w[f"{p}.mlp.layernorm.bias"], 1e-12)
        return x


def run_original(original, tokenizer, seqs, device):
    out = []
    for s in seqs:
        ids = torch.tensor([tokenizer.tokenizer.encode(s.upper()).ids], device=device)
        out.append(original(ids)[0].mean(0).cpu())
    return out


def run_packed(model, tokenizer, seqs, device, tokens_per_batch):
    tokens = tokenizer(seqs)
    ids = [str(i) for i in range(len(seqs))]
    return embed_packed(ids, tokens, lambda t: t, model.embed, model.config.hidden_size, device,
                        tokens_per_batch, "bench", lengths=np.array([len(t) for t in tokens]))


# ------------------------------------------------------------------------------- measuring


def measure(name, fn, seqs, warm, device, n_tokens, log, results):
    dt, peak, _ = timed(fn, seqs, warm, device)
    row = dict(name=name, frames=len(seqs), tokens=n_tokens, seconds=dt, tps=n_tokens / dt,
               fps=len(seqs) / dt, peak=peak)
    results.append(row)
    log(f"{name:<48} {len(seqs):>7} frames {n_tokens:>9} tok {dt:8.2f} s {n_tokens / dt / 1e3:9.1f} K tok/s "
        f"{len(seqs) / dt:9.1f} frames/s  peak {peak:5.2f} GiB")
    return row


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="write the table here (as well as printing it)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--arch", default="full", choices=sorted(ARCHS))
    ap.add_argument("--sizes", default="300,500", help="fragment sizes (bp) of the frame workloads")
    ap.add_argument("--n-packed", type=int, default=50000, help="frames per packed run")
    ap.add_argument("--n-original", type=int, default=1000, help="frames per original-path run")
    ap.add_argument("--backends", default=None, help="ALiBi attention backends (default: all available)")
    ap.add_argument("--budgets", default="65536", help="packed token budgets")
    ap.add_argument("--esm2-tokens-per-s", type=float, default=95500.0, help="ESM-2 3B packed rate, same GPU")
    ap.add_argument("--time-limit", type=float, default=480, help="skip remaining variants after this many s")
    ap.add_argument("--quick", action="store_true", help="a few frames of each kind: a smoke test (CPU)")
    args = ap.parse_args()
    if args.quick:
        args.n_packed, args.n_original = 48, 8
        args.budgets = "8192"
    return args


def load_variants(snapshot, args, device, dtype):
    """{(backend, 'eager'): (model, tokenizer, path)} for the requested attention backends."""
    cuda = device.type == "cuda"
    backends = (args.backends.split(",") if args.backends else
                (["padded_sdpa"] + (["flash_attn"] if _have_flash_attn() else []) if cuda
                 else ["reference", "padded_sdpa"]))
    return {(backend, "eager"): load_dnabert(snapshot, device, dtype, attention=backend) for backend in backends}


def build_snapshot(directory, arch, log):
    """A random-weight snapshot of architecture `arch` in `directory`: (snapshot dir, state dict)."""
    t0 = time.perf_counter()
    d, layers, heads, inter, vocab = ARCHS[arch]
    tok = train_tokenizer(vocab, seed=0, n_seqs=2000 if vocab > 1000 else 400)
    snapshot, state, _ = build_tiny_dnabert(Path(directory) / "DNABERT-S", d, layers, heads, inter, vocab,
                                            tokenizer=tok, std=0.02 if arch == "full" else None)
    log(f"# DNABERT-S architecture '{arch}': {layers} layers, {d} wide, {heads} heads, MLP {inter}, "
        f"vocabulary {tok.get_vocab_size()} (random weights; snapshot built in "
        f"{time.perf_counter() - t0:.1f} s)")
    return snapshot, state


def run_size(size, args, models, original, device, dtype, out_of_time, log):
    """Time the original path and every packed variant on `size` bp frames; (size, base, best, esm_s)."""
    tokenizer = next(iter(models.values()))[1]
    seqs = workload(size, args.n_packed, seed=size)
    t0 = time.perf_counter()
    tokens = tokenizer(seqs)
    tok_s = time.perf_counter() - t0
    lengths = np.array([len(t) for t in tokens])
    n_tok = int(lengths.sum())
    log(f"## {size} bp frames: {len(seqs)} frames, {n_tok} tokens ({lengths.mean():.1f} per frame, "
        f"max {lengths.max()}); tokenising alone {len(seqs) / tok_s:.0f} frames/s on the CPU")
    results = []
    orig_seqs = seqs[: args.n_original]
    base = measure(f"{size}bp original fp32, one frame at a time",
                   lambda s: run_original(original, tokenizer, s, device), orig_seqs, orig_seqs[:4], device,
                   int(lengths[: args.n_original].sum()), log, results)
    for (backend, mode), (model, _, _) in models.items():
        for budget in [int(b) for b in args.budgets.split(",")]:
            if out_of_time():
                log(f"# time limit reached: skipping {backend} {mode} {budget}")
                continue
            name = f"{size}bp packed {str(dtype).removeprefix('torch.')} {backend} {mode} {budget}"
            measure(name, lambda s, m=model, b=budget: run_packed(m, tokenizer, s, device, b),
                    seqs, seqs[: max(64, len(seqs) // 20)], device, n_tok, log, results)
    best = max(results[1:], key=lambda r: r["tps"])
    protein_tokens = sum((len(s) - 1) // 3 + 2 for s in seqs)
    esm_s = protein_tokens / args.esm2_tokens_per_s
    log(f"# fastest: {best['name']}: {best['tps'] / base['tps']:.1f}x the original's tokens/s; "
        f"{best['seconds']:.2f} s vs ESM-2 at {args.esm2_tokens_per_s / 1e3:.1f} K tok/s on the same "
        f"frames' {protein_tokens} protein tokens ({esm_s:.2f} s): DNABERT-S = "
        f"{100 * best['seconds'] / esm_s:.1f} % of ESM-2"
        + ("" if device.type == "cuda" else " (ESM-2's rate is a GPU's)"))
    return size, base, best, esm_s


def log_summary(summary, log):
    log("")
    log("| frames | path | tokens/s | frames/s | vs original | % of ESM-2 time |")
    log("|---|---|---|---|---|---|")
    for size, base, best, esm_s in summary:
        for row in (base, best):  # time for all the workload's frames at this row's rate, vs ESM-2's
            share = 100 * best["frames"] / row["fps"] / esm_s
            log(f"| {size} bp | {row['name'].split(' ', 1)[1]} | {row['tps'] / 1e3:.1f} K | "
                f"{row['fps']:.0f} | {row['tps'] / base['tps']:.1f}x | {share:.1f} % |")


def main():
    args = parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = False  # the original ran true float32
    lines = []

    def log(msg):
        print(msg, flush=True)
        lines.append(msg)

    start = time.perf_counter()
    if device.type == "cuda":
        log(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, flash-attn "
            f"{'yes' if _have_flash_attn() else 'no'}")
    else:
        log(f"# CPU ({torch.get_num_threads()} threads), torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        snapshot, state = build_snapshot(tmp, args.arch, log)
        models = load_variants(snapshot, args, device, dtype)
        original = Original(state, ARCHS[args.arch][2], device)
        del state
        summary = [run_size(int(size), args, models, original, device, dtype,
                            lambda: time.perf_counter() - start > args.time_limit, log)
                   for size in args.sizes.split(",")]
        log_summary(summary, log)
    log(f"# total {time.perf_counter() - start:.0f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
