"""Multi-GPU scaling of the embedding stage through the workflow itself.

Builds the real architectures with random weights in their on-disk formats (ESM-2 3B as a fair-esm
checkpoint, DNABERT-S as a snapshot directory, an original-format 500_model.pth), generates coding
sequences (`--sequences`, 500 bp each), runs the front end and the shard checkpoint once (not
timed), then for each GPU count N times

    snakemake --cores all --resources gpu=N <every embeddings/esm2 and embeddings/dnabert_s shard>

from a clean embeddings directory. Every run uses the same shards (`--shards`, default 8), so each
does the same work and model loads; each job claims a GPU of its own (virnucpro.gpus). Prints and
writes a table of wall time and speed-up against N=1.

    python benchmarks/gpu_scaling.py --gpus 1,2,4 --sequences 40000 --out benchmarks/results/gpu_scaling_h200.md
    python benchmarks/gpu_scaling.py --tiny --device cpu --gpus 1 --sequences 300 --out /tmp/scaling.md  # smoke test
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.original_classifier import make_original_classifier  # noqa: E402
from tests.test_workflow import make_workdir  # noqa: E402
from tests.tiny_dnabert import build_tiny_dnabert  # noqa: E402
from tests.tiny_esm2 import build_tiny_esm2, save_fair_esm_checkpoint  # noqa: E402
from virnucpro.seqio import read_fasta  # noqa: E402

SENSE = ["GCT", "AAA", "TGG", "CAT", "GGC", "TTC", "ATG", "CCG", "GAC", "CAG", "ACC", "GTG"]


def build_models(directory, tiny):
    if tiny:
        esm = build_tiny_esm2(num_layers=2, embed_dim=64, heads=4)
        dna_dir, _, cfg = build_tiny_dnabert(directory / "DNABERT-S", hidden_size=96)
    else:
        esm = build_tiny_esm2(num_layers=36, embed_dim=2560, heads=40)
        dna_dir, _, cfg = build_tiny_dnabert(
            directory / "DNABERT-S", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, vocab_size=4096,
        )
    esm_path = save_fair_esm_checkpoint(esm, directory, name="esm2_t36_3B_UR50D" if not tiny else "esm2_tiny")
    classifier = directory / "500_model.pth"
    make_original_classifier(classifier, input_dim=cfg["hidden_size"] + esm.embed_dim)
    return {"models.esm2": str(esm_path), "models.dnabert_s": str(dna_dir), "models.classifier": str(classifier)}


def write_input(path, n, seed=5):
    """`n` stop-free coding sequences of 500 bp (one fragment each, at least one kept frame)."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(f">seq{i}\n{''.join(rng.choice(SENSE, 166))}AC\n")


def run(work, *args):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
           "--directory", str(work), *args]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"snakemake {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", default="1,2,4", help="GPU counts to time")
    ap.add_argument("--sequences", type=int, default=40000, help="500 bp coding sequences to generate")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--tiny", action="store_true", help="tiny models (smoke test)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        models = build_models(tmp / "models", args.tiny)
        write_input(tmp / "input.fa", args.sequences)
        print(f"# models and input built in {time.perf_counter() - t:.0f} s", flush=True)
        config = {"models.dir": str(tmp / "converted"), "embed.device": args.device}
        work = make_workdir(tmp / "work", sheet={"bench": tmp / "input.fa"}, **models, **config)
        run(work, "--cores", "all", "results/bench/prepare/frames.faa")
        tokens = sum(len(s) + 2 for _, s in read_fasta(work / "results" / "bench" / "prepare" / "frames.faa"))
        config_file = work / "config" / "config.yaml"
        config = yaml.safe_load(config_file.read_text())
        config["shards"]["tokens_per_shard"] = -(-tokens // args.shards)
        config_file.write_text(yaml.safe_dump(config))
        run(work, "--cores", "all", "results/bench/shards")
        shards = sorted((work / "results" / "bench" / "shards").glob("*.faa"))
        n_tokens = sum(len(s) + 2 for p in shards for _, s in read_fasta(p))
        targets = [f"results/bench/embeddings/{kind}/{p.stem}.h5" for p in shards
                   for kind in ("esm2", "dnabert_s")]
        rows = []
        for n in [int(g) for g in args.gpus.split(",")]:
            shutil.rmtree(work / "results" / "bench" / "embeddings", ignore_errors=True)
            seconds = run(work, *targets, "--cores", "all", "--resources", f"gpu={n}")
            rows.append((n, seconds))
            print(f"{n} GPU(s): {seconds:.1f} s", flush=True)
    base = rows[0][1] * rows[0][0]
    lines = [
        f"# embedding stage through the workflow: {len(shards)} shards, "
        f"{args.sequences} sequences, {n_tokens} ESM-2 tokens, {'tiny' if args.tiny else 'ESM-2 3B + DNABERT-S'} models, device {args.device}",
        "| GPUs | wall time (s) | ESM-2 tokens/s | speed-up |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {s:.1f} | {n_tokens / s:,.0f} | {base / s:.2f}x |" for n, s in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
