"""The Snakemake workflow catalog's test set, .test/: `snakemake --directory .test --cores 2` runs the whole
workflow (models step, prepare, plan, embed, classify, summarize, overview) on the CPU with the tiny models
shipped in .test/models/. Run here on a copy, so the repository stays clean; the values in the tables are
checked against the inputs and against each other (no score is pinned: the tiny models are random)."""

import csv
import gzip
import hashlib
import math
import re
import shutil
import statistics
import subprocess
import sys

import pytest
import yaml

from tests.workflow_runs import REPO, snakemake

pytestmark = [pytest.mark.workflow]
DOT_TEST = REPO / ".test"
LEFT_BY_A_RUN = ("results", "resources", ".snakemake", "report.html", "*.checksum.json")  # .test/.gitignore
STEPS = {"note_model": 3, "prepare": 2, "plan": 1, "embed": 1, "list_receipts": 1, "classify": 2, "summarize": 2,
         "overview": 1}
FRAME = re.compile(r"(.+)_chunk_(\d+)([FR][123])")


def rows(path):
    """(header, rows as dicts) of a TSV file."""
    with open(path, newline="") as fh:
        table = list(csv.reader(fh, delimiter="\t"))
    return table[0], [dict(zip(table[0], r, strict=True)) for r in table[1:]]


def fasta(path):
    """[(id, sequence)] of a FASTA file, plain or gzip (read here, not with the package's reader)."""
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    records = []
    with opener(path, "rt") as fh:
        for line in fh:
            line = line.strip()
            if line.startswith(">"):
                records.append([line[1:].split()[0], ""])
            elif line:
                records[-1][1] += line
    return [(rid, seq) for rid, seq in records]


