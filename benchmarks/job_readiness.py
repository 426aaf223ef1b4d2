"""How long an embedding job takes to be ready: each stage of loading ESM-2 3B and DNABERT-S, in fresh processes.

Builds a converted ESM-2 3B file (the packed float16 safetensors layout the workflow's models step writes,
random weights, 5.7 GB, in a `converted/` folder as the models step keeps it) and a DNABERT-S snapshot
(float32 `pytorch_model.bin`), then starts a fresh Python process per trial that runs the GPU job's own
loading code (`steps.embed._esm2_task`, `_dnabert_task`) on a shard of 26,000 frames, its stages timed
by wrappers: the tokeniser, token counts, the file onto the GPU, the model, the warm-up batch (kernel
builds or loads). Then the first and second full batches (a first batch slower than the second would
be building kernels), and safetensors' own `load_file` for comparison. The first trial starts with an
empty kernel cache (`converted/kernels`, as on a new models folder), the others find it filled.

    python benchmarks/job_readiness.py --out benchmarks/results/job_readiness_h200.md
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FRAMES = 26_000  # proteins and nucleotide slices of one shard (about 20 Mbp of genome)


def build(root):
    """(converted ESM-2 file, its source sha256, DNABERT-S folder) under `root`."""
    import torch

    from tests.tiny_dnabert import build_tiny_dnabert, train_tokenizer
    from virnucpro.io.checksums import write_record
    from virnucpro.io.tensors import save_safetensors
    from virnucpro.models import esm2

    layers, d, heads = 36, 2560, 40
    gen = torch.Generator(device="cuda").manual_seed(0)

    def randn(*shape, std=0.02):
        return (torch.randn(*shape, generator=gen, device="cuda") * std).half().cpu()

    state = {"embed_tokens.weight": randn(33, d)}
    for i in range(layers):
        at = f"layers.{i}."
        for name, (n, k) in {"qkv": (3 * d, d), "attn_out": (d, d), "fc1": (4 * d, d), "fc2": (d, 4 * d)}.items():
            state[f"{at}{name}.weight"], state[f"{at}{name}.bias"] = randn(n, k), randn(n)
        for name in ("attn_norm", "mlp_norm"):
            state[f"{at}{name}.weight"], state[f"{at}{name}.bias"] = 1 + randn(d), randn(d)
    state["final_norm.weight"], state["final_norm.bias"] = 1 + randn(d), randn(d)
    state["rotary.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64))
    config = esm2.Esm2Config(layers, d, heads, True, 32, 1e-5)
    sha = "0" * 64
    (root / "converted").mkdir()
    path = root / "converted" / f"esm2_t36_3B_UR50D-{sha[:16]}.safetensors"
    save_safetensors(state, path, {"format": esm2.FORMAT, "alphabet": esm2.ALPHABET, "dtype": "float16",
                                   "source": "esm2_t36_3B_UR50D.pt", "source_sha256": sha, **config.metadata()})
    write_record(path, verified="conversion (benchmark)")
    dna, _, _ = build_tiny_dnabert(root / "DNABERT-S", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                   intermediate_size=3072, vocab_size=4096, tokenizer=train_tokenizer(4096, n_seqs=2000),
                                   std=0.02, formats=("bin",))
    return path, sha, dna


def shard(n, seed=0):
    """`n` frames as a shard holds them: proteins of 20-166 residues and their nucleotide slices."""
    import numpy as np

    rng = np.random.default_rng(seed)
    amino, bases = np.array(list("ACDEFGHIKLMNPQRSTVWY")), np.array(list("ACGT"))
    lengths = rng.integers(20, 167, n)
    proteins = ["".join(rng.choice(amino, k)) for k in lengths]
    nucleotides = ["".join(rng.choice(bases, 3 * k + 1)) for k in lengths]
    return proteins, nucleotides


CHILD = r"""
import json, sys, time
T = {}
t0 = time.perf_counter()
import torch
T["import torch"] = round(time.perf_counter() - t0, 3)
args = json.loads(sys.argv[1])
from virnucpro.steps import embed as E
from virnucpro.models import dnabert, esm2
from tests.packed_runs import embed_packed
from virnucpro.io import tensors


