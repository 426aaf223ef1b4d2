"""Snakemake adapter for rule `list_receipts`: the list of a plan's shard receipts, the one file that the
steps reading the store wait for (common.smk `receipt_list`)."""

from virnucpro.harness import run_step
from virnucpro.steps.plan import list_receipts

run_step(snakemake.log[0], list_receipts, list(snakemake.input.receipts), snakemake.output[0],
         threads=snakemake.threads)
