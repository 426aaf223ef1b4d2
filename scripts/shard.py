"""Snakemake adapter for checkpoint `shard`: split a sample's frames into token-balanced shards."""

from virnucpro.logs import run_step
from virnucpro.shard import shard_frames

run_step(
    snakemake.log[0],
    shard_frames,
    snakemake.input.dna,
    snakemake.input.protein,
    snakemake.output[0],
    tokens_per_shard=snakemake.params.tokens_per_shard,
    threads=snakemake.threads,
)
