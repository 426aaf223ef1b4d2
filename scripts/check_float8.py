"""Snakemake adapter for rule `check_float8`: the float8 guard on a calibration subset of the run's frames."""

from virnucpro.harness import run_step
from virnucpro.steps.check_float8 import check_float8

members = dict(zip(snakemake.params.members, zip(snakemake.input.dna, snakemake.input.protein)))
statuses = dict(zip(snakemake.params.members, snakemake.input.status))  # as the plan, bad samples left out
notes = {kind: snakemake.input[kind] for kind in ("esm2", "dnabert_s", "classifier")}  # note files
run_step(
    snakemake.log[0],
    check_float8,
    members,
    notes,
    snakemake.params.store,
    outputs={"decision": snakemake.output.decision, "table": snakemake.output.table},
    check=snakemake.params.check,  # frames, min_call_agreement, min_cosine
    device=snakemake.params.device,
    statuses=statuses,
    tokens_per_batch=snakemake.params.tokens_per_batch,
    threads=snakemake.threads,
)
