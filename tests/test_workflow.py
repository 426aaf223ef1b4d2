"""The Snakemake workflow: formatting, lint, the full DAG, config validation and real runs."""

import re
import subprocess
import sys

import pytest

from tests.workflow_runs import REPO, SNAKEMAKE, make_workdir, snakemake
from virnucpro.steps.prepare import cut_and_translate


def test_snakefmt_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", str(REPO / "workflow")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_lint_clean():
    proc = subprocess.run([*SNAKEMAKE, "--lint"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def job_counts(proc):
    counts = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def test_front_end_then_full_dag(tmp_path, tiny_models):
    """A fresh dry run shows the front end, the plan checkpoint and the per-sample stages after it; once
    the plan has run, the dry run shows one embedding job per pooled shard."""
    models = {**tiny_models, "models.dir": str(tmp_path / "models"), "embed.device": "cpu"}
    work = make_workdir(tmp_path, **models, **{"shards.tokens_per_shard": 4_000})
    fresh = job_counts(snakemake(work, "-n", "--quiet", "rules"))
    assert {"prepare": 2, "plan": 1, "classify": 2, "summarize": 2}.items() <= fresh.items()

    snakemake(work, "--cores", "2", "results/embedding/samples/plan")
    plan = work / "results" / "embedding" / "samples" / "plan"
    for sample, src in (("sample_a", "sample_a.fa"), ("sample_b", "sample_b.fa.gz")):
        ref = tmp_path / f"ref_{sample}"
        cut_and_translate(REPO / "example" / src, 500, ref / "f.fna", ref / "f.faa", manifest=ref / "m.tsv")
        out = work / "results" / sample
        assert (out / "prepare" / "frames.fna").read_bytes() == (ref / "f.fna").read_bytes()
        assert (out / "prepare" / "frames.faa").read_bytes() == (ref / "f.faa").read_bytes()
        assert (out / "prepare" / "sequences.tsv").read_bytes() == (ref / "m.tsv").read_bytes()
        assert (out / "logs" / "prepare.log").exists()
        assert (plan.parent / "members" / f"{sample}.json").is_file()  # beside the plan
    shards = sorted((plan / "shards").glob("*.faa"))
    assert len(shards) >= 2

    full = job_counts(snakemake(work, "-n", "--quiet", "rules"))
    assert full["embed"] == len(shards), full
    for rule in ("classify", "summarize"):
        assert full[rule] == 2, (rule, full)
    assert full["note_model"] == 1  # the classifier's: the encoders' were made before the plan, which reads them


def test_a_float8_run_checks_float8_before_its_plan(tmp_path, tiny_models):
    """With embed.precision float8 the plan of the samples waits for the float8 check, whose table is a
    result of the run; the models step makes the float8 file (its note rule has the setting)."""
    models = {**tiny_models, "models.dir": str(tmp_path / "models"), "embed.device": "cuda"}
    work = make_workdir(tmp_path, **models, **{"embed.precision": "float8"})
    proc = snakemake(work, "-n", "--quiet", "rules")
    assert {"check_float8": 1, "plan": 1, "note_model": 3}.items() <= job_counts(proc).items()
    graph = snakemake(work, "--rulegraph").stdout
    ids = {name: i for i, name in re.findall(r'(\d+)\[label = "(\w+)"', graph)}
    assert f"{ids['check_float8']} -> {ids['plan']}" in graph
    plain = make_workdir(tmp_path / "plain", **models)
    assert "check_float8" not in job_counts(snakemake(plain, "-n", "--quiet", "rules"))


def test_a_float8_run_without_a_gpu_here_stops_before_any_job(tmp_path, tiny_models, monkeypatch):
    """embed.device auto on a machine that sees no GPU would embed on the CPU, where float8 cannot run:
    the run stops when it starts (onstart), before any job, with one line."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    models = {**tiny_models, "models.dir": str(tmp_path / "models"), "embed.device": "auto"}
    work = make_workdir(tmp_path, **models, **{"embed.precision": "float8"})
    proc = snakemake(work, "--cores", "1", check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert errors == ["configuration error: embed.precision float8 runs on CUDA GPUs only, and no GPU is visible "
                      "here (embed.device auto would embed on the CPU)"], proc.stderr
    assert not (work / "results").exists() and not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"fragment_size": 400}, "fragment_size: 400 is not one of [300, 500]"),
        ({"min_length": -1}, "min_length: -1 is less than the minimum of 0"),
        ({"embed.device": "tpu"}, "embed.device: 'tpu' is not one of"),
        ({"embed.precision": "float8", "embed.device": "cpu"},
         "embed.precision float8 runs on CUDA GPUs only, but embed.device is cpu"),
        ({"embed.precision": "bfloat16"}, "embed.precision: 'bfloat16' is not one of ['float16', 'float8']"),
        ({"samples": "config/absent.tsv"}, "sample sheet config/absent.tsv does not exist"),
        ({"models.esm2": "/absent/esm2_t36_3B_UR50D.pt"},
         "config: models.esm2: /absent/esm2_t36_3B_UR50D.pt does not exist, and it is not a model that the models "
         "step downloads into models.dir"),
        ({"models.dnabert_s": "my-dnabert"}, "config: models.dnabert_s: resources/models/my-dnabert does not exist"),
        ({"models.classifier": "/absent/500_model.pth"}, "config: models.classifier: /absent/500_model.pth does not"),
        ({"models.classifier": "example/sample_a.fa"}, "config: models.classifier: example"),
    ],
)
def test_bad_config_stops_with_one_line(tmp_path, change, expected):
    if change.get("models.classifier") == "example/sample_a.fa":  # an existing folder where a file belongs
        change = {"models.classifier": str(REPO / "example")}
        expected = f"config: models.classifier: {REPO / 'example'} is not a file"
    proc = snakemake(make_workdir(tmp_path, **change), "-n", check=False)
    assert proc.returncode != 0
    errors = [l for l in proc.stderr.splitlines() if "error" in l.lower()]
    assert len(errors) == 1 and expected in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "sheet,expected",
    [
        ("sample\tpath\nbad name;rm\t{fa}\n", "line 2: sample: 'bad name;rm' does not match"),
        ("sample\tpath\na\t{fa}\na\t{fa}\n", "line 3: duplicate sample 'a'"),
        ("sample\tfile\na\t{fa}\n", "lacks column(s): path"),
        ("sample\tpath\na\t/nonexistent/x.fa\n", "input /nonexistent/x.fa does not exist"),
        ("sample\tpath\na\t{dir}\n", "input {dir} is a directory, not a FASTA or FASTQ file"),
        ("sample\tpath\nsample_a\t{fa}\nSample_A\t{fa}\n",
         "line 3: sample 'Sample_A' differs from 'sample_a' only in case"),
    ],
)
def test_bad_sample_sheet_stops_with_one_line(tmp_path, sheet, expected):
    work = make_workdir(tmp_path)
    paths = {"fa": REPO / "example" / "sample_a.fa", "dir": REPO / "example"}
    (work / "config" / "samples.tsv").write_text(sheet.format(**paths))
    proc = snakemake(work, "-n", check=False)
    assert proc.returncode != 0
    errors = [l for l in proc.stderr.splitlines() if "error" in l.lower()]
    assert len(errors) == 1 and expected.format(**paths) in errors[0], proc.stderr


@pytest.mark.parametrize(
    "setting,expected",
    [
        ("embed={device: tpu}", "config: embed.device: 'tpu' is not one of ['auto', 'cuda', 'cpu']"),
        ("fragment_size=abc", "config: fragment_size: 'abc' is not of type 'integer'"),
        ("summary={viral_fraction_threshold: 2}", "summary.viral_fraction_threshold: 2.0 is greater than the maximum"),
        ("shards={tokens_per_shard: lots}", "shards.tokens_per_shard: 'lots' is not of type 'integer'"),
    ],
)
def test_a_bad_value_on_the_command_line_is_one_line(tmp_path, setting, expected):
    """`--config` with a nested setting (YAML, merged into config.yaml's section) or a plain one."""
    proc = snakemake(make_workdir(tmp_path), "-n", "--config", setting, check=False)
    errors = [l for l in proc.stderr.splitlines() if "error" in l.lower()]
    assert proc.returncode != 0 and len(errors) == 1 and expected in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_nested_numbers_on_the_command_line_are_numbers(tmp_path):
    """Snakemake reads nested `--config` values as text; the workflow takes the schema's types."""
    proc = snakemake(make_workdir(tmp_path), "-n", "--config",
                     "summary={viral_fraction_threshold: 0.7, plot_top_sequences: 5}", "fragment_size=300",
                     "models={classifier: 300_model.pth}")  # the classifier must be for that size
    assert "configuration error" not in proc.stderr
