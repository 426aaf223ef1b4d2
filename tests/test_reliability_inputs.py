"""Reliability through the real workflow: the bad-input corpus in tests/data/bad, frame accounting
between embedding, merging and classification, and a results directory that fills up.

Every failure must give exit status non-zero, exactly one error line naming the file and the problem
(on snakemake's stderr for config and sample-sheet errors, in the failing job's log for data and model
errors), and leave nothing under a final output name, nor any `.tmp-*` file, that a rerun could take for
finished work.
"""

import filecmp
import html
import json
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.workflow_runs import REPO, one_error_line, snakemake, tiny_workdir
from virnucpro.io.seqio import read_fasta
from virnucpro.io.store import (
    Namespace,
    frame_key,
    read_keys,
    store_files,
    write_store_file,
)

pytestmark = [pytest.mark.workflow]
BAD = REPO / "tests" / "data" / "bad"
SAMPLE = "s"
METACHAR = BAD / "shell_metachar_ids.fa"
FRONT_END = [f"results/{SAMPLE}/prepare/{n}" for n in ("frames.fna", "frames.faa", "sequences.tsv")]
TABLES = ["prediction_results.tsv", "fragment_calls.tsv", "sequence_summary.tsv", "viral.fna"]


def workdir(path, models=None, sheet=None, **overrides):
    """A working directory for sample `s` (or `sheet`); with `models`, tiny models on CPU."""
    return tiny_workdir(path, models, sheet=sheet or {SAMPLE: METACHAR}, **overrides)


def leftovers(work):
    """Temporary names anywhere under the working directory (outside .snakemake)."""
    return [p for p in work.rglob(".tmp-*") if ".snakemake" not in p.parts]


def assert_nothing_looks_finished(work, *finals):
    for final in finals:
        assert not list(work.glob(final)), f"{final} exists after a failed step"
    assert leftovers(work) == [], leftovers(work)


# ------------------------------------------------------------------------------------ data errors

DATA_CASES = {
    "empty.fa": "no sequences (empty input)",
    "zero_bytes.fa": "no sequences (empty input)",
    "header_only.fa": "record 'only_a_header': record has no sequence",
    "fastq_bad_quality.fq": "record 'read2': quality length 5 differs from sequence length 12",
    "truncated.fa.gz": "unreadable compressed data",
    "binary.fa": "not FASTA or FASTQ",
    "non_nucleotide.fa": "record 'bad_2': character '1' at position 9 is not a nucleotide code",
    "duplicate_ids.fa": "record 'dup': duplicate sequence id",
}


GENERATED_CASES = {  # written by the fixture below: too large or too odd to keep in the repository
    "no_line_breaks.fa": "record 'huge': record is longer than 1,000,000 bp, the longest accepted",
    "zstd.fa.zst": "zstd-compressed input is not supported",
}
MAX_RECORD_BP = 1_000_000


def _sample_name(file_name):
    return file_name.replace(".", "_")


def _generated(folder):
    folder.mkdir()
    with open(folder / "no_line_breaks.fa", "wb") as fh:  # 8 MB without one line break
        fh.write(b">huge a header\n")
        for _ in range(8):
            fh.write(b"ACGT" * (1 << 18))
    (folder / "zstd.fa.zst").write_bytes(b"\x28\xb5\x2f\xfd" + bytes(64))
    return {name: folder / name for name in GENERATED_CASES}


@pytest.fixture(scope="module")
def bad_data_run(tmp_path_factory, tiny_models):
    """One sample per bad file and one good sample, run to the end as a user runs the workflow (the
    default profile keeps going past a failed job)."""
    root = tmp_path_factory.mktemp("bad_data")
    files = {**{name: BAD / name for name in DATA_CASES}, **_generated(root / "generated")}
    sheet = {_sample_name(name): path for name, path in files.items()}
    sheet = {**sheet, "good": METACHAR, "good_a": REPO / "example" / "sample_a.fa"}
    work = workdir(root / "work", tiny_models, sheet=sheet, max_record_bp=MAX_RECORD_BP)
    proc = snakemake(work, "--cores", "2", check=False)
    return work, proc, files


