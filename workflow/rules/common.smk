# Config and sample-sheet validation, output paths and small input functions.

import sys
from pathlib import Path

# The workflow's own code, virnucpro/ beside workflow/, is imported from this source tree: here, and in
# every script job, since Snakemake hands this process's sys.path on to the Python scripts it runs. The
# environments in envs/ hold only the third-party stack, so code and rules come from one commit wherever
# the workflow is used from (a clone, or a module of another workflow). Rules read from git (a github()
# module) have no tree on disk: there the package must be installed where Snakemake runs (README).
SOURCE_TREE = Path(str(workflow.current_basedir)).parents[1]
if (SOURCE_TREE / "virnucpro" / "__init__.py").is_file():
    sys.path.insert(0, str(SOURCE_TREE))

try:
    from virnucpro.config import read_samples, training_sets, validate_config
    from virnucpro.errors import VirNucProError
except ModuleNotFoundError as exc:
    if exc.name != "virnucpro":
        raise
    sys.exit(
        f"configuration error: the virnucpro package is neither beside the rules ({SOURCE_TREE}) "
        "nor installed where Snakemake runs (README: Deploy with snakedeploy)"
    )

try:
    validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))
    SAMPLES = read_samples(
        config["samples"], workflow.source_path("../schemas/samples.schema.yaml")
    )
    TRAIN_SETS = training_sets(config["train"])
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
    """Input file of a sample, or of a training set (named train-viral-N / train-other-N)."""
    if wildcards.sample in SAMPLES:
        return SAMPLES[wildcards.sample]
    return TRAIN_SETS[wildcards.sample]


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
