# Config and sample-sheet validation, output paths and small input functions.

import sys
from pathlib import Path

from virnucpro.config import read_samples, validate_config
from virnucpro.errors import VirNucProError

SCHEMAS = Path(workflow.basedir) / "schemas"

try:
    validate_config(config, SCHEMAS / "config.schema.yaml")
    SAMPLES = read_samples(config["samples"], SCHEMAS / "samples.schema.yaml")
except VirNucProError as exc:
    sys.exit(f"configuration error: {exc}")
RESULTS = config["results"]
FRAGMENT_SIZE = config["fragment_size"]
MODELS = config["models"]["dir"]


def model_path(key):
    """A model setting as a path: kept as given when it names an existing file or an absolute path,
    otherwise looked up in models.dir (where the download rules put it)."""
    value = Path(config["models"][key])
    if value.is_absolute() or value.exists():
        return str(value)
    return str(Path(MODELS) / value)


def classifier_path():
    """The classifier file that classification reads: our converted safetensors file."""
    original = Path(model_path("classifier"))
    if original.suffix == ".safetensors":
        return str(original)
    return str(Path(MODELS) / f"{original.stem}.safetensors")


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


def shard_outputs(pattern):
    """Input function: `{RESULTS}/{sample}/<pattern>` for every shard the checkpoint wrote."""

    def inputs(wildcards):
        shard_dir = checkpoints.shard.get(sample=wildcards.sample).output[0]
        shards = sorted(p.stem for p in Path(shard_dir).glob("*.faa"))
        return [
            f"{RESULTS}/{wildcards.sample}/{pattern.format(shard=s)}" for s in shards
        ]

    return inputs
