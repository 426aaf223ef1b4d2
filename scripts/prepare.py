"""Snakemake adapter for rule `prepare`: virnucpro.steps.prepare.prepare on one sample."""

from virnucpro.harness import run_step
from virnucpro.steps.prepare import prepare

run_step(
    snakemake.log[0],
    prepare,
    snakemake.input.fasta,
    fragment_size=snakemake.params.fragment_size,
    out_dna=snakemake.output.dna,
    out_protein=snakemake.output.protein,
    manifest=snakemake.output.manifest,
    status=snakemake.output.status,
    max_bp=snakemake.params.max_bp,
    min_length=snakemake.params.min_length,
    threads=snakemake.threads,
)
