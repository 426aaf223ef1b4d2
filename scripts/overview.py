"""Snakemake adapter for rule `overview`: all samples (those that did not finish, with why), their tables
together, the models (with checksums), the parameters and the run's provenance."""

from virnucpro.harness import run_step
from virnucpro.layout import OVERVIEW
from virnucpro.steps.overview import overview

run_step(
    snakemake.log[0],
    overview,
    snakemake.params.samples,
    snakemake.input.status,
    snakemake.input.sequences,
    snakemake.input.regions,
    notes=[snakemake.input.esm2, snakemake.input.dnabert_s, snakemake.input.classifier],
    settings=dict(snakemake.params.settings),
    outputs={name: snakemake.output[name] for name in OVERVIEW},
    pointers=dict(zip(snakemake.params.samples, snakemake.params.pointers)),
    receipts=list(snakemake.input.receipts),
    float8_check=snakemake.input.float8_check or None,
    threads=snakemake.threads,
)
