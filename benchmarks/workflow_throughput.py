"""Whole-workflow throughput, models step through summarize, against the packed kernel's rate in the same run.

Builds the real architectures with random weights in their real on-disk formats and dtypes (ESM-2 3B as a
float16 fair-esm checkpoint of 5.7 GB, DNABERT-S as a snapshot directory with a float32
`pytorch_model.bin`, an original-format `500_model.pth`), writes genome-like contigs (genes of 1.2-1.8 kb
on both strands between 50-200 bp spacers: about 0.6 kept frames per 500 bp fragment, as real genomes
give), converts the models once into a models folder the runs share, as an installation does (timed
apart: the one-time cost of a new model; `--models-dir` keeps models and conversions for a later call),
and for each input times `snakemake --cores all` in a fresh working directory with an empty embedding
store, from the models step (its notes, checked against the converted files) through summarize and the
overview:

    1 x 20 Mbp, 8 x 2.5 Mbp, 100 x 0.2 Mbp (and 1 x 100 Mbp, in a call of its own)

each in every precision of `--precisions` (`embed.precision`; float8 runs include the float8 check, whose
span is reported apart), then once more with nothing changed (nothing runs).

Then the last input again with one more sample added: the plan embeds only the new sample's frames, and
the jobs that ran are listed. The kernel's rate is the packed ESM-2 path alone (`runner.embed_packed` on
the converted model, the frames of the first input, warm) in the same process. Reported: wall time, Mbp/h,
ESM-2 tokens/s over the run and its share of the kernel rate, from the jobs' receipts each job's seconds
until ESM-2 and DNABERT-S are ready and the seconds of embedding and writing, from snakemake's log the
span of every rule (start of its first job to end of its last), and from every job's log its peak memory
and time (`harness.run_step`), so that what limits each figure is measured.

    python benchmarks/workflow_throughput.py --models-dir /tmp/m --out benchmarks/results/workflow_throughput_h200.md
    python benchmarks/workflow_throughput.py --models-dir /tmp/m --inputs 1x100 --no-added-sample --out ...
    python benchmarks/workflow_throughput.py --tiny --inputs 1x0.05,3x0.01 --out /tmp/workflow.md  # CPU smoke test
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.original_classifier import make_original_classifier  # noqa: E402
from tests.tiny_dnabert import build_tiny_dnabert, train_tokenizer  # noqa: E402
from tests.tiny_esm2 import build_tiny_esm2, save_fair_esm_checkpoint  # noqa: E402
from tests.workflow_runs import make_workdir  # noqa: E402
from virnucpro.steps.models import ensure_converted  # noqa: E402
from virnucpro.io.seqio import read_fasta  # noqa: E402
from virnucpro.models import esm2  # noqa: E402
from virnucpro.defaults import ESM2_TOKENS_PER_BATCH  # noqa: E402
from virnucpro.models.namespaces import ESM2_TRUNCATION  # noqa: E402
from tests.packed_runs import embed_packed  # noqa: E402

INPUTS = "1x20,8x2.5,100x0.2"  # samples x Mbp each (1x100 in a call of its own: a call may run 10 minutes)
CONTIG_BP = 100_000
STOPS = ("TAA", "TAG", "TGA")
SENSE = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in STOPS]
COMPLEMENT = str.maketrans("ACGT", "TGCA")


def build_models(directory, tiny):
    """Model files in their real formats; returns the config overrides naming them.

    Reuses those that an earlier run built in `directory` (named in its `models.json`)."""
    listing = directory / "models.json"
    if listing.exists():
        return json.loads(listing.read_text())
    directory.mkdir(parents=True, exist_ok=True)
    if tiny:
        esm = build_tiny_esm2(num_layers=2, embed_dim=128, heads=2)
        dna_dir, _, cfg = build_tiny_dnabert(directory / "DNABERT-S", hidden_size=96, formats=("bin",))
    else:
        esm = build_tiny_esm2(num_layers=36, embed_dim=2560, heads=40)
        dna_dir, _, cfg = build_tiny_dnabert(
            directory / "DNABERT-S", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, vocab_size=4096, tokenizer=train_tokenizer(4096, n_seqs=2000), std=0.02,
            formats=("bin",),
        )
    esm_path = save_fair_esm_checkpoint(esm, directory, name="esm2_t36_3B_UR50D" if not tiny else "esm2_tiny")
    del esm
    classifier = directory / "500_model.pth"
    make_original_classifier(classifier, input_dim=cfg["hidden_size"] + (128 if tiny else 2560))
    models = {"models.esm2": str(esm_path), "models.dnabert_s": str(dna_dir), "models.classifier": str(classifier)}
    listing.write_text(json.dumps(models))
    return models


def genome_like(n_bp, rng):
    """Random genes (ATG, sense codons, a stop) of 1.2-1.8 kb on either strand between random spacers."""
    parts, total = [], 0
    while total < n_bp:
        spacer = "".join(rng.choice(list("ACGT"), int(rng.integers(50, 201))))
        gene = "ATG" + "".join(rng.choice(SENSE, int(rng.integers(400, 601)) - 2)) + str(rng.choice(STOPS))
        if rng.random() < 0.5:
            gene = gene.translate(COMPLEMENT)[::-1]
        parts += [spacer, gene]
        total += len(spacer) + len(gene)
    return "".join(parts)[:n_bp]


def write_sample(path, mbp, seed):
    rng = np.random.default_rng(seed)
    n_bp = int(mbp * 1e6)
    with open(path, "w") as fh:
        for start in range(0, n_bp, CONTIG_BP):
            seq = genome_like(min(CONTIG_BP, n_bp - start), rng)
            fh.write(f">{path.stem}_contig{start // CONTIG_BP}\n")
            fh.writelines(seq[i : i + 80] + "\n" for i in range(0, len(seq), 80))


def snakemake(work, *args):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
           "--directory", str(work), "--cores", "all", *args]
    t0 = time.perf_counter()
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # carried packages kept
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path})
    if proc.returncode != 0:
        sys.exit(f"snakemake failed in {work}:\n{proc.stderr[-4000:]}")
    return time.perf_counter() - t0


def esm2_tokens(protein):
    """ESM-2 tokens of one frame, as the plan counts them: its residues up to the truncation, <cls>, <eos>."""
    return min(len(protein), ESM2_TRUNCATION) + 2


def esm_tokens(work):
    """ESM-2 tokens of every frame of every sample (as the plan counts them), and the frames."""
    tokens, frames = 0, 0
    for faa in (work / "results").glob("*/prepare/frames.faa"):
        for _, seq in read_fasta(faa):
            tokens += esm2_tokens(seq)
            frames += 1
    return tokens, frames


def receipts(work):
    """Sums of the embedding jobs' seconds per stage (and, per stage, each job's seconds under
    `per_job`), their count and the frames they embedded."""
    notes = [json.loads(p.read_text()) for p in (work / "results" / "embedding" / "samples" / "done").glob("*.json")]
    seconds, per_job = {}, {}
    for n in notes:
        for stage, s in n["seconds"].items():
            seconds[stage] = seconds.get(stage, 0.0) + s
            per_job.setdefault(stage, []).append(s)
    embedded = sum(n["frames"]["esm2"] for n in notes)
    return {**seconds, "per_job": per_job}, len(notes), embedded


def install(root, installed, models, device, precision):
    """`snakemake models` once, into the models folder the runs share (`installed`): the one-time
    conversions and notes of new models (ESM-2's float8 file too, for float8). Seconds (0 when a former
    call installed them there already, with an empty kernel cache then)."""
    work = make_workdir(root / "install", **models, **{"models.dir": str(installed), "embed.device": device,
                                                       "embed.precision": precision})
    return snakemake(work, "models")


def rule_spans(work):
    """{rule: (jobs, first start, last end)} in seconds since snakemake started, from its log (the log's
    timestamps have whole seconds)."""
    text = sorted((work / ".snakemake" / "log").glob("*.snakemake.log"))[-1].read_text()
    started = datetime.datetime.strptime(re.search(r"Date: (\S+ \S+)", text).group(1), "%Y-%m-%d %H:%M:%S")
    begin, end, rule, now, pending = {}, {}, {}, None, None
    for line in map(str.strip, text.splitlines()):
        if m := re.fullmatch(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]", line):
            now = (datetime.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y") - started).total_seconds()
        elif m := re.fullmatch(r"(?:local)?(?:rule|checkpoint) (\w+):", line):
            pending = m.group(1)
        elif pending and (m := re.fullmatch(r"jobid: (\d+)", line)):
            begin[m.group(1)], rule[m.group(1)], pending = now, pending, None
        elif m := re.match(r"Finished jobid: (\d+)", line):
            end[m.group(1)] = now
    spans = {}
    for job, name in rule.items():
        n, a, b = spans.get(name, (0, begin[job], end.get(job, begin[job])))
        spans[name] = (n + 1, min(a, begin[job]), max(b, end.get(job, begin[job])))
    return spans


def run_input(root, installed, models, n_samples, mbp, device, tokens_per_shard, precision="float16"):
    work = root / f"work_{n_samples}x{mbp}_{precision}"
    inputs = root / f"inputs_{n_samples}x{mbp}"
    sheet = {f"s{i}": inputs / f"s{i}.fa" for i in range(n_samples)}
    if not inputs.is_dir():
        inputs.mkdir()
        for i, path in enumerate(sheet.values()):
            write_sample(path, mbp, seed=1000 * n_samples + i)
    config = {"models.dir": str(installed), "embed.device": device, "shards.tokens_per_shard": tokens_per_shard,
              "embed.precision": precision}
    make_workdir(work, sheet=sheet, **models, **config)
    seconds = snakemake(work)
    decision = work / "results" / "embedding" / "samples" / "float8_check.json"
    float8 = json.loads(decision.read_text())["reason"] if decision.is_file() else None
    tokens, frames = esm_tokens(work)
    stages, jobs, embedded = receipts(work)
    spans = rule_spans(work)
    again = snakemake(work)  # nothing changed: nothing runs
    return work, sheet, {"input": f"{n_samples} x {mbp:g} Mbp, {precision}", "mbp": n_samples * mbp, "wall_s": seconds,
                         "tokens": tokens, "frames": frames, "jobs": jobs, "embedded": embedded, "stages": stages,
                         "spans": spans, "float8": float8, "steps": step_peaks(work), "again_s": again}


def add_a_sample(work, sheet, mbp):
    path = Path(next(iter(sheet.values()))).parent / "added.fa"
    write_sample(path, mbp, seed=999_999)
    with open(work / "config" / "samples.tsv", "a") as fh:
        fh.write(f"added\t{path}\n")
    seconds = snakemake(work)
    plan = json.loads((work / "results" / "embedding" / "samples" / "plan" / "plan.json").read_text())
    added = sum(1 for _ in read_fasta(work / "results" / "added" / "prepare" / "frames.faa"))
    jobs = {rule: n for rule, (n, _, _) in rule_spans(work).items() if rule != "all"}
    return {"wall_s": seconds, "embedded": plan["frames_to_embed"], "added_frames": added,
            "distinct_frames": plan["distinct_frames"], "jobs": jobs}


DONE = re.compile(r"virnucpro INFO (\w+): done in ([0-9.]+) s, peak memory ([0-9]+) MB")


def step_peaks(work):
    """{step: (jobs, largest peak memory in MB, seconds summed)} from the last line of every job's log
    (`harness.run_step`)."""
    peaks = {}
    for log in (work / "results").glob("**/logs/**/*.log"):
        lines = log.read_text().splitlines()
        if lines and (m := DONE.search(lines[-1])):
            n, mb, s = peaks.get(m.group(1), (0, 0, 0.0))
            peaks[m.group(1)] = (n + 1, max(mb, int(m.group(3))), s + float(m.group(2)))
    return peaks


def kernel_rate(work, installed, models, device, n_frames):
    """Tokens/s of the packed ESM-2 path alone on (the first `n_frames` of) the first input's frames, warm,
    from the converted model as the workflow loads it."""
    device = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    converted, digest = ensure_converted("esm2", models["models.esm2"], installed)
    model = esm2.load_converted(converted, digest, device)
    seqs = [s for faa in sorted((work / "results").glob("*/prepare/frames.faa")) for _, s in read_fasta(faa)]
    seqs = seqs[:n_frames]
    tok, budget = esm2.tokenizer(), ESM2_TOKENS_PER_BATCH[device.type]
    ids = [str(i) for i in range(len(seqs))]
    embed_packed(ids[:2000], seqs[:2000], tok, model.embed, model.embed_dim, device, budget, "warm-up")
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    embed_packed(ids, seqs, tok, model.embed, model.embed_dim, device, budget, "kernel")
    if device.type == "cuda":
        torch.cuda.synchronize()
    return sum(map(esm2_tokens, seqs)) / (time.perf_counter() - t0), str(device), model.attention_backend


def span_table(rows):
    """Per input, each rule's jobs and span (s from snakemake's start), in the order the rules started."""
    lines = ["| input | " + " | ".join(["wall (s)", "rule: jobs, span from start (s)"]) + " |", "|---|---|---|"]
    for r in rows:
        order = sorted(r["spans"].items(), key=lambda kv: (kv[1][1], kv[1][2]))
        cells = ", ".join(f"{name} {n}x {a:.0f}-{b:.0f}" for name, (n, a, b) in order if name != "all")
        lines.append(f"| {r['input']} | {r['wall_s']:.1f} | {cells} |")
    return lines


def step_table(rows):
    """Per input, each step's jobs, largest peak memory and seconds summed over its jobs (the steps' logs)."""
    lines = ["| input | step: jobs, largest peak memory, seconds summed over the jobs |", "|---|---|"]
    for r in rows:
        cells = ", ".join(f"{name} {n}x {mb:,} MB {sec:.1f} s" for name, (n, mb, sec) in r["steps"].items())
        lines.append(f"| {r['input']} | {cells} |")
    return lines


def _per_job(st, stage):
    return ", ".join(f"{s:.1f}" for s in st["per_job"].get(stage, [])) or "-"


def report(rows, added, rate, where, tiny, installed):
    lines = [
        f"# Whole workflow, {'tiny models' if tiny else 'ESM-2 3B + DNABERT-S (random weights, real formats)'}, "
        f"{where}; packed ESM-2 kernel alone: {rate:,.0f} tokens/s",
        "",
        "| input | frames | ESM-2 tokens | wall (s) | Mbp/h | ESM-2 tokens/s over the run | share of the kernel rate "
        "| embed jobs | ESM-2 ready, per job (s) | DNABERT-S ready, per job (s) | embedding (s) | writing (s) "
        "| rerun, nothing changed (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        st = r["stages"]
        over = r["tokens"] / r["wall_s"]
        esm = _per_job(st, "load_esm2_float8") if "load_esm2_float8" in st else _per_job(st, "load_esm2")
        lines.append(
            f"| {r['input']} | {r['frames']:,} | {r['tokens']:,} | {r['wall_s']:.1f} | {r['mbp'] / r['wall_s'] * 3600:,.0f} "
            f"| {over:,.0f} | {100 * over / rate:.0f} % | {r['jobs']} | {esm} | {_per_job(st, 'load_dnabert_s')} "
            f"| {st.get('embed', 0):.1f} | {st.get('write', 0):.1f} | {r['again_s']:.1f} |"
        )
    lines += ["", "Where the wall time went (snakemake's log, whole seconds):", "", *span_table(rows)]
    lines += ["", "Each step's peak memory (VmHWM of its process; the embedding job's is its host side) and time:",
              "", *step_table(rows)]
    for r in rows:
        if "check_float8" in r["spans"]:
            n, a, b = r["spans"]["check_float8"]
            lines.append(f"\nThe float8 check of {r['input']}: {b - a:.0f} s of {r['wall_s']:.1f} s "
                         f"({100 * (b - a) / r['wall_s']:.1f} %), decision: {r['float8']}.")
    lines += ["", f"The models step (`snakemake models`: the one-time conversions and notes, into the models folder every "
              f"run shares; a few seconds where an earlier call made them): {installed:.1f} s."]
    if added is not None:
        jobs = ", ".join(f"{rule} {n}x" for rule, n in added["jobs"].items())
        lines += ["", f"Adding one sample to the last input: {added['added_frames']:,} frames in the new sample, "
                  f"{added['embedded']:,} embedded ({added['distinct_frames']:,} distinct frames in the run), "
                  f"{added['wall_s']:.1f} s; jobs run: {jobs}."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models (a smoke test on the CPU)")
    ap.add_argument("--inputs", default=INPUTS, help="inputs to time, as SAMPLESxMBP_EACH, comma-separated")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--tokens-per-shard", type=int, default=50_000_000)
    ap.add_argument("--workdir", help="make the working directories here (default: the system's temporary one)")
    ap.add_argument("--models-dir", help="build the models here, or reuse those an earlier run built here")
    ap.add_argument("--kernel-frames", type=int, default=30_000, help="frames timed for the kernel's rate")
    ap.add_argument("--precisions", default="float16", help="embed.precision of the runs, comma-separated")
    ap.add_argument("--no-added-sample", action="store_true", help="skip adding a sample to the last input")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        built = Path(args.models_dir) if args.models_dir else root / "models"
        models = build_models(built, args.tiny)
        print(f"# models built in {time.perf_counter() - t0:.0f} s", flush=True)
        precisions = args.precisions.split(",")
        installed = built / "installed"
        seconds = install(root, installed, models, args.device, "float8" if "float8" in precisions else "float16")
        print(f"# models step in {seconds:.0f} s", flush=True)
        rows, first = [], None
        inputs = [(int(n), float(mbp)) for n, mbp in (part.split("x") for part in args.inputs.split(","))]
        for n, mbp in inputs:
            for precision in precisions:
                work, sheet, row = run_input(root, installed, models, n, mbp, args.device, args.tokens_per_shard,
                                             precision)
                first = first or work
                rows.append(row)
                print(row, flush=True)
        added = None if args.no_added_sample else add_a_sample(work, sheet, inputs[-1][1])
        print(added, flush=True)
        rate, device, path = kernel_rate(first, installed, models, args.device, args.kernel_frames)
    where = f"{torch.cuda.get_device_name() if device.startswith('cuda') else 'CPU'} ({path})"
    text = report(rows, added, rate, where, args.tiny, seconds)
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
