"""Throughput of `virnucpro prepare` against a per-codon implementation of the same rules, one core.

Input: a generated genome-like FASTA (random contigs of 5-200 kb in which about half the bases lie in
stop-free reading frames, so that many fragments keep a frame, as in real coding-dense genomes).
Both implementations run in the same process on one core; the per-codon baseline runs on a prefix of
the input (it is ~50x slower) and the vectorised output for that prefix is checked to be identical.

    taskset -c 0 python benchmarks/prepare_throughput.py --mbp 200 --baseline-mbp 4 \
        > benchmarks/results/prepare_throughput.txt
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.reference_frontend import CODON_TABLE, front_end  # noqa: E402
from virnucpro.steps.prepare import cut_and_translate  # noqa: E402

SENSE = [c for c, aa in CODON_TABLE.items() if aa != "*"]


def make_contig(rng, length):
    parts, total = [], 0
    while total < length:
        n = int(rng.integers(300, 3000))
        if rng.random() < 0.5:
            parts.append("".join(rng.choice(SENSE, n // 3)))
        else:
            parts.append("".join(rng.choice(list("ACGT"), n)))
        total += n
    return "".join(parts)[:length]


def write_input(path, mbp, seed=7):
    rng = np.random.default_rng(seed)
    records, total = [], 0
    with open(path, "w") as out:
        while total < mbp * 1_000_000:
            seq = make_contig(rng, int(rng.integers(5_000, 200_000)))
            rid = f"contig_{len(records) + 1}"
            out.write(f">{rid} generated\n")
            out.writelines(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60))
            records.append((rid, seq))
            total += len(seq)
    return records, total


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mbp", type=float, default=200)
    ap.add_argument("--baseline-mbp", type=float, default=4)
    ap.add_argument("--size", type=int, default=500, choices=[300, 500])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        records, total = write_input(tmp / "in.fa", args.mbp)
        prefix, ptotal = [], 0
        for r in records:
            if ptotal >= args.baseline_mbp * 1e6:
                break
            prefix.append(r)
            ptotal += len(r[1])
        with open(tmp / "prefix.fa", "w") as out:
            out.writelines(f">{rid}\n{seq}\n" for rid, seq in prefix)

        ref, t_ref = timed(lambda: front_end(prefix, args.size))
        run = lambda src, tag: cut_and_translate(src, args.size, tmp / f"{tag}.fna", tmp / f"{tag}.faa")
        _, t_pre = timed(lambda: run(tmp / "prefix.fa", "prefix"))
        same = (tmp / "prefix.faa").read_text() == "".join(f">{i}\n{p}\n" for i, _, p in ref) and (
            tmp / "prefix.fna"
        ).read_text() == "".join(f">{i}\n{n}\n" for i, n, _ in ref)
        stats, t_all = timed(lambda: run(tmp / "in.fa", "all"))
        gz = tmp / "in.fa.gz"
        os.system(f"gzip -1 -c {tmp / 'in.fa'} > {gz}")
        _, t_gz = timed(lambda: run(gz, "gz"))

    print(f"fragment size {args.size}, one core (affinity {sorted(os.sched_getaffinity(0))})")
    print(f"{'implementation':<38}{'input':>10}{'seconds':>10}{'Mbp/s':>10}")
    rows = [
        ("per-codon reference (original rules)", ptotal, t_ref),
        ("virnucpro prepare, same prefix", ptotal, t_pre),
        ("virnucpro prepare, whole input", total, t_all),
        ("virnucpro prepare, whole input, gzip", total, t_gz),
    ]
    for name, n, t in rows:
        print(f"{name:<38}{n / 1e6:>8.1f}Mb{t:>10.2f}{n / t / 1e6:>10.1f}")
    print(f"speed-up on the same prefix: {t_ref / t_pre:.1f}x; output identical: {same}")
    print(f"whole input: {stats.sequences} sequences, {stats.fragments} fragments, {stats.frames} frames")


if __name__ == "__main__":
    main()
