"""The workflow used as a module, the way `snakedeploy deploy-workflow` deploys it: a new directory with
a Snakefile holding a `module` directive that points at this repository's workflow/Snakefile, and a
copy of config/. The default target runs there on the tiny models, then the report; every path the
workflow uses for its own files (schemas, scripts, envs, report captions) must resolve from there."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.workflow_runs import REPO, make_workdir

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

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


def test_deployed_module_runs_to_results_and_report(tmp_path, tiny_models):
    dest = deploy(tmp_path / "analysis", tiny_models)
    run_deployed(dest, "--cores", "2")
    assert_complete(dest)
    run_deployed(dest, "--report", "report.html")
    html = (dest / "report.html").read_text(errors="replace")
    for text in ("which parts of them, are viral", "Samples overview", "sequence_summary.tsv"):
        assert text in html, text
