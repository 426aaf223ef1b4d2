"""Snakemake adapter for rule `merge`: DNABERT-S + ESM-2 embeddings -> 3328-value features."""

from virnucpro.features import merge_embeddings
from virnucpro.logs import run_step

run_step(
    snakemake.log[0],
    merge_embeddings,
    dna=snakemake.input.dna,
    protein=snakemake.input.protein,
    out=snakemake.output[0],
    frames=snakemake.input.frames,
    threads=snakemake.threads,
)
