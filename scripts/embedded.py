"""Snakemake adapter for rule `embedded`: the list of a plan's shard receipts, the one file that the steps
reading the store wait for (common.smk `embedded`)."""

from virnucpro.harness import run_step
from virnucpro.steps.plan import write_receipt_list

run_step(snakemake.log[0], write_receipt_list, list(snakemake.input.receipts), snakemake.output[0],
         threads=snakemake.threads)
