# Config and sample-sheet validation, output paths and small input functions.

import csv
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def config_error(message):
    raise WorkflowError(f"configuration error: {message}")


def load_config():
    try:
        validate(config, "../schemas/config.schema.yaml")
    except WorkflowError as exc:
        config_error(first_line(exc))


def first_line(exc):
    """The schema violation itself, from snakemake's multi-line validation message."""
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    detail = next((l for l in lines if not l.startswith(("Error validating", "Failed validating", "On instance"))), "")
    return detail or lines[0]


def load_samples(path):
    if not Path(path).is_file():
        config_error(f"sample sheet {path} does not exist")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows:
        config_error(f"sample sheet {path} lists no samples")
    missing = {"sample", "path"} - set(rows[0])
    if missing:
        config_error(f"sample sheet {path} lacks column(s) {', '.join(sorted(missing))}")
    samples = {}
    for n, row in enumerate(rows, start=2):
        row = {k: (v or "").strip() for k, v in row.items() if k in ("sample", "path")}
        try:
            validate(row, "../schemas/samples.schema.yaml")
        except WorkflowError as exc:
            config_error(f"sample sheet {path}, line {n}: {first_line(exc)}")
        if row["sample"] in samples:
            config_error(f"sample sheet {path}, line {n}: duplicate sample name '{row['sample']}'")
        if not Path(row["path"]).is_file():
            config_error(f"sample sheet {path}, line {n}: input file {row['path']} does not exist")
        samples[row["sample"]] = row["path"]
    return samples


load_config()
SAMPLES = load_samples(config["samples"])
RESULTS = config["results"]
FRAGMENT_SIZE = config["fragment_size"]


wildcard_constraints:
    sample="[A-Za-z0-9][A-Za-z0-9._-]*",


def model_path(key):
    """A model setting as a path: kept as given when it names an existing file or an absolute path,
    otherwise looked up in models.dir (where the models rules download it)."""
    value = Path(config["models"][key])
    if value.is_absolute() or value.exists():
        return str(value)
    return str(Path(config["models"]["dir"]) / value)


def sample_input(wildcards):
    return SAMPLES[wildcards.sample]


def all_results():
    names = [
        "prediction_results.tsv",
        "fragment_calls.tsv",
        "sequence_summary.tsv",
        "viral.fna",
        "plots/score_histogram.png",
        "plots/score_along_sequences.png",
    ]
    return [f"{RESULTS}/{s}/{name}" for s in SAMPLES for name in names]