@pytest.mark.parametrize("name", sorted([*DATA_CASES, *GENERATED_CASES]))
def test_bad_sequence_file_stops_its_sample_with_one_line(bad_data_run, name):
    """The sample's front end records one line naming file, record and problem; the sample gets no
    result (its classification fails with that line), and the run ends non-zero listing it."""
    work, proc, files = bad_data_run
    expected = {**DATA_CASES, **GENERATED_CASES}[name]
    assert proc.returncode != 0
    sample = _sample_name(name)
    log = (work / "results" / sample / "logs" / "prepare.log").read_text()
    one_error_line(log, f"prepare: {files[name]}: ", expected)
    assert f"prepare: {files[name]}: " in proc.stderr  # snakemake's output shows the same line
    status = json.loads((work / "results" / sample / "prepare" / "status.json").read_text())
    assert status["ok"] is False and expected in status["error"]
    for frames in ("frames.fna", "frames.faa", "sequences.tsv"):  # recorded empty, as a sample without frames
        assert (work / "results" / sample / "prepare" / frames).read_bytes() == b""
    one_error_line((work / "results" / sample / "logs" / "classify.log").read_text(),
                   f"'{sample}' was left out of the embedding plan: its front end failed", expected)
    assert_nothing_looks_finished(work, *(f"results/{sample}/{t}" for t in TABLES))
    summary = proc.stderr[proc.stderr.index("sample(s) did not finish:"):]
    assert f"  {sample}: {files[name]}: " in summary and expected in summary


def test_the_run_ends_with_the_list_of_samples_that_failed(bad_data_run):
    work, proc, files = bad_data_run
    n = len(files)
    assert f"{n} of {n + 2} sample(s) did not finish:" in proc.stderr
    for table in TABLES:  # the good samples went all the way
        for good in ("good", "good_a"):
            assert (work / "results" / good / table).is_file(), (good, table)


def test_the_samples_that_finished_get_the_overview_and_the_report_lists_the_others(bad_data_run):
    """The run files are made for the samples that finished, beside the bad ones: overview.tsv counts the
    good samples from their own tables and gives each bad one the error its front end recorded, and so
    does unfinished.tsv; `snakemake --report` succeeds and its page names every bad sample and why."""
    from virnucpro.steps.overview import sample_counts

    work, proc, files = bad_data_run
    results = work / "results"
    assert proc.returncode != 0
    reasons = {_sample_name(name): json.loads((results / _sample_name(name) / "prepare" / "status.json").read_text())
               ["error"] for name in files}
    overview = [line.split("\t") for line in (results / "overview.tsv").read_text().splitlines()]
    assert overview[0][:2] == ["sample", "status"] and len(overview) == 1 + len(files) + 2
    by_sample = {row[0]: row[1:] for row in overview[1:]}
    for good in ("good", "good_a"):
        counts = sample_counts(results / good / "sequence_summary.tsv", results / good / "viral_regions.tsv")
        assert by_sample[good] == ["finished", *map(str, counts)], good
    assert by_sample["good_a"][1:3] == ["12", "32296"]  # sequences and bp of example/sample_a.fa
    for sample, reason in reasons.items():
        assert by_sample[sample] == [reason] + [""] * 9, sample
    unfinished = (results / "unfinished.tsv").read_text().splitlines()
    assert unfinished[0] == "sample\treason" and sorted(unfinished[1:]) == sorted(f"{s}\t{r}" for s, r in reasons.items())
    report = snakemake(work, "--report", "report.html", check=False)
    assert report.returncode == 0, report.stdout + report.stderr
    page = (work / "report.html").read_text()
    assert "Samples that did not finish" in page
    for sample, reason in reasons.items():  # on the front page and in the list's caption, as text
        cells = json.dumps(f"<td>{sample}</td><td>{html.escape(reason)}</td>")[1:-1]  # as the page embeds it
        assert page.count(cells) >= 2, (sample, reason)


