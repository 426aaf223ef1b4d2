"""Snakemake adapter for rule `embedded`: the receipts of every shard of a plan, listed once all exist."""

import json

from virnucpro.io.atomic import atomic_outputs

with atomic_outputs(snakemake.output[0]) as (tmp,):
    tmp.write_text(json.dumps({"receipts": sorted(snakemake.input.receipts)}, indent=1) + "\n")
open(snakemake.log[0], "w").close()
