"""The whole workflow on CPU with tiny models in their real on-disk formats: every stage, every output,
the report, shard-count invariance and retraining through the `train` target."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.test_workflow import REPO, make_workdir, snakemake
from virnucpro.seqio import read_fasta, read_sequences

pytestmark = [pytest.mark.workflow, pytest.mark.slow]
SAMPLES = {"sample_a": REPO / "example" / "sample_a.fa", "sample_b": REPO / "example" / "sample_b.fa.gz"}
TABLES = ["prediction_results.tsv", "fragment_calls.tsv", "sequence_summary.tsv", "viral.fna"]


def workdir(path, models, sheet=SAMPLES, **overrides):
    """A working directory running the tiny models on CPU; converted models go to path/models."""
    return make_workdir(
        path, sheet=sheet, **models, **{"models.dir": str(path / "models"), "embed.device": "cpu"},
        **overrides,
    )


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh, delimiter="\t"))


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory, tiny_models):
    """The default target with small shards (several per sample), then the report."""
    work = workdir(tmp_path_factory.mktemp("e2e"), tiny_models, **{"shards.tokens_per_shard": 3000})
    snakemake(work, "--cores", "2")
    snakemake(work, "--report", "report.html")
    return work


def test_every_stage_produces_its_outputs(sharded_run):
    for sample, src in SAMPLES.items():
        out = sharded_run / "results" / sample
        shards = sorted((out / "shards").glob("*.faa"))
        assert len(shards) >= 2
        for kind in ("embeddings/esm2", "embeddings/dnabert_s", "features"):
            assert sorted(p.stem for p in (out / kind).glob("*.h5")) == [p.stem for p in shards]
        frames = [i for i, _ in read_fasta(out / "prepare" / "frames.faa")]
        table = rows(out / "prediction_results.tsv")
        assert table[0] == ["Sequence_ID", "Prediction", "score1", "score2"]
        assert [r[0] for r in table[1:]] == frames
        for r in table[1:]:
            s1, s2 = float(r[2]), float(r[3])
            assert abs(s1 + s2 - 1) < 1e-5 and r[1] == ("virus" if s2 > s1 else "others")
        for plot in ("score_histogram.png", "score_along_sequences.png"):
            assert (out / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_input_sequence_appears_once_in_the_summary(sharded_run):
    for sample, src in SAMPLES.items():
        out = sharded_run / "results" / sample
        ids = [rid for rid, _ in read_sequences(src)]
        summary = rows(out / "sequence_summary.tsv")
        assert [r[0] for r in summary[1:]] == ids
        header = summary[0]
        called = {r[0] for r in summary[1:] if r[header.index("call")] == "viral"}
        viral = {rid for rid, _ in read_sequences(out / "viral.fna")} if called else set()
        assert viral == called


def test_report_holds_tables_and_plots(sharded_run):
    html = (sharded_run / "report.html").read_text(errors="replace")
    for name in ("sequence_summary.tsv", "fragment_calls.tsv", "score_histogram.png"):
        assert name in html


def test_results_do_not_depend_on_the_shard_count(sharded_run, tmp_path, tiny_models):
    work = workdir(tmp_path, tiny_models, **{"shards.tokens_per_shard": 10**9})
    snakemake(work, "--cores", "2")
    for sample in SAMPLES:
        assert len(list((work / "results" / sample / "shards").glob("*.faa"))) == 1
        for table in TABLES:
            a = (sharded_run / "results" / sample / table).read_bytes()
            assert (work / "results" / sample / table).read_bytes() == a, (sample, table)


def coding_fasta(path, codons, n, length, seed):
    rng = np.random.default_rng(seed)
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(f">{path.stem}_{i}\n{''.join(rng.choice(codons, length // 3))}\n")


def test_train_target_learns_two_compositions(tmp_path, tiny_models):
    """GC-rich and AT-rich stop-free coding sequences, through prepare, shards, both embeddings and
    the original training recipe: the held-out AUROC must reach 0.9."""
    gc_rich = ["GCC", "GGC", "CGC", "GCG", "CCG", "GGG", "CCC", "GAC", "CAG"]
    at_rich = ["AAT", "TTA", "ATA", "TAT", "AAA", "TTT", "ATT", "AAC", "TTG"]
    coding_fasta(tmp_path / "viral.fa", gc_rich, 60, 900, seed=1)
    coding_fasta(tmp_path / "other.fa", at_rich, 60, 900, seed=2)
    train = {"viral": [str(tmp_path / "viral.fa")], "other": [str(tmp_path / "other.fa")], "seed": 7}
    work = workdir(tmp_path / "work", tiny_models, fragment_size=300, train=train)
    snakemake(work, "--cores", "2", "train")
    metrics = dict(rows(work / "results" / "train" / "metrics.tsv")[1:])
    assert float(metrics["auroc"]) >= 0.9, metrics
    assert int(metrics["heldout_frames"]) >= 30
    assert (work / "results" / "train" / "300_model.safetensors").stat().st_size > 0
