"""Snakemake adapter for rule `summarize`: tables, regions, tracks, viral FASTA, original files, plots, views."""

from virnucpro.harness import run_step
from virnucpro.steps.summarize import summarize

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
    viral_regions=snakemake.output.regions,
    score_track=snakemake.output.score_track,
    region_track=snakemake.output.region_track,
    original_predictions=snakemake.output.original_predictions,
    original_calls=snakemake.output.original_calls,
    sequences_view=snakemake.output.sequences_view,
    regions_view=snakemake.output.regions_view,
    regions_fasta=snakemake.output.regions_fasta,
    regions_gff=snakemake.output.regions_gff,
    threshold=snakemake.params.threshold,
    top_sequences=snakemake.params.top_sequences,
    fragment_size=snakemake.params.fragment_size,
    max_gap_fragments=snakemake.params.max_gap_fragments,
    min_viral_fragments=snakemake.params.min_viral_fragments,
    max_table_rows=snakemake.params.max_table_rows,
    sample=snakemake.wildcards.sample,
    max_bp=snakemake.params.max_bp,
    threads=snakemake.threads,
)
