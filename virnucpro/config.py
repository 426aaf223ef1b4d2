"""Validation of the workflow's config and sample sheet against the JSON schemas in workflow/schemas.

Both functions raise `VirNucProError` with one line naming the file, the setting (or sheet line) and
the problem, so that the workflow can stop with that line alone.
"""

import csv
from pathlib import Path

from virnucpro.errors import VirNucProError


def _validator(schema_path):
    import jsonschema  # imported here: only the workflow needs it
    import yaml

    with open(schema_path) as fh:
        return jsonschema.Draft202012Validator(yaml.safe_load(fh))


def _first_error(validator, instance):
    import jsonschema

    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"{where}: {error.message}"


def validate_config(config, schema_path, source="config"):
    problem = _first_error(_validator(schema_path), config)
    if problem:
        raise VirNucProError(f"{source}: {problem}")


def read_samples(path, schema_path):
    """The sample sheet as {sample: input path}; rows validated, names unique, input files present."""
    if not Path(path).is_file():
        raise VirNucProError(f"sample sheet {path} does not exist")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows:
        raise VirNucProError(f"sample sheet {path} lists no samples")
    missing = {"sample", "path"} - set(rows[0])
    if missing:
        raise VirNucProError(f"sample sheet {path} lacks column(s): {', '.join(sorted(missing))}")
    validator = _validator(schema_path)
    samples = {}
    for line, row in enumerate(rows, start=2):
        row = {k: (row.get(k) or "").strip() for k in ("sample", "path")}
        problem = _first_error(validator, row)
        if problem:
            raise VirNucProError(f"sample sheet {path}, line {line}: {problem}")
        if row["sample"] in samples:
            raise VirNucProError(f"sample sheet {path}, line {line}: duplicate sample '{row['sample']}'")
        if not Path(row["path"]).is_file():
            raise VirNucProError(
                f"sample sheet {path}, line {line}: input file {row['path']} does not exist"
            )
        samples[row["sample"]] = row["path"]
    return samples


def training_sets(train):
    """{name: path} of the labelled training inputs, named train-viral-N and train-other-N (1-based)."""
    sets = {}
    for label in ("viral", "other"):
        for n, path in enumerate(train[label], start=1):
            if not Path(path).is_file():
                raise VirNucProError(f"config: train.{label}[{n - 1}]: input file {path} does not exist")
            sets[f"train-{label}-{n}"] = path
    return sets
