"""Workflow runs for tests and benchmarks: the repository, `snakemake` in a working directory, and
working directories made from the default config with overrides."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")]


def snakemake(workdir, *args, check=True):
    proc = subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_workdir(path, sheet=None, **overrides):
    """A working directory with config/config.yaml (the default, with `overrides`) and a sample sheet."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    sheet = sheet or {
        "sample_a": REPO / "example" / "sample_a.fa",
        "sample_b": REPO / "example" / "sample_b.fa.gz",
    }
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
