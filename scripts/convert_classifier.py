"""Snakemake adapter for rule `convert_classifier`: original pickled module -> safetensors."""

from virnucpro.classifier import convert_original
from virnucpro.logs import run_step

run_step(snakemake.log[0], convert_original, snakemake.input[0], snakemake.output[0])
