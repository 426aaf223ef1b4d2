"""Multi-GPU scaling of the whole workflow: 1, 2, 4 ... GPUs on one host, each run from an empty store.

Builds the real architectures with random weights in their on-disk formats and genome-like contigs
(`benchmarks/workflow_throughput.py`: `--samples` samples of `--mbp` Mbp each), then for each GPU count N
times, in a fresh working directory with an empty embedding store,

    snakemake --cores all --resources gpu=N

with shards of `--tokens-per-shard` ESM-2 tokens (the default gives each GPU several shards of 100 Mbp of
contigs). Each GPU job claims a GPU of its own (virnucpro.gpus). From the jobs' receipts (start and end
times, GPU, seconds per stage) it reports per run: wall time, speed-up against N = 1, the busy share of
each GPU (its jobs' time over the wall time), the shard imbalance (the busiest GPU's share of all job
time), and the time outside the embedding jobs (front end, plan, classification, summaries).

    python benchmarks/gpu_scaling.py --gpus 1,2,4 --out benchmarks/results/gpu_scaling_h200.md
    python benchmarks/gpu_scaling.py --tiny --device cpu --gpus 1 --samples 2 --mbp 0.02 \\
        --tokens-per-shard 2000 --out /tmp/scaling.md  # smoke test
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.workflow_throughput import (  # noqa: E402
    build_models,
    esm_tokens,
    snakemake,
    write_sample,
)
from tests.workflow_runs import make_workdir  # noqa: E402


def busy(work):
    """Per GPU, the seconds its embedding jobs ran; and the time the jobs ran in all."""
    per_gpu, first, last = {}, None, None
    for path in (work / "results" / "embedding" / "samples" / "done").glob("*.json"):
        note = json.loads(path.read_text())
        gpu = note.get("gpu") or note["device"]
        per_gpu[gpu] = per_gpu.get(gpu, 0.0) + note["finished"] - note["started"]
        first = note["started"] if first is None else min(first, note["started"])
        last = note["finished"] if last is None else max(last, note["finished"])
    return per_gpu, (last - first) if first is not None else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", default="1,2,4", help="GPU counts to time")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--mbp", type=float, default=12.5, help="Mbp of contigs per sample")
    ap.add_argument("--tokens-per-shard", type=int, default=1_500_000)
    ap.add_argument("--tiny", action="store_true", help="tiny models (smoke test)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        models = build_models(root / "models", args.tiny)
        sheet = {f"s{i}": root / "inputs" / f"s{i}.fa" for i in range(args.samples)}
        (root / "inputs").mkdir()
        for i, path in enumerate(sheet.values()):
            write_sample(path, args.mbp, seed=i)
        print(f"# models and inputs built in {time.perf_counter() - t:.0f} s", flush=True)
        for n in [int(g) for g in args.gpus.split(",")]:
            work = make_workdir(root / f"work{n}", sheet=sheet, **models, **{
                "models.dir": str(root / "converted"), "embed.device": args.device,
                "shards.tokens_per_shard": args.tokens_per_shard})
            seconds = snakemake(work, "--resources", f"gpu={n}")
            per_gpu, span = busy(work)
            tokens, _ = esm_tokens(work)
            rows.append((n, seconds, tokens, per_gpu, span))
            print(f"{n} GPU(s): {seconds:.1f} s, busy {per_gpu}", flush=True)
    base = rows[0][1]
    lines = [
        f"# whole workflow on {args.samples} x {args.mbp:g} Mbp, {rows[0][2]:,} ESM-2 tokens, shards of "
        f"{args.tokens_per_shard:,} tokens, {'tiny' if args.tiny else 'ESM-2 3B + DNABERT-S'} models, device {args.device}",
        "| GPUs | wall (s) | speed-up | ESM-2 tokens/s | busy share of each GPU | busiest GPU's share of job time "
        "| outside the embedding jobs (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, seconds, tokens, per_gpu, span in rows:
        shares = ", ".join(f"{g}: {100 * b / seconds:.0f} %" for g, b in sorted(per_gpu.items()))
        total = sum(per_gpu.values()) or 1.0
        lines.append(f"| {n} | {seconds:.1f} | {base / seconds:.2f}x | {tokens / seconds:,.0f} | {shares} "
                     f"| {100 * max(per_gpu.values(), default=0) / total:.0f} % | {seconds - span:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
