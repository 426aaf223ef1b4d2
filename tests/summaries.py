"""The summarize step as the tests run it: every output under its workflow name (virnucpro.layout.SUMMARY)
in one folder, settings given by name."""

from pathlib import Path

from virnucpro.layout import SUMMARY
from virnucpro.steps.summarize import Settings, summarize


def summary_outputs(folder):
    """{output name: path} of every summarize output in `folder`, as the workflow names them."""
    return {name: Path(folder) / output.path for name, output in SUMMARY.items()}


def run_summarize(predictions, manifest, fasta, folder, fragment_size=500, sample="", **settings):
    """Summarize into `folder`; `settings` by Settings' names. Returns `summary_outputs(folder)`."""
    outputs = summary_outputs(folder)
    summarize(predictions, manifest, fasta, outputs, fragment_size, sample, Settings(**settings))
    return outputs
