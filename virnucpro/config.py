"""Validation of the workflow's config, sample sheet and model settings, at parse time.

Every function raises `VirNucProError` with one line naming the file, the setting (or sheet line) and
the problem, so that the workflow can stop with that line alone. Config values that Snakemake's
`--config` hands over as text (it reads nested values, `--config 'embed={device: cpu}'`, as strings) are
turned into the number or boolean the schema asks for before the config is checked.

The model settings are checked without torch and without reading large files: that each names a model
on disk or one the models step downloads (`check_models`), and that the classifier is for the
configured fragment size and, placed by hand where its download would be, the published file
(`check_classifier`). The device setting is checked at the start of a run (`virnucpro.device`).
"""

import csv
from pathlib import Path

from virnucpro.errors import VirNucProError
from virnucpro.io.checksums import is_verified
from virnucpro.io.tensors import is_safetensors, safetensors_metadata
from virnucpro.steps.models import KINDS, at_download_name, classifier_blob_problem


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
    """Check `config` against the schema, after `coerce_strings` (which changes `config` in place)."""
    validator = _validator(schema_path)
    coerce_strings(config, validator.schema)
    problem = _first_error(validator, config)
    if problem:
        raise VirNucProError(f"{source}: {problem}")


_PARSERS = {"integer": int, "number": float, "boolean": lambda v: {"true": True, "false": False}[v.lower()]}


def coerce_strings(config, schema):
    """Strings where the schema asks for an integer, number or boolean become one, when they read as one."""
    for key, sub in (schema.get("properties") or {}).items():
        if not isinstance(config, dict) or key not in config:
            continue
        value = config[key]
        if isinstance(value, dict):
            coerce_strings(value, sub)
        elif isinstance(value, str) and sub.get("type") in _PARSERS:
            try:
                config[key] = _PARSERS[sub["type"]](value)
            except (ValueError, KeyError):
                pass  # left as it is: the check names it


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
        twin = next((s for s in samples if s.lower() == row["sample"].lower()), None)
        if twin is not None:
            raise VirNucProError(
                f"sample sheet {path}, line {line}: sample '{row['sample']}' differs from '{twin}' only in case; "
                "their results would collide on a case-insensitive file system"
            )
        problem = _not_a_file(row["path"])
        if problem:
            raise VirNucProError(f"sample sheet {path}, line {line}: input {row['path']} {problem}")
        samples[row["sample"]] = row["path"]
    return samples


def _not_a_file(path):
    path = Path(path)
    if path.is_dir():
        return "is a directory, not a FASTA or FASTQ file"
    if not path.is_file():
        return "does not exist"
    return None


def check_models(paths, models_dir, made_here=()):
    """Every model setting (`paths`: {"esm2": path, ...} as the workflow resolves them) must name an
    existing file (a folder for dnabert_s), one that the models step downloads into `models_dir`, or one
    of `made_here` (files the workflow's own rules write: the retrained classifier)."""
    for key, path in paths.items():
        path = Path(path)
        if path in {Path(p) for p in made_here}:
            continue
        want_dir = KINDS[key].folder
        if path.exists():
            if path.is_dir() != want_dir:
                what = "a folder" if want_dir else "a file"
                raise VirNucProError(f"config: models.{key}: {path} is not {what}")
            continue
        pattern, names = KINDS[key].download_names
        if path.parent == Path(models_dir) and pattern.fullmatch(path.name):
            continue
        raise VirNucProError(
            f"config: models.{key}: {path} does not exist, and it is not a model that the models step "
            f"downloads into models.dir ({names})"
        )


def classifier_fragment_size(path):
    """(fragment size or None, where it was read) of the classifier file `path`, without torch: from the
    metadata of our safetensors files (converted or trained), else from an original's name."""
    path = Path(path)
    if path.is_file() and is_safetensors(path):
        size = safetensors_metadata(path).get("fragment_size", "")
        if not size.isdigit():
            return None, "its safetensors metadata records no fragment_size: not a VirNucPro classifier"
        return int(size), "its metadata"
    match = KINDS["classifier"].download_names[0].fullmatch(path.name)
    if match:
        return int(match.group(1)), "its file name"
    return None, "an original classifier file is named 300_model.pth or 500_model.pth"


def check_classifier(path, fragment_size, models_dir, trained):
    """models.classifier (`path`, as the workflow resolves it) must be a classifier for `fragment_size`
    bp fragments and, at the name the models step downloads into `models_dir`, the published file (its
    git blob id; not read again while its checksum record holds a verification for it). `trained`: the
    classifier `snakemake train` writes, for `fragment_size` by construction."""
    path = Path(path)
    if path == Path(trained) and not path.exists():
        return
    size, source = classifier_fragment_size(path)
    if size is None:
        raise VirNucProError(f"config: models.classifier: {path}: cannot tell which fragment size it is for ({source})")
    if size != int(fragment_size):
        raise VirNucProError(
            f"config: fragment_size is {fragment_size}, but models.classifier {path} is a classifier for {size} "
            f"bp fragments ({source}): set fragment_size to {size}, or models.classifier to a {fragment_size} bp "
            f"classifier ({fragment_size}_model.pth, or {trained}, which `snakemake train` makes)"
        )
    if path.is_file() and at_download_name("classifier", path, models_dir) and not is_verified(path):
        problem = classifier_blob_problem(path)
        if problem:
            raise VirNucProError(
                f"config: models.classifier: {path} is not the published {path.name} ({problem}): delete it to "
                "download the published one, or move it out of models.dir and point models.classifier at it "
                "to use it unverified"
            )


def training_sets(train):
    """{name: path} of the labelled training inputs, named train-viral-N and train-other-N (1-based)."""
    sets = {}
    for label in ("viral", "other"):
        for n, path in enumerate(train[label], start=1):
            problem = _not_a_file(path)
            if problem:
                raise VirNucProError(f"config: train.{label}[{n - 1}]: input {path} {problem}")
            sets[f"train-{label}-{n}"] = path
    return sets
