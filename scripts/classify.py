"""Snakemake adapter for rule `classify`: the VirNucPro MLP on every frame of a sample."""

from virnucpro.harness import run_step
from virnucpro.steps.classify import classify

run_step(
    snakemake.log[0],
    classify,
    snakemake.input.member,
    note=snakemake.input.classifier,
    fragment_size=snakemake.params.fragment_size,
    out=snakemake.output[0],
    threads=snakemake.threads,
)
