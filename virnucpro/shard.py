"""Split a sample's frames into shards balanced by ESM-2 token count.

`shard_frames` reads the kept frames written by `prepare` (nucleotide and protein FASTA, same ids in the
same order) and writes `{out_dir}/{k:04d}.fna` and `{k:04d}.faa` for k = 0..n-1. Shards are contiguous
runs of the input order (so concatenating per-shard results restores it), cut where the running token
count crosses k * total / n, with n = ceil(total / tokens_per_shard). Tokens are counted as ESM-2 sees
them (residues truncated at 1022, plus BOS and EOS): ESM-2 3B dominates the cost of every shard. A
sample without frames gives no shard. The directory appears complete or not at all.
"""

import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np

from virnucpro.atomic import disk_full_error, is_disk_full, temp_path_for
from virnucpro.errors import VirNucProError
from virnucpro.seqio import read_fasta

log = logging.getLogger("virnucpro")
ESM_MAX_RESIDUES = 1022


def shard_bounds(tokens, tokens_per_shard):
    """Start indices of each shard plus the end, for per-frame token counts `tokens`."""
    tokens = np.asarray(tokens, dtype=np.int64)
    total = int(tokens.sum())
    n = math.ceil(total / tokens_per_shard) if total else 0
    if n == 0:
        return [0]
    midpoints = np.cumsum(tokens) - tokens / 2
    cuts = np.searchsorted(midpoints, np.arange(1, n) * total / n)
    return [0, *np.unique(cuts).tolist(), tokens.size]


def shard_frames(dna, protein, out_dir, tokens_per_shard):
    """Write the shards; returns their number. See the module docstring."""
    nucleotides, proteins = list(read_fasta(dna)), list(read_fasta(protein))
    if [i for i, _ in nucleotides] != [i for i, _ in proteins]:
        raise VirNucProError(f"{dna} and {protein} do not hold the same frames in the same order")
    records = list(zip(nucleotides, proteins))
    tokens = [min(len(p), ESM_MAX_RESIDUES) + 2 for _, (_, p) in records]
    bounds = shard_bounds(tokens, tokens_per_shard)
    out_dir = Path(out_dir)
    tmp = temp_path_for(out_dir)
    try:
        tmp.mkdir(parents=True)
        for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            part = records[lo:hi]
            (tmp / f"{k:04d}.fna").write_text("".join(f">{i}\n{s}\n" for (i, s), _ in part))
            (tmp / f"{k:04d}.faa").write_text("".join(f">{i}\n{s}\n" for _, (i, s) in part))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise disk_full_error([out_dir]) from None
        raise
    n = len(bounds) - 1
    log.info("%d frames, %d tokens -> %d shard(s) in %s", len(records), sum(tokens), n, out_dir)
    return n
