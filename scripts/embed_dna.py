"""Snakemake adapter for rule `embed_dna`: DNABERT-S packed embeddings of one shard."""

from virnucpro.dnabert import embed_dna
from virnucpro.logs import run_step

run_step(
    snakemake.log[0],
    embed_dna,
    snakemake.input.frames,
    model_dir=snakemake.input.model,
    out=snakemake.output[0],
    device=snakemake.params.device,
    tokens_per_batch=snakemake.params.tokens_per_batch,
    threads=snakemake.threads,
)
