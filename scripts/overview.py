"""Snakemake adapter for rule `overview`: one row per sample for the report's front page."""

from virnucpro.logs import run_step
from virnucpro.report import write_overview

run_step(
    snakemake.log[0],
    write_overview,
    samples=snakemake.params.samples,
    sequence_summaries=snakemake.input.sequences,
    viral_regions=snakemake.input.regions,
    out=snakemake.output[0],
)
