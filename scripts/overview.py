"""Snakemake adapter for rule `overview`: all samples (those that did not finish, with why), their tables
together, the models (with checksums), the parameters and the run's provenance."""

from virnucpro.harness import run_step
from virnucpro.steps.report import overview

run_step(
    snakemake.log[0],
    overview,
    samples=snakemake.params.samples,
    statuses=snakemake.input.status,
    sequence_summaries=snakemake.input.sequences,
    viral_regions=snakemake.input.regions,
    notes=[snakemake.input.esm2, snakemake.input.dnabert_s, snakemake.input.classifier],
    settings=dict(snakemake.params.settings),
    overview=snakemake.output.overview,
    unfinished=snakemake.output.unfinished,
    models=snakemake.output.models,
    parameters=snakemake.output.parameters,
    overview_view=snakemake.output.overview_view,
    unfinished_view=snakemake.output.unfinished_view,
    all_sequences=snakemake.output.all_sequences,
    all_regions=snakemake.output.all_regions,
    provenance_file=snakemake.output.provenance,
    models_view=snakemake.output.models_view,
    provenance_view=snakemake.output.provenance_view,
    pointers=dict(zip(snakemake.params.samples, snakemake.params.pointers)),
    receipts=list(snakemake.input.receipts),
    float8_check=snakemake.input.float8_check or None,
    threads=snakemake.threads,
)
