"""The whole workflow on CPU with tiny models in their real on-disk formats: every stage, every output,
the report, shard-count invariance, the embedding store across reruns, added samples and projects, and
retraining through the `train` target."""

import csv
import json
import re
import shutil

import numpy as np
import pytest

from tests.test_workflow import REPO, make_workdir, snakemake
from virnucpro.seqio import read_fasta, read_sequences

pytestmark = [pytest.mark.workflow, pytest.mark.slow]
SAMPLES = {"sample_a": REPO / "example" / "sample_a.fa", "sample_b": REPO / "example" / "sample_b.fa.gz"}
TABLES = ["prediction_results.tsv", "fragment_calls.tsv", "sequence_summary.tsv", "viral.fna"]


def workdir(path, models, sheet=SAMPLES, **overrides):
    """A working directory running the tiny models on CPU; converted models go to path/models, the
    embedding store is path/resources/embeddings (the default, relative to the working directory)."""
    return make_workdir(
        path, sheet=sheet, **models, **{"models.dir": str(path / "models"), "embed.device": "cpu", **overrides},
    )


def ran(proc, rule):
    """How many jobs of `rule` a snakemake run started."""
    return len(re.findall(rf"^(?:local)?rule {rule}:$", proc.stdout + proc.stderr, re.M))


def plan_of(work, batch="samples"):
    return json.loads((work / "results" / "embedding" / batch / "plan" / "plan.json").read_text())


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh, delimiter="\t"))


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory, tiny_models):
    """The default target with small shards (several per sample), then the report."""
    work = workdir(tmp_path_factory.mktemp("e2e"), tiny_models, **{"shards.tokens_per_shard": 6000})
    snakemake(work, "--cores", "2")
    snakemake(work, "--report", "report.html")
    return work


def test_every_stage_produces_its_outputs(sharded_run):
    plan = plan_of(sharded_run)
    names = sorted(s["name"] for s in plan["shards"])
    assert len(names) >= 2 and plan["frames_to_embed"] == plan["distinct_frames"]  # a fresh store
    done = sharded_run / "results" / "embedding" / "samples" / "done"
    assert sorted(p.stem for p in done.glob("*.json")) == names
    store = sharded_run / "resources" / "embeddings"
    for ns in plan["namespaces"].values():
        assert sorted(p.stem for p in (store / f"{ns['encoder']}-{ns['id']}").glob("*.h5")) == names
    for sample, src in SAMPLES.items():
        out = sharded_run / "results" / sample
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
    """One shard pooling both samples, against several shards: the same bytes in every table."""
    work = workdir(tmp_path, tiny_models, **{"shards.tokens_per_shard": 10**9})
    snakemake(work, "--cores", "2")
    assert len(plan_of(work)["shards"]) == 1
    for sample in SAMPLES:
        for table in TABLES:
            a = (sharded_run / "results" / sample / table).read_bytes()
            assert (work / "results" / sample / table).read_bytes() == a, (sample, table)


def test_an_added_sample_embeds_only_its_new_frames(sharded_run, tmp_path):
    """A copy of the finished run gets a third sample: half of sample_a's records again (under other
    names) and two new records. Only the new records' frames are embedded; the other samples' tables
    keep their bytes."""
    work = tmp_path / "work"
    shutil.copytree(sharded_run, work, symlinks=True)
    records = list(read_sequences(SAMPLES["sample_a"]))
    rng = np.random.default_rng(8)
    sense = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in ("TAA", "TAG", "TGA")]
    new = ["".join(rng.choice(sense, 300)) for _ in range(2)]  # stop-free in frame F1: frames are kept
    text = "".join(f">again_{rid}\n{seq.decode()}\n" for rid, seq in records[::2])
    text += "".join(f">new_{i}\n{seq}\n" for i, seq in enumerate(new))
    (tmp_path / "third.fa").write_text(text)
    with open(work / "config" / "samples.tsv", "a") as fh:
        fh.write(f"third\t{tmp_path / 'third.fa'}\n")
    before = {(s, t): (work / "results" / s / t).read_bytes() for s in SAMPLES for t in TABLES}
    proc = snakemake(work, "--cores", "2")
    plan = plan_of(work)
    third_frames = dict(read_fasta(work / "results" / "third" / "prepare" / "frames.faa"))
    new_frames = [i for i in third_frames if i.startswith("new_")]
    assert len(new_frames) > 0 and plan["frames_to_embed"] == len(new_frames)
    assert sum(s["esm2"] for s in plan["shards"]) == len(new_frames)
    assert ran(proc, "embed") == len(plan["shards"])
    for key, data in before.items():
        assert (work / "results" / key[0] / key[1]).read_bytes() == data, key
    again = rows(work / "results" / "third" / "prediction_results.tsv")
    first = {r[0]: r for r in rows(work / "results" / "sample_a" / "prediction_results.tsv")[1:]}
    for r in again[1:]:
        if r[0].startswith("again_"):  # the same frame content: the same scores
            assert first[r[0].removeprefix("again_")][1:] == r[1:]


def test_a_store_shared_by_two_projects_embeds_nothing_twice(sharded_run, tmp_path, tiny_models):
    store = sharded_run / "resources" / "embeddings"
    work = workdir(tmp_path, tiny_models, **{"embed.store": str(store), "shards.tokens_per_shard": 777})
    proc = snakemake(work, "--cores", "2")
    assert plan_of(work)["shards"] == [] and ran(proc, "embed") == 0 and ran(proc, "summarize") == 2
    for sample in SAMPLES:
        for table in TABLES:
            assert (work / "results" / sample / table).read_bytes() == \
                (sharded_run / "results" / sample / table).read_bytes(), (sample, table)


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
