"""The workflow steps, one module each; a step is one function that its Snakemake script and the CLI
both call: fetch (models), prepare, plan (shards), embed, merge, classify, summarize, train, report."""
