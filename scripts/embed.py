"""Snakemake adapter for rule `embed`: one shard of the plan, ESM-2 and DNABERT-S, into the store."""

from virnucpro.harness import run_step
from virnucpro.steps.embed import embed

notes = {"esm2": snakemake.input.esm2, "dnabert_s": snakemake.input.dnabert_s}  # note files
run_step(
    snakemake.log[0],
    embed,
    snakemake.params.plan,
    snakemake.wildcards.shard,
    notes=notes,
    receipt=snakemake.output[0],
    tokens_per_batch=snakemake.params.tokens_per_batch,
    lock_options={"stale_after_s": snakemake.params.lock_stale_s},  # the shard's lock in the store
    threads=snakemake.threads,
)
