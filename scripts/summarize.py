"""Snakemake adapter for rule `summarize`: fragment and sequence tables, viral FASTA, plots."""

from virnucpro.logs import run_step
from virnucpro.summary import summarize

run_step(
    snakemake.log[0],
    summarize,
    predictions=snakemake.input.predictions,
    manifest=snakemake.input.manifest,
    fasta=snakemake.input.fasta,
    fragment_calls=snakemake.output.fragments,
    sequence_summary=snakemake.output.sequences,
    viral_fasta=snakemake.output.viral,
    histogram=snakemake.output.histogram,
    along=snakemake.output.along,
    threshold=snakemake.params.threshold,
    top_sequences=snakemake.params.top_sequences,
    fragment_size=snakemake.params.fragment_size,
    threads=snakemake.threads,
)
