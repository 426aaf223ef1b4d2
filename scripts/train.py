"""Snakemake adapter for rule `train_classifier`: the original recipe on labelled feature shards."""

from virnucpro.logs import run_step
from virnucpro.train import train_classifier

labelled = [(path, 1) for path in snakemake.input.viral] + [(path, 0) for path in snakemake.input.other]
run_step(
    snakemake.log[0],
    train_classifier,
    labelled,
    out_model=snakemake.output.model,
    metrics_tsv=snakemake.output.metrics,
    fragment_size=snakemake.params.fragment_size,
    seed=snakemake.params.seed,
    threads=snakemake.threads,
)
