"""Snakemake adapter for the conversion rules: a model converted once (virnucpro.converted) into the
folder beside its note ({models.dir}/converted/), and the note of what the conversion gave."""

from pathlib import Path

from virnucpro.converted import write_pointer
from virnucpro.logs import run_step

note = Path(snakemake.output[0])
run_step(
    snakemake.log[0], write_pointer, snakemake.params.kind, snakemake.input[0], note.parent.parent, note,
    threads=snakemake.threads,
)
