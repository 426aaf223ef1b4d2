"""Snakemake adapter for rule `collect_predictions`: per-shard tables -> one table in input order,
checked against the sample's frames."""

from virnucpro.logs import run_step
from virnucpro.summary import collect_predictions

run_step(
    snakemake.log[0],
    collect_predictions,
    list(snakemake.input.predictions),
    snakemake.output[0],
    frames=snakemake.input.frames,
    threads=snakemake.threads,
)
