"""Peak memory and time of each CPU step of one sample as the sample grows: prepare, plan, classify,
summarize, overview, each run through the workflow's step harness (`harness.run_step`) in a fresh process,
whose last log line gives the step's peak resident memory (VmHWM) and time.

For each size a genome-like sample (contigs of 100 kb, as benchmarks/workflow_throughput.py writes them)
goes through `prepare`, then `plan` against an empty store; the embedding step is stood in for by
random embeddings of the real models' widths (ESM-2 3B: 2560, DNABERT-S: 768) written as store files
of the plan's shards (not timed); then `classify` with a classifier of the real input width (3328),
`summarize` and the run's `overview`. The embedding job's own memory is in the workflow benchmark (it
runs on a GPU; it holds one shard, whose size `shards.tokens_per_shard` bounds).

    python benchmarks/step_memory.py --sizes 10,30,100,300 --out benchmarks/results/step_memory.md
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from virnucpro.layout import OVERVIEW, SUMMARY  # noqa: E402

STEPS = ("prepare", "plan", "classify", "summarize", "overview")
DONE = re.compile(r"done in ([0-9.]+) s, peak memory ([0-9]+) MB")


def models(root):
    """Model notes: tiny encoders (the plan reads only their checksums) and a classifier of width 3328."""
    from tests.original_classifier import make_original_classifier
    from tests.tiny_dnabert import build_tiny_dnabert
    from tests.tiny_esm2 import build_tiny_esm2, save_fair_esm_checkpoint
    from virnucpro.steps.models import note_model

    files = root / "files"
    files.mkdir()
    sources = {"esm2": save_fair_esm_checkpoint(build_tiny_esm2(), files),
               "dnabert_s": build_tiny_dnabert(files / "DNABERT-S")[0], "classifier": files / "500_model.pth"}
    make_original_classifier(sources["classifier"], 3328)
    notes = {}
    for kind, source in sources.items():
        notes[kind] = root / "notes" / f"{kind}.json"
        notes[kind].parent.mkdir(exist_ok=True)
        note_model(kind, source, root / "models", notes[kind])
    return {k: str(v) for k, v in notes.items()}


def call(step):
    """The step's function and arguments, for the child process (`run`)."""
    from virnucpro.steps.classify import classify
    from virnucpro.steps.plan import plan
    from virnucpro.steps.prepare import prepare
    from virnucpro.steps.overview import overview
    from virnucpro.steps.summarize import summarize

    return {"prepare": prepare, "plan": plan, "classify": classify, "summarize": summarize,
            "overview": overview}[step]


def run(spec):
    """In the child: run one step through the workflow's harness."""
    from virnucpro.harness import run_step

    run_step(spec["log"], call(spec["step"]), *spec.get("args", []), threads=spec["threads"], **spec["kwargs"])


def step(name, log, threads=1, args=(), **kwargs):
    spec = {"step": name, "log": str(log), "threads": threads, "args": list(args), "kwargs": kwargs}
    code = f"import sys, json; sys.path.insert(0, {str(REPO)!r}); from benchmarks.step_memory import run; " \
           "run(json.loads(sys.argv[1]))"
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                          env={"OPENBLAS_NUM_THREADS": str(threads), "PATH": "/usr/bin:/bin"})
    if proc.returncode:
        sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
    seconds, mb = DONE.search(Path(log).read_text().splitlines()[-1]).groups()
    return float(seconds), int(mb)


def fake_embeddings(plan_dir):
    """Random float32 embeddings of the real widths for every frame the plan's shards hold."""
    from virnucpro.io.store import Namespace, write_store_file
    from virnucpro.steps.embed import read_shard

    plan = json.loads((plan_dir / "plan.json").read_text())
    rng = np.random.default_rng(0)
    for encoder, suffix, width in (("esm2", ".faa", 2560), ("dnabert_s", ".fna", 768)):
        namespace = Namespace.from_json(plan["namespaces"][encoder])
        for shard in plan["shards"]:
            keys = [r[0] for r in read_shard(plan_dir / "shards" / f"{shard['name']}{suffix}")]
            values = rng.standard_normal((len(keys), width), dtype=np.float32)
            write_store_file(plan["store"], namespace, shard["name"], keys, values, {"device": "benchmark"})


