"""Snakemake adapter for rule `summarize`: tables, regions, tracks, viral FASTA, original files, plots, views."""

from virnucpro.harness import run_step
from virnucpro.layout import SUMMARY
from virnucpro.steps.summarize import Settings, summarize

run_step(
    snakemake.log[0],
    summarize,
    snakemake.input.predictions,
    snakemake.input.manifest,
    snakemake.input.fasta,
    outputs={name: snakemake.output[name] for name in SUMMARY},
    fragment_size=snakemake.params.fragment_size,
    sample=snakemake.wildcards.sample,
    settings=Settings(**snakemake.params.settings),
    max_bp=snakemake.params.max_bp,
    threads=snakemake.threads,
)
