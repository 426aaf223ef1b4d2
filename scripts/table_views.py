"""Snakemake adapter for rule `table_views`: a sample's tables as HTML pages for the report."""

from virnucpro.logs import run_step
from virnucpro.report import write_table_views

run_step(
    snakemake.log[0],
    write_table_views,
    sequence_summary=snakemake.input.sequences,
    viral_regions=snakemake.input.regions,
    sequences_html=snakemake.output.sequences,
    regions_html=snakemake.output.regions,
    sample=snakemake.wildcards.sample,
    max_rows=snakemake.params.max_rows,
)
