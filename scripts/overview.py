"""Snakemake adapter for rule `overview`: all samples, the models (with checksums) and the parameters."""

from virnucpro.logs import run_step
from virnucpro.steps.report import write_run_files

run_step(
    snakemake.log[0],
    write_run_files,
    samples=snakemake.params.samples,
    sequence_summaries=snakemake.input.sequences,
    viral_regions=snakemake.input.regions,
    notes=[snakemake.input.esm2, snakemake.input.dnabert_s, snakemake.input.classifier],
    settings=dict(snakemake.params.settings),
    overview=snakemake.output.overview,
    models=snakemake.output.models,
    parameters=snakemake.output.parameters,
    threads=snakemake.threads,
)
