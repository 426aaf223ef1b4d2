"""Snakemake adapter for checkpoint `plan`: the pooled embedding plan of a pool of members."""

from virnucpro.harness import run_step
from virnucpro.steps.plan import plan

members = dict(zip(snakemake.params.members, zip(snakemake.input.dna, snakemake.input.protein)))
statuses = dict(zip(snakemake.params.members, snakemake.input.status))  # samples whose input was bad are left out
notes = {"esm2": snakemake.input.esm2, "dnabert_s": snakemake.input.dnabert_s}  # note files
run_step(
    snakemake.log[0],
    plan,
    members,
    snakemake.output[0],
    snakemake.params.members_dir,  # beside the plan: unchanged member plans keep their mtime
    store=snakemake.params.store,
    notes=notes,
    device=snakemake.params.device,
    tokens_per_shard=snakemake.params.tokens_per_shard,
    statuses=statuses,
    float8_decision=snakemake.input.float8_decision or None,  # the float8 guard's, when float8 was asked for
    threads=snakemake.threads,
)
