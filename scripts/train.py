"""Snakemake adapter for rule `train_classifier`: the original recipe on the labelled training sets."""

from virnucpro.harness import run_step
from virnucpro.steps.train import train_classifier

inputs = snakemake.input
labelled = [
    (dna, protein, member, label)
    for label, part in ((1, "viral"), (0, "other"))
    for dna, protein, member in zip(inputs[f"{part}_dna"], inputs[f"{part}_protein"], inputs[f"{part}_member"])
]
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