def timed(owner, name, label):
    # wrap owner.name so that each call adds its seconds (the device synchronised) to T[label]
    fn = getattr(owner, name)
    def wrapper(*a, **k):
        t = time.perf_counter()
        out = fn(*a, **k)
        if torch.cuda.is_initialized():
            torch.cuda.synchronize()
        T[label] = round(T.get(label, 0) + time.perf_counter() - t, 3)
        return out
    setattr(owner, name, wrapper)


device = E.resolve_device("cuda")
t = time.perf_counter(); torch.zeros(1, device=device); torch.cuda.synchronize()
T["CUDA start"] = round(time.perf_counter() - t, 3)
frames = json.loads(open(args["frames"]).read())
proteins = [(str(i), f"s:{i}", p) for i, p in enumerate(frames["proteins"])]
nucleotides = [(str(i), f"s:{i}", n) for i, n in enumerate(frames["nucleotides"])]
timed(esm2, "tokenizer", "ESM-2 tokeniser (imports fair-esm)")
timed(esm2.Esm2Tokenizer, "lengths", "token counts of the shard")
timed(tensors, "load_safetensors", "the converted file onto the GPU")
timed(esm2, "load_converted", "ESM-2 model built (file included)")
timed(E, "_warm_up", "warm-up batches (kernels)")
seconds = {}
note = {"kind": "esm2", "source": "esm2_t36_3B_UR50D.pt", "checksums": {"x": args["sha"]}, "file": args["esm2"]}
task, model = E._esm2_task(proteins, note, device, 65536, seconds)
T["ESM-2 ready (the job's load_esm2)"] = seconds["load_esm2"]
ids, seqs = [r[1] for r in proteins[:600]], [r[2] for r in proteins[:600]]
for label in ("first full batch", "second full batch"):
    t = time.perf_counter()
    embed_packed(ids, seqs, task.tokenize, model.embed, model.embed_dim, device, 65536, label)
    torch.cuda.synchronize(); T[label] = round(time.perf_counter() - t, 3)
del task, model; torch.cuda.empty_cache()
from safetensors.torch import load_file
t = time.perf_counter(); state = load_file(args["esm2"], device="cuda"); torch.cuda.synchronize()
T["for comparison: safetensors' load_file onto the GPU"] = round(time.perf_counter() - t, 3)
del state; torch.cuda.empty_cache()
T["ESM-2 warm-up batch (kernels)"] = T.pop("warm-up batches (kernels)")
E._dnabert_task(nucleotides, {"file": args["dnabert"]}, device, 65536, seconds)
T["DNABERT-S warm-up batch"] = T.pop("warm-up batches (kernels)")
T["DNABERT-S ready (the job's load_dnabert_s)"] = seconds["load_dnabert_s"]
T["process until here"] = round(time.perf_counter() - t0, 3)
print(json.dumps(T))
"""


def trial(args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(proc.stderr[-4000:])
    times = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"process": round(wall, 2), **times}


def table(rows):
    stages = list(dict.fromkeys(k for _, r in rows for k in r))
    lines = ["| stage (s) | " + " | ".join(name for name, _ in rows) + " |", "|---|" + "---|" * len(rows)]
    lines += [f"| {s} | " + " | ".join(f"{r[s]:.2f}" if s in r else "-" for _, r in rows) + " |" for s in stages]
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--trials", type=int, default=2, help="trials with the kernel cache filled")
    args = ap.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        path, sha, dna = build(root)
        proteins, nucleotides = shard(FRAMES)
        (root / "frames.json").write_text(json.dumps({"proteins": proteins, "nucleotides": nucleotides}))
        print(f"# built in {time.perf_counter() - t0:.0f} s", flush=True)
        child = {"esm2": str(path), "sha": sha, "dnabert": str(dna), "frames": str(root / "frames.json")}
        rows = [("empty kernel cache", trial(child))]  # the job's cache: {converted folder}/kernels
        print(rows[-1], flush=True)
        for i in range(args.trials):
            rows.append((f"cache filled, trial {i + 1}", trial(child)))
            print(rows[-1], flush=True)
    text = "\n".join([f"# Embedding job readiness, {torch.cuda.get_device_name()}, {FRAMES:,} frames per shard", "",
                      *table(rows)]) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
