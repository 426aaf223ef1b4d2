"""Snakemake adapter for rule `collect_predictions`: per-shard tables -> one table in input order."""

from virnucpro.logs import run_step
from virnucpro.summary import collect_predictions

run_step(snakemake.log[0], collect_predictions, snakemake.input, snakemake.output[0])
