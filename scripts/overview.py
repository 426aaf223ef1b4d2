"""Snakemake adapter for rule `overview`: all samples (those that did not finish, with why), the models
(with checksums) and the parameters."""

from virnucpro.logs import run_step
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
    threads=snakemake.threads,
)
