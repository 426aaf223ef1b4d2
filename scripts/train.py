"""Snakemake adapter for rule `train`: the original recipe on the labelled training sets."""

from virnucpro.harness import run_step
from virnucpro.steps.train import train

labelled = [(member, 1) for member in snakemake.input.viral] + [(member, 0) for member in snakemake.input.other]
run_step(
    snakemake.log[0],
    train,
    labelled,
    out_model=snakemake.output.model,
    metrics_tsv=snakemake.output.metrics,
    fragment_size=snakemake.params.fragment_size,
    seed=snakemake.params.seed,
    threads=snakemake.threads,
)
