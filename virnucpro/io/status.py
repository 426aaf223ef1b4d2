"""A sample's prepare status (`prepare/status.json`, written by `steps.prepare.prepare`): read here
with the standard library alone, so that the workflow's parse-time code (which runs where Snakemake
runs, without the numerical stack) can tell which samples' front end failed."""

import json
import logging
from pathlib import Path

from virnucpro.errors import InputError

log = logging.getLogger("virnucpro")


def read_status(path):
    """The error a prepare status records, or None for a sample whose front end went through."""
    try:
        status = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable prepare status ({exc})") from None
    return None if status.get("ok") else status.get("error", "the front end failed")


def usable_members(members, statuses):
    """(members whose front end went through, {name: error} of the others, each logged as left out);
    statuses: {name: prepare status file} (`prepare.prepare`), or None."""
    skipped = {name: error for name, path in (statuses or {}).items() if (error := read_status(path))}
    for name, error in skipped.items():
        log.warning("%s is left out: its front end failed (%s)", name, error)
    return {name: frames for name, frames in members.items() if name not in skipped}, skipped
