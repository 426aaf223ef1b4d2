"""Snakemake adapter for rule `run_info`: the models (with checksums) and parameters of the run."""

from virnucpro.logs import run_step
from virnucpro.report import write_run_info

run_step(
    snakemake.log[0],
    write_run_info,
    esm2=snakemake.input.esm2,
    dnabert_s=snakemake.input.dnabert_s,
    classifier=snakemake.input.classifier,
    settings=dict(snakemake.params.settings),
    models_out=snakemake.output.models,
    parameters_out=snakemake.output.parameters,
)
