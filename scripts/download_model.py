"""Snakemake adapter for the download rules: fetch and verify one model into the models directory."""

from virnucpro.harness import run_step
from virnucpro.steps.models import download_model

run_step(
    snakemake.log[0],
    download_model,
    snakemake.params.kind,
    snakemake.output.model,
    threads=snakemake.threads,
)
