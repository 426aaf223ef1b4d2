"""Snakemake adapter for rule `convert_classifier`: original pickled module -> safetensors, checked
against the download's checksum record first and given a record of its own (virnucpro.checksums)."""

from virnucpro.checksums import record_path, verify_recorded, write_record
from virnucpro.classifier import convert_original
from virnucpro.logs import run_step


def convert_classifier(original, out):
    verify_recorded(original)
    record_path(out).unlink(missing_ok=True)  # a stale record must not outlive the file it described
    convert_original(original, out)
    write_record(out)


run_step(
    snakemake.log[0],
    convert_classifier,
    snakemake.input[0],
    snakemake.output[0],
    threads=snakemake.threads,
)
