"""Snakemake adapter for checkpoint `plan`: the pooled embedding plan of a batch of members."""

from virnucpro.harness import run_step
from virnucpro.steps.plan import plan_run

members = dict(zip(snakemake.params.members, zip(snakemake.input.dna, snakemake.input.protein)))
statuses = dict(zip(snakemake.params.members, snakemake.input.status))  # samples whose input was bad are left out
notes = {"esm2": snakemake.input.esm2, "dnabert_s": snakemake.input.dnabert_s}  # note files
run_step(
    snakemake.log[0],
    plan_run,
    members,
    snakemake.output[0],
    store=snakemake.params.store,
    notes=notes,
    device=snakemake.params.device,
    tokens_per_shard=snakemake.params.tokens_per_shard,
    statuses=statuses,
    records_dir=snakemake.params.records,  # beside the plan: unchanged records keep their mtime
    float8_decision=snakemake.input.float8_decision or None,  # the float8 guard's, when float8 was asked for
    threads=snakemake.threads,
)
