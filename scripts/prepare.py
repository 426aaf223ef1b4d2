"""Snakemake adapter for rule `prepare`: virnucpro.prepare.prepare on one sample."""

from virnucpro.logs import run_step
from virnucpro.prepare import prepare

run_step(
    snakemake.log[0],
    prepare,
    snakemake.input.fasta,
    fragment_size=snakemake.params.fragment_size,
    out_dna=snakemake.output.dna,
    out_protein=snakemake.output.protein,
    manifest=snakemake.output.manifest,
    threads=snakemake.threads,
)
