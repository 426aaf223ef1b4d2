"""Snakemake adapter for rule `embed_protein`: ESM-2 packed embeddings of one shard."""

from virnucpro.esm2 import embed_protein
from virnucpro.logs import run_step

run_step(
    snakemake.log[0],
    embed_protein,
    snakemake.input.frames,
    model=snakemake.input.model,
    out=snakemake.output[0],
    device=snakemake.params.device,
    tokens_per_batch=snakemake.params.tokens_per_batch,
    threads=snakemake.threads,
)
