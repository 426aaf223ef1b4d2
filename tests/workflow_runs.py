"""Workflow runs for tests and benchmarks: the repository, `snakemake` in a working directory,
working directories made from the default config with overrides (and ones running the tiny models on
CPU), what to read back from a run (its per-sample tables, their rows, its one error line), and the
workflow deployed as a module the way `snakedeploy deploy-workflow` leaves it."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")]
# the bundled example: the sample sheet of a working directory unless one is given
SAMPLES = {"sample_a": REPO / "example" / "sample_a.fa", "sample_b": REPO / "example" / "sample_b.fa.gz"}
# every table a sample's results hold
TABLES = [
    "prediction_results.tsv", "fragment_calls.tsv", "sequence_summary.tsv", "viral.fna", "viral_regions.tsv",
    "tracks/virus_score.bedGraph", "tracks/viral_regions.bed", "prediction_results.txt",
    "prediction_results_highestscore.csv", "viral_regions.fna", "viral_regions.gff3",
]


def snakemake(workdir, *args, check=True):
    proc = subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_workdir(path, sheet=None, **overrides):
    """A working directory with config/config.yaml (the default, with `overrides`) and a sample sheet
    (`sheet`, else SAMPLES)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    sheet = sheet or SAMPLES
    (path / "config").mkdir(parents=True)
    text = "sample\tpath\n" + "".join(f"{s}\t{p}\n" for s, p in sheet.items())
    (path / "config" / "samples.tsv").write_text(text)
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if name:
            config[section][name] = value
        else:
            config[section] = value
    (path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return path


def tiny_workdir(path, models=None, sheet=None, **overrides):
    """`make_workdir` at `path` (made if absent); with `models` (the `tiny_models` fixture's overrides),
    the tiny models on CPU: converted models go to path/models, the embedding store is
    path/resources/embeddings (the default, relative to the working directory)."""
    path.mkdir(parents=True, exist_ok=True)
    if models is not None:
        overrides = {**models, "models.dir": str(path / "models"), "embed.device": "cpu", **overrides}
    return make_workdir(path, sheet=sheet, **overrides)


def rows(path):
    """The rows of a tab-separated table, header included."""
    with open(path, newline="") as fh:
        return list(csv.reader(fh, delimiter="\t"))


def one_error_line(text, *needles):
    """The single error line of `text`; it must hold every needle, and no traceback may appear."""
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert str(needle) in errors[0], (needle, errors[0])
    return errors[0]


# snakedeploy's template (snakedeploy/templates/use_module.smk.jinja), with a local path as the source
DEPLOYED_SNAKEFILE = """\
from snakemake.utils import min_version


min_version("6.10.0")


configfile: "config/config.yaml"


# declare {repo} as a module
module virnucpro:
    snakefile:
        "{snakefile}"
    config:
        config


# use all rules from {repo}
use rule * from virnucpro
"""


def deploy(dest, models, **overrides):
    """`dest` as snakedeploy leaves it, its config edited as a user would: one sample (absolute path),
    the tiny models, CPU embeddings, converted models under dest/models, one shard per sample."""
    make_workdir(
        dest,
        sheet={"sample_a": REPO / "example" / "sample_a.fa"},
        **models,
        **{"models.dir": "models", "embed.device": "cpu", "shards.tokens_per_shard": 10**9},
        **overrides,
    )
    shutil.copytree(REPO / "config", dest / "config", dirs_exist_ok=True, copy_function=_copy_if_absent)
    (dest / "workflow").mkdir()
    (dest / "workflow" / "Snakefile").write_text(
        DEPLOYED_SNAKEFILE.format(repo=REPO, snakefile=REPO / "workflow" / "Snakefile")
    )
    return dest


def _copy_if_absent(src, dst):
    if not os.path.exists(dst):
        shutil.copy2(src, dst)


def run_deployed(dest, *args, python=sys.executable, env=None):
    """snakemake in the deployment directory, as a user runs it there (no --snakefile, no PYTHONPATH)."""
    env = {k: v for k, v in (env or os.environ).items() if k != "PYTHONPATH"}
    proc = subprocess.run([python, "-m", "snakemake", *args], cwd=dest, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_complete(dest, *args, python=sys.executable, env=None):
    """Nothing is left to do for the default target (run with `args`), and the sequence summary covers
    the input."""
    dry = run_deployed(dest, "-n", *args, python=python, env=env)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout + dry.stderr
    summary = (dest / "results" / "sample_a" / "sequence_summary.tsv").read_text().splitlines()
    n_input = sum(line.startswith(">") for line in (REPO / "example" / "sample_a.fa").read_text().splitlines())
    assert len(summary) == 1 + n_input
