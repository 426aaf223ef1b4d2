"""Snakemake adapter for rule `embed`: one shard of the plan, ESM-2 and DNABERT-S, into the store."""

from pathlib import Path

from virnucpro.embed import embed_shard
from virnucpro.logs import run_step

run_step(
    snakemake.log[0],
    embed_shard,
    snakemake.params.plan,
    snakemake.wildcards.shard,
    esm2_model=snakemake.input.esm2,
    dnabert_s=snakemake.input.dnabert_s,
    models_dir=Path(snakemake.input.esm2_converted[0]).parent.parent,  # {models.dir}/converted/esm2.json
    receipt=snakemake.output[0],
    esm2_tokens_per_batch=snakemake.params.esm2_tokens_per_batch,
    dnabert_tokens_per_batch=snakemake.params.dnabert_tokens_per_batch,
    threads=snakemake.threads,
)