def test_good_sample_beside_bad_ones_finishes_its_front_end(bad_data_run):
    work, _, _ = bad_data_run
    manifest = (work / "results" / "good" / "prepare" / "sequences.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in manifest[1:]] == ["a;rm", "`touch", "plain"]


def test_shell_metacharacters_in_ids_are_just_ids(tmp_path, tiny_models):
    """Headers full of shell syntax are valid input: the first word is the id, nothing is executed,
    and the whole workflow finishes with those ids in its tables (every record cut, `min_length: 0`:
    '`touch' is 450 bp, shorter than the 500 bp fragments)."""
    work = workdir(tmp_path / "work", tiny_models, min_length=0)
    snakemake(work, "--cores", "2")
    ids = ["a;rm", "`touch", "plain"]
    summary = (work / "results" / SAMPLE / "sequence_summary.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in summary[1:]] == ids
    assert all(row.split("\t")[8] == "classified" for row in summary[1:]), summary
    predictions = (work / "results" / SAMPLE / "prediction_results.tsv").read_text().splitlines()
    assert len(predictions) == 1 + 12 and predictions[1].startswith("a;rm_chunk_1F1\t")
    for pwned in ("pwned", "pwned2", "pwned3", "x"):
        assert not (work / pwned).exists() and not (REPO / pwned).exists() and not Path(pwned).exists()
    assert leftovers(work) == []


def test_a_record_shorter_than_min_length_gets_its_row_and_nothing_else(tmp_path, tiny_models):
    """A 3 bp and a 499 bp record beside two 500+ bp ones, default config (min_length: the 500 bp
    fragment size): both short records get a summary row with status shorter_than_min_length and call
    no_call, and appear in no frame, score, viral FASTA, region or track; the others are classified."""
    rng = np.random.default_rng(5)
    sense = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in ("TAA", "TAG", "TGA")]
    coding = lambda n: "".join(rng.choice(sense, n // 3 + 1))[:n]  # noqa: E731
    records = {"tiny": "AAA", "first": coding(1200), "almost": coding(499), "last": coding(500)}
    (tmp_path / "in.fa").write_text("".join(f">{i} d\n{s}\n" for i, s in records.items()))
    work = workdir(tmp_path / "work", tiny_models, sheet={SAMPLE: tmp_path / "in.fa"})
    snakemake(work, "--cores", "2")
    out = work / "results" / SAMPLE
    summary = [row.split("\t") for row in (out / "sequence_summary.tsv").read_text().splitlines()[1:]]
    assert [(r[0], r[2], r[8]) for r in summary] == [
        ("tiny", "0", "shorter_than_min_length"), ("first", "3", "classified"),
        ("almost", "0", "shorter_than_min_length"), ("last", "1", "classified")]
    assert [r[9] for r in summary if r[0] in ("tiny", "almost")] == ["no_call", "no_call"]
    assert json.loads((out / "prepare" / "status.json").read_text())["shorter_than_min_length"] == 2
    for name in ("prepare/frames.fna", "prediction_results.tsv", "fragment_calls.tsv", "viral.fna",
                 "viral_regions.tsv", "tracks/virus_score.bedGraph", "tracks/viral_regions.bed"):
        text = (out / name).read_text()
        assert not any(line.lstrip(">").startswith(("tiny", "almost")) for line in text.splitlines()), name
    assert "tiny" in (out / "prepare" / "sequences.tsv").read_text()


# ---------------------------------------------------------------------------- config and sheet


def _sheet_case(tmp_path, name):
    work = workdir(tmp_path)
    (work / "example").mkdir()
    shutil.copy(REPO / "example" / "sample_a.fa", work / "example" / "sample_a.fa")
    shutil.copy(BAD / name, work / "config" / "samples.tsv")
    return work, []


def _config_case(tmp_path, name):
    return workdir(tmp_path), ["--configfile", str(BAD / name)]


def _empty_path_case(tmp_path, name):
    work = workdir(tmp_path)
    (work / "config" / "samples.tsv").write_text("sample\tpath\ns\t\n")
    return work, []


CONFIG_CASES = [
    (_sheet_case, "sheet_missing_column.tsv", ["config/samples.tsv", "lacks column(s): path"]),
    (_sheet_case, "sheet_unsafe_name.tsv",
     ["config/samples.tsv, line 2: sample: '../escape;rm -rf $HOME' does not match"]),
    (_empty_path_case, "(empty path column)", ["config/samples.tsv, line 2: path: '' should be non-empty"]),
    (_config_case, "config_wrong_fragment_size.yaml", ["fragment_size: 400 is not one of [300, 500]"]),
]


@pytest.mark.parametrize("make,name,needles", CONFIG_CASES, ids=[c[1] for c in CONFIG_CASES])
def test_bad_config_or_sheet_stops_before_any_job(tmp_path, make, name, needles):
    work, args = make(tmp_path, name)
    proc = snakemake(work, "--cores", "2", *args, check=False)
    assert proc.returncode != 0
    line = one_error_line(proc.stderr, "configuration error: ", *needles)
    assert line.startswith("configuration error: "), line
    assert not (work / "results").exists()
    assert not (work / "escape;rm -rf $HOME").exists()


# ------------------------------------------------------------------------------------ model files


def _copy_bad(tmp_path, name):
    """A bad model file copied out of the repository (the steps record checksums beside model files)."""
    dest = tmp_path / "bad" / name
    dest.parent.mkdir(exist_ok=True)
    shutil.copy(BAD / "models" / name, dest)
    return str(dest)


def _text_esm(tmp_path, models):
    return {"models.esm2": _copy_bad(tmp_path, "esm2_t36_3B_UR50D.pt")}


def _truncated_esm(tmp_path, models):
    src = Path(models["models.esm2"])
    dst = tmp_path / "cut" / src.name
    dst.parent.mkdir()
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return {"models.esm2": str(dst)}


def _dnabert_without_tokenizer(tmp_path, models):
    dst = tmp_path / "DNABERT-S-no-tokenizer"
    shutil.copytree(models["models.dnabert_s"], dst)
    (dst / "tokenizer.json").unlink()
    return {"models.dnabert_s": str(dst)}


def _text_classifier(tmp_path, models):
    return {"models.classifier": _copy_bad(tmp_path, "500_model.pth")}


def _full_size_classifier(tmp_path, models):
    from tests.original_classifier import make_original_classifier

    path = tmp_path / "full" / "500_model.pth"
    path.parent.mkdir()
    make_original_classifier(path, input_dim=3328)  # the real width: the tiny features have fewer
    return {"models.classifier": str(path)}


MODEL_CASES = [
    (_text_esm, "models/logs/note_model_esm2-*.log", "models/notes/esm2-*.json",
     ["esm2_t36_3B_UR50D.pt: not a loadable fair-esm checkpoint (not a torch.save file"]),
    (_truncated_esm, "models/logs/note_model_esm2-*.log", "models/notes/esm2-*.json",
     ["cut/esm2_tiny_UR50D.pt: not a loadable fair-esm checkpoint (PytorchStreamReader failed"]),
    (_dnabert_without_tokenizer, "models/logs/note_model_dnabert_s-*.log", "models/notes/dnabert_s-*.json",
     ["tokenizer.json: not a readable tokenizer.json"]),
    (_text_classifier, "models/logs/note_model_classifier-*.log", "models/notes/classifier-*.json",
     ["500_model.pth: not a readable classifier file (not a torch.save file"]),
    (_full_size_classifier, "results/s/logs/classify.log", "results/s/prediction_results.tsv",
     ["results/embedding/samples/members/s.json: features have 160 values per frame", "expects 3328"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("change,log,output,needles", MODEL_CASES, ids=[c[0].__name__[1:] for c in MODEL_CASES])
def test_wrong_model_file_fails_its_step_with_one_line(tmp_path, tiny_models, change, log, output, needles):
    models = {**tiny_models, **change(tmp_path, tiny_models)}
    work = workdir(tmp_path / "work", models)
    proc = snakemake(work, "--cores", "2", check=False)
    assert proc.returncode != 0
    (found,) = work.glob(log)  # a log's path, or its pattern
    one_error_line(found.read_text(), *needles)
    assert_nothing_looks_finished(work, output, *(f"results/s/{t}" for t in TABLES))


# ------------------------------------------------------------------------------------- accounting


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_models):
    """One normal run of the small sample, split into several shards: the reference for the tests below."""
    work = workdir(tmp_path_factory.mktemp("reference"), tiny_models, **{"shards.tokens_per_shard": 700})
    snakemake(work, "--cores", "2")
    plan = json.loads((work / "results" / "embedding" / "samples" / "plan" / "plan.json").read_text())
    assert len(plan["shards"]) >= 2
    return work


def _copy_run(finished, dst):
    shutil.copytree(finished, dst, symlinks=True)
    return dst


def _drop_from_store(work, frame):
    """Rewrite the ESM-2 store file that holds `frame` (a frame id of sample s) without it."""
    member = json.loads((work / "results" / "embedding" / "samples" / "members" / f"{SAMPLE}.json").read_text())
    nucleotides = dict(read_fasta(work / "results" / SAMPLE / "prepare" / "frames.fna"))
    proteins = dict(read_fasta(work / "results" / SAMPLE / "prepare" / "frames.faa"))
    key = frame_key(nucleotides[frame], proteins[frame]).encode()
    ns = Namespace.from_json(member["namespaces"]["esm2"])
    for path in store_files(member["store"], ns):
        keys = read_keys(path)
        if key in keys.tolist():
            with h5py.File(path, "r") as f:
                emb = f["embeddings"][()]
            keep = keys != key
            path.unlink()
            write_store_file(member["store"], ns, path.stem, keys[keep], emb[keep], {})
            return path
    raise AssertionError(f"{frame} is in no store file")


@pytest.mark.slow
def test_frame_missing_from_the_store_fails_the_classification(finished, tmp_path):
    """A frame lost from the embedding store after the plan is classified by nobody: classify names the
    frame, the encoder and the store, says how to plan again, and writes no table of the sample."""
    work = _copy_run(finished, tmp_path / "work")
    store = work / "resources" / "embeddings"
    member = work / "results" / "embedding" / "samples" / "members" / f"{SAMPLE}.json"
    member.write_text(member.read_text().replace(str(finished / "resources"), str(work / "resources")))
    out = work / "results" / SAMPLE
    frame = [i for i, _ in read_fasta(out / "prepare" / "frames.faa")][3]
    _drop_from_store(work, frame)
    for table in TABLES:
        (out / table).unlink()
    proc = snakemake(work, "--cores", "2", check=False)
    assert proc.returncode != 0
    one_error_line((out / "logs" / "classify.log").read_text(), f"frame '{frame}' is not in the embedding store",
                   f"esm2, {store}", "snakemake --forcerun plan")
    assert_nothing_looks_finished(work, *(f"results/s/{t}" for t in TABLES))
    snakemake(work, "--cores", "2", "--forcerun", "plan")  # as the message says: planned and embedded again
    for table in TABLES:
        assert (out / table).read_bytes() == (finished / "results" / SAMPLE / table).read_bytes(), table


# -------------------------------------------------------------------------------------- full disk


def _same_content(a, b):
    """Byte-identical; the embedding stage's JSON notes (which hold the run's own paths and timings) must
    be complete: valid JSON with the same fields."""
    if filecmp.cmp(a, b, shallow=False):
        return True
    if a.suffix != ".json":
        return False
    try:
        return json.loads(a.read_text()).keys() == json.loads(b.read_text()).keys()
    except ValueError:
        return False


PAGE = 4096  # tmpfs allocates whole pages


def _mount_tmpfs(path, size):
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()}")


@pytest.mark.slow
def test_full_results_disk_fails_cleanly_and_a_rerun_with_space_finishes(finished, tmp_path, tiny_models):
    """The results directory, a tmpfs, has room for every step but the last (summarize, whose plots are
    the largest files): that step fails with one line naming its outputs, everything finished before is
    intact, and after a remount with space the rerun finishes with the normal run's results."""
    ref = finished / "results"
    late = {"fragment_calls.tsv", "sequence_summary.tsv", "viral.fna", "score_histogram.png",
            "score_along_sequences.png", "summarize.log"}
    pages = {p.name: -(-p.stat().st_size // PAGE) for p in ref.rglob("*") if p.is_file()}
    early = sum(n for p in ref.rglob("*") if p.is_file() and p.name not in late
                for n in [-(-p.stat().st_size // PAGE)])
    assert sum(pages[n] for n in late) > 8  # room for the margin below, not for the summary
    work = workdir(tmp_path / "work", tiny_models, **{"shards.tokens_per_shard": 700})
    results = work / "results"
    results.mkdir()
    _mount_tmpfs(results, (early + 4) * PAGE)
    try:
        proc = snakemake(work, "--cores", "2", check=False)
        assert proc.returncode != 0
        one_error_line((results / SAMPLE / "logs" / "summarize.log").read_text(),
                       "summarize: results/s/fragment_calls.tsv", "no space left on device (ENOSPC)")
        assert "summarize: results/s/fragment_calls.tsv" in proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        assert leftovers(work) == []
        finals = [p for p in results.rglob("*")
                  if p.is_file() and not {"logs", "benchmarks"} & set(p.relative_to(results).parts)]
        assert len(finals) < len([p for p in ref.rglob("*") if p.is_file()])
        for p in finals:
            twin = ref / p.relative_to(results)
            assert twin.is_file() and _same_content(p, twin), f"{p} looks finished but differs"

        subprocess.run(["mount", "-o", "remount,size=256m", str(results)], check=True)
        snakemake(work, "--cores", "2")
        for table in TABLES:
            assert (results / SAMPLE / table).read_bytes() == (ref / SAMPLE / table).read_bytes(), table
        assert leftovers(work) == []
    finally:
        subprocess.run(["umount", str(results)], capture_output=True)
