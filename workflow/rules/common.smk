# Config and sample-sheet validation, output paths and small input functions.

import sys
from pathlib import Path

from virnucpro.config import read_samples, training_sets, validate_config
from virnucpro.errors import VirNucProError

SCHEMAS = Path(workflow.basedir) / "schemas"

try:
    validate_config(config, SCHEMAS / "config.schema.yaml")
    SAMPLES = read_samples(config["samples"], SCHEMAS / "samples.schema.yaml")
    TRAIN_SETS = training_sets(config["train"])
except VirNucProError as exc:
    sys.exit(f"configuration error: {exc}")
RESULTS = config["results"]
FRAGMENT_SIZE = config["fragment_size"]
MODELS = config["models"]["dir"]
RUN_FILES = ["overview.tsv", "models.tsv", "parameters.tsv"]  # whole-run files


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
    """Input file of a sample, or of a training set (named train-viral-N / train-other-N)."""
    if wildcards.sample in SAMPLES:
        return SAMPLES[wildcards.sample]
    return TRAIN_SETS[wildcards.sample]


def all_results():
    names = [
        "prediction_results.tsv",
        "fragment_calls.tsv",
        "sequence_summary.tsv",
        "viral_regions.tsv",
        "viral.fna",
        "tracks/virus_score.bedGraph",
        "tracks/viral_regions.bed",
        "prediction_results.txt",
        "prediction_results_highestscore.csv",
        "plots/score_histogram.png",
        "plots/score_along_sequences.png",
        "report/sequence_summary.html",
        "report/viral_regions.html",
    ]
    run = [f"{RESULTS}/{name}" for name in RUN_FILES]
    return [f"{RESULTS}/{s}/{name}" for s in SAMPLES for name in names] + run


def run_settings():
    """Every setting that shapes the results, as `section.name` -> text, for the report."""
    flat = {}
    for key, value in config.items():
        if key == "resources":  # where jobs run, not what they compute
            continue
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for name, v in items:
            flat[key if name is None else f"{key}.{name}"] = str(v)
    return flat


def sample_shard_outputs(sample, pattern):
    """`{RESULTS}/{sample}/<pattern>` for every shard the checkpoint wrote for `sample`."""
    shard_dir = checkpoints.shard.get(sample=sample).output[0]
    shards = sorted(p.stem for p in Path(shard_dir).glob("*.faa"))
    return [f"{RESULTS}/{sample}/{pattern.format(shard=s)}" for s in shards]


def shard_outputs(pattern):
    """Input function: `sample_shard_outputs` for the job's sample."""
    return lambda wildcards: sample_shard_outputs(wildcards.sample, pattern)


def training_features(label):
    """Input function: feature shards of every training set with `label` (viral or other)."""
    names = [n for n in TRAIN_SETS if n.startswith(f"train-{label}-")]
    pattern = "features/{shard}.h5"
    return lambda wildcards: [
        f for n in names for f in sample_shard_outputs(n, pattern)
    ]