def measure(root, notes, mbp, threads):
    from benchmarks.workflow_throughput import write_sample

    d = root / f"{mbp:g}"
    d.mkdir()
    fasta = d / "s.fa"
    write_sample(fasta, mbp, seed=int(mbp))
    p, out = d / "prepare", d / "results"
    p.mkdir()
    out.mkdir()
    row = {}
    row["prepare"] = step("prepare", d / "prepare.log", 1, [str(fasta)], fragment_size=500,
                          out_dna=str(p / "f.fna"), out_protein=str(p / "f.faa"), manifest=str(p / "m.tsv"),
                          status=str(p / "status.json"))
    row["plan"] = step("plan", d / "plan.log", 1, [{"s": [str(p / "f.fna"), str(p / "f.faa")]}, str(d / "plan"),
                                                     str(d / "members")],
                       store=str(d / "store"), notes={k: notes[k] for k in ("esm2", "dnabert_s")}, device="cpu",
                       statuses={"s": str(p / "status.json")})
    fake_embeddings(d / "plan")
    row["classify"] = step("classify", d / "classify.log", threads, [str(d / "members" / "s.json")],
                           note=notes["classifier"], fragment_size=500, out=str(out / "predictions.tsv"))
    row["summarize"] = step("summarize", d / "summarize.log", 1, predictions=str(out / "predictions.tsv"),
                            manifest=str(p / "m.tsv"), fasta=str(fasta), fragment_size=500, sample="s",
                            outputs={name: str(out / o.path) for name, o in SUMMARY.items()})
    row["overview"] = step("overview", d / "overview.log", 1, samples=["s"], statuses=[str(p / "status.json")],
                           sequence_summaries=[str(out / SUMMARY["sequence_summary"].path)],
                           viral_regions=[str(out / SUMMARY["viral_regions"].path)], notes=list(notes.values()),
                           settings={}, outputs={name: str(out / "run" / o.path) for name, o in OVERVIEW.items()})
    frames = sum(1 for _ in open(p / "f.faa")) // 2
    return row, frames


def report(rows, threads):
    sizes = list(rows)
    lines = ["| step | " + " | ".join(f"{s:g} Mbp" for s in sizes) + " | growth per 100 Mbp |",
             "|---|" + "---|" * (len(sizes) + 1)]
    for name in STEPS:
        mb = [rows[s][0][name][1] for s in sizes]
        slope = np.polyfit(sizes, mb, 1)[0] * 100 if len(sizes) > 1 else float("nan")
        cells = " | ".join(f"{m:,} MB, {rows[s][0][name][0]:.1f} s" for m, s in zip(mb, sizes))
        lines.append(f"| {name}{f' ({threads} threads)' if name == 'classify' else ''} | {cells} | {slope:,.0f} MB |")
    frames = ", ".join(f"{s:g} Mbp: {rows[s][1]:,}" for s in sizes)
    return "\n".join([f"Peak resident memory (VmHWM) and time of each step, one sample; frames per size: {frames}.",
                      "", *lines]) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,30,100", help="sample sizes in Mbp, comma-separated")
    ap.add_argument("--threads", type=int, default=2, help="classify's threads (its BLAS)")
    ap.add_argument("--workdir", help="where to make the samples (default: the system's temporary folder)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        notes = models(root)
        for mbp in map(float, args.sizes.split(",")):
            t0 = time.perf_counter()
            rows[mbp] = measure(root, notes, mbp, args.threads)
            print(f"# {mbp:g} Mbp in {time.perf_counter() - t0:.0f} s: {rows[mbp]}", flush=True)
    text = report(rows, args.threads)
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