def model_files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and not p.match("*.checksum.json"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """.test/ copied without what an earlier run there left, then `snakemake --cores 2` in it."""
    work = tmp_path_factory.mktemp("dot_test") / ".test"
    shutil.copytree(DOT_TEST, work, ignore=shutil.ignore_patterns(*LEFT_BY_A_RUN))
    proc = snakemake(work, "--cores", "2")
    config = yaml.safe_load((work / "config" / "config.yaml").read_text())
    _, sheet = rows(work / config["samples"])
    return work, proc, config, {r["sample"]: work / r["path"] for r in sheet}


def test_every_step_runs_once_per_sample_or_once(run):
    work, proc, config, samples = run
    assert config["embed"]["device"] == "cpu" and len(samples) >= 2
    for step, n in STEPS.items():
        found = len(re.findall(rf"^(?:local)?(?:rule|checkpoint) {step}:$", proc.stdout + proc.stderr, re.M))
        assert found == n, (step, found)
    _, unfinished = rows(work / "results" / "unfinished.tsv")
    assert unfinished == []


def test_the_shipped_models_are_used_as_they_are(run):
    """The models come from .test/models (unverified, their own bytes); only the notes and the conversions
    go to models.dir, and nothing but checksum records is written beside the shipped models."""
    work, _, config, _ = run
    assert model_files(work / "models") == model_files(DOT_TEST / "models")
    _, models = rows(work / "results" / "models.tsv")
    shipped = [r for r in models if "converted" not in r["model"]]
    assert sorted(r["file"] for r in shipped) == sorted(
        str(work / "models" / f) for f in model_files(work / "models") if not f.name.endswith("regression.pt"))
    for r in shipped:
        assert r["verified"] == "unverified"
        assert r["sha256"] == hashlib.sha256((DOT_TEST / r["file"][len(str(work)) + 1:]).read_bytes()).hexdigest()
    converted = [r for r in models if "converted" in r["model"]]
    assert len(converted) == 2  # ESM-2 and the classifier
    for r in converted:
        assert r["file"].startswith(f"{work / config['models']['dir'] / 'converted'}/")


def test_every_input_record_has_one_row_with_its_length_and_status(run):
    work, _, config, samples = run
    size = config["fragment_size"]
    assert config["min_length"] is None  # the fragment size
    statuses = set()
    for sample, path in samples.items():
        records = fasta(path)
        _, summary = rows(work / "results" / sample / "sequence_summary.tsv")
        _, manifest = rows(work / "results" / sample / "prepare" / "sequences.tsv")
        assert [r["sequence_id"] for r in summary] == [rid for rid, _ in records]
        assert [r["sequence_id"] for r in manifest] == [rid for rid, _ in records]
        frames = fasta(work / "results" / sample / "prepare" / "frames.faa")
        frames = [FRAME.fullmatch(rid).groups() for rid, _ in frames]
        for (rid, seq), row, m in zip(records, summary, manifest, strict=True):
            assert int(row["length"]) == int(m["length"]) == len(seq), rid
            kept = [f for f in frames if f[0] == rid]
            assert int(m["kept_frames"]) == len(kept), rid
            if len(seq) < size:
                expected, fragments = "shorter_than_min_length", 0
            else:
                fragments = math.ceil(len(seq) / size)
                expected = "classified" if kept else "no_stop_free_frame"
            assert (row["status"], int(row["fragments"]), int(m["fragments"])) == (expected, fragments, fragments), rid
            assert int(row["fragments_with_frames"]) == len({int(n) for _, n, _ in kept}), rid
            assert all(1 <= int(n) <= fragments for _, n, _ in kept), rid
            assert (row["call"] == "no_call") == (expected != "classified"), rid
            statuses.add(expected)
        assert {f[0] for f in frames} <= {rid for rid, _ in records}
    assert statuses == {"shorter_than_min_length", "no_stop_free_frame", "classified"}  # the data shows all three


def test_predictions_match_the_frames_and_make_the_calls(run):
    """One prediction per frame of prepare/frames.faa, in order; fragment calls (the original's: max score2
    >= max score1 over the fragment's frames) and the sequence calls follow from them."""
    work, _, config, samples = run
    threshold = config["summary"]["viral_fraction_threshold"]
    calls = set()
    for sample, path in samples.items():
        out = work / "results" / sample
        header, predictions = rows(out / "prediction_results.tsv")
        assert header == ["Sequence_ID", "Prediction", "score1", "score2"]
        assert [r["Sequence_ID"] for r in predictions] == [rid for rid, _ in fasta(out / "prepare" / "frames.faa")]
        assert [r["Sequence_ID"] for r in predictions] == [rid for rid, _ in fasta(out / "prepare" / "frames.fna")]
        fragments = {}
        for r in predictions:
            s1, s2 = float(r["score1"]), float(r["score2"])
            assert abs(s1 + s2 - 1) < 1e-5 and r["Prediction"] == ("virus" if s2 > s1 else "others")
            seq, n, _ = FRAME.fullmatch(r["Sequence_ID"]).groups()
            best = fragments.setdefault(f"{seq}_chunk_{n}", [-1.0, -1.0])
            best[:] = max(best[0], s1), max(best[1], s2)
        _, fragment_calls = rows(out / "fragment_calls.tsv")
        assert [r["Modified_ID"] for r in fragment_calls] == list(fragments)
        for r in fragment_calls:
            s1, s2 = fragments[r["Modified_ID"]]
            assert r["Is_Virus"] == str(s2 >= s1)
            assert (float(r["max_score1"]), float(r["max_score2"])) == pytest.approx((s1, s2), abs=1e-6)
        _, summary = rows(out / "sequence_summary.tsv")
        for row in (r for r in summary if r["status"] == "classified"):
            mine = [f for f in fragment_calls if f["Modified_ID"].rsplit("_chunk_", 1)[0] == row["sequence_id"]]
            viral = sum(f["Is_Virus"] == "True" for f in mine)
            assert int(row["viral_fragments"]) == viral
            assert float(row["viral_fraction"]) == pytest.approx(viral / len(mine), abs=1e-6)
            assert float(row["max_virus_score"]) == pytest.approx(max(float(f["max_score2"]) for f in mine), abs=1e-6)
            assert row["call"] == ("viral" if viral and viral / len(mine) >= threshold else "not_viral")
            calls.add(row["call"])
        called = [r["sequence_id"] for r in summary if r["call"] == "viral"]
        assert [rid for rid, _ in fasta(out / "viral.fna")] == called
        _, regions = rows(out / "viral_regions.tsv")
        assert {r["sequence_id"] for r in regions} >= set(called)
    assert calls == {"viral", "not_viral"}  # the tiny classifier makes both calls


def test_the_overview_counts_every_sample(run):
    work, _, _, samples = run
    header, overview = rows(work / "results" / "overview.tsv")
    assert [r["sample"] for r in overview] == list(samples)
    together = []
    for row, (sample, path) in zip(overview, samples.items()):
        _, summary = rows(work / "results" / sample / "sequence_summary.tsv")
        _, regions = rows(work / "results" / sample / "viral_regions.tsv")
        records = fasta(path)
        classified = [r for r in summary if r["status"] == "classified"]
        viral = [r for r in summary if r["call"] == "viral"]
        assert row == {
            "sample": sample, "status": "finished", "sequences": str(len(records)),
            "bp": str(sum(len(s) for _, s in records)), "classified": str(len(classified)),
            "no_call": str(len(records) - len(classified)), "viral_sequences": str(len(viral)),
            "viral_sequence_bp": str(sum(int(r["length"]) for r in viral)), "viral_regions": str(len(regions)),
            "viral_region_bp": str(sum(int(r["length"]) for r in regions)),
            "median_virus_score": f"{statistics.median(float(r['max_virus_score']) for r in classified):.6f}",
        }, sample
        together += [{"sample": sample, **r} for r in summary]
    assert rows(work / "results" / "all_sequences.tsv")[1] == together


def test_make_models_reproduces_the_shipped_models(tmp_path):
    """.test/make_models.py, run again, writes the shipped files byte for byte: fixed seeds, and torch.save's
    zip archives, tokenizer.json and config.json hold no time stamps (with the torch and tokenizers that
    pyproject.toml pins; another version may write other bytes)."""
    subprocess.run([sys.executable, str(DOT_TEST / "make_models.py"), str(tmp_path)], check=True, cwd=REPO)
    shipped = model_files(DOT_TEST / "models")
    assert model_files(tmp_path) == shipped and len(shipped) == 6
    for name in shipped:
        assert (tmp_path / name).read_bytes() == (DOT_TEST / "models" / name).read_bytes(), name
    assert sum((tmp_path / name).stat().st_size for name in shipped) < 300_000
