"""The workflow through SLURM with the project's profile: every job is submitted with sbatch, and the
result tables equal those of a local run. CI starts a one-node cluster (.ci/slurm.sh)."""

import re
import subprocess

import pytest

from tests.workflow_runs import REPO, SAMPLES, TABLES, snakemake, tiny_workdir

pytestmark = [pytest.mark.slurm, pytest.mark.workflow, pytest.mark.slow]
SMALL_JOBS = {"resources.gpu_mem_mb": 1000, "resources.gpu_cpus": 1}


def test_slurm_run_equals_local_run(tmp_path, tiny_models):
    local = tiny_workdir(tmp_path / "local", tiny_models, **SMALL_JOBS)
    snakemake(local, "--cores", "2")

    cluster = tiny_workdir(tmp_path / "slurm", tiny_models, **SMALL_JOBS)
    proc = snakemake(
        cluster, "--profile", str(REPO / "profiles" / "slurm"),
        "--slurm-status-command", "squeue",  # no accounting database on the test cluster
        "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2",
    )
    log = proc.stdout + proc.stderr
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log))
    # per sample prepare, classify and summarize, and the one pooled shard's embed (plan and model
    # conversions are local rules)
    assert len(submitted) == len(SAMPLES) * 3 + 1, log
    for slurm_id in submitted.values():
        record = subprocess.run(["scontrol", "show", "job", slurm_id], capture_output=True, text=True)
        assert "JobState=COMPLETED" in record.stdout, record.stdout + record.stderr
    assert subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip() == ""

    for sample in SAMPLES:
        for table in TABLES:
            ours = (cluster / "results" / sample / table).read_bytes()
            assert ours == (local / "results" / sample / table).read_bytes(), (sample, table)
