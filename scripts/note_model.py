"""Snakemake adapter for rule `note_model`: a model verified when placed by hand where its download would
be, checksummed, converted once where its kind needs it (into the models folder that holds the notes),
and its note (virnucpro.io.notes) written."""

from pathlib import Path

from virnucpro.harness import run_step
from virnucpro.steps.models import note_model

note = Path(snakemake.output[0])  # {models.dir}/notes/{kind}-{id}.json
run_step(
    snakemake.log[0], note_model, snakemake.wildcards.kind, snakemake.input[0], note.parent.parent, note,
    float8=snakemake.params.float8, threads=snakemake.threads,
)
