"""A sample's prepare status (`prepare/status.json`, written by `steps.prepare.prepare`): read here
with the standard library alone, so that the workflow's parse-time code (which runs where Snakemake
runs, without the numerical stack) can tell which samples' front end failed."""

import json
from pathlib import Path

from virnucpro.errors import InputError


def read_status(path):
    """The error a prepare status records, or None for a sample whose front end went through."""
    try:
        status = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable prepare status ({exc})") from None
    return None if status.get("ok") else status.get("error", "the front end failed")
