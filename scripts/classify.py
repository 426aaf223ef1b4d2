"""Snakemake adapter for rule `classify`: the VirNucPro MLP on one feature file."""

from virnucpro.classifier import classify
from virnucpro.logs import run_step

run_step(
    snakemake.log[0],
    classify,
    snakemake.input.features,
    model=snakemake.input.model,
    out=snakemake.output[0],
    fragment_size=snakemake.params.fragment_size,
    threads=snakemake.threads,
)
