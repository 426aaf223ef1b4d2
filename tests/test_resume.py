"""Kill and resume, and determinism, on CPU with the tiny models.

Kill and resume: the workflow runs as a user runs it (`snakemake`, the default profile, so
`rerun-incomplete: true`), with `--cores 1` so that one job runs at a time. The test watches the results
directory and, at the chosen moment, stops the whole snakemake process group (SIGSTOP, so the moment
cannot slip while the test looks), checks that the moment is the one it wanted, and SIGKILLs the group:
1. in the middle of an embedding job: at least one shard is finished (its receipt exists) and another
   embedding job has started (its log exists) but has not written its receipt;
2. in the middle of writing the results: `summarize` holds its outputs under temporary `.tmp-*` names.
After each kill a dry run shows what a rerun would do (only the unfinished jobs, each because its output
is missing), the rerun finishes, finished files keep their inode and mtime, and the final tables equal an
uninterrupted run's byte for byte. Ctrl-C (SIGINT to the whole process group) in the middle of `summarize`
ends in one line, an "interrupted" closing summary and no output of the sample; the plain rerun gives the
same tables. No product code knows about the test: the moments are found from the
outside, by polling the files every job writes anyway.

Determinism: a second run on the same input and config gives byte-identical tables, and a sample whose
FASTA holds the same records in reverse order gives the same calls and scores for every id (rows follow
the input order, so they are compared keyed by id). Shard-count invariance is tested in
test_workflow_e2e.py (`test_results_do_not_depend_on_the_shard_count`).
"""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.workflow_runs import REPO, SNAKEMAKE, TABLES, rows, snakemake, tiny_workdir
from virnucpro.io.seqio import read_sequences

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

SAMPLE_A = REPO / "example" / "sample_a.fa"
SHARDS = {"shards.tokens_per_shard": 6000}  # two shards for sample_a
STEP_OUTPUTS = ["results/embedding", "resources/embeddings", "results/sample_a/prepare"]


def reversed_fasta(src, dest):
    records = list(read_sequences(src))
    dest.write_text("".join(f">{rid}\n{seq.decode()}\n" for rid, seq in reversed(records)))
    return [rid for rid, _ in records]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, tiny_models):
    """An uninterrupted run: sample_a, and the same records in reverse order as sample_rev."""
    base = tmp_path_factory.mktemp("baseline")
    reversed_fasta(SAMPLE_A, base / "sample_rev.fa")
    sheet = {"sample_a": SAMPLE_A, "sample_rev": base / "sample_rev.fa"}
    work = tiny_workdir(base / "work", tiny_models, sheet=sheet, **SHARDS)
    snakemake(work, "--cores", "2")
    return work


# ------------------------------------------------------------------------------------ helpers


def start(work, *args):
    """snakemake in the background, in a process group of its own (so the test can kill all of it)."""
    log = open(work / "snakemake.out", "a")
    return subprocess.Popen(
        [*SNAKEMAKE, "--directory", str(work), "--cores", "1", *args], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True,
    )


def kill_when(proc, moment, timeout=240, sig=signal.SIGKILL):
    """Send `sig` (SIGKILL unless told) to `proc`'s process group at the first poll where `moment()`
    holds (checked again while the group is stopped), let the group go on (a signal it can handle) and
    wait for it to end; returns what `moment()` returned then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "snakemake finished before the moment came"
        if moment():
            os.killpg(proc.pid, signal.SIGSTOP)
            seen = moment()
            if seen:
                os.killpg(proc.pid, sig)
                if sig != signal.SIGKILL:
                    os.killpg(proc.pid, signal.SIGCONT)  # the group handles the signal it was sent
                proc.wait(timeout)
                return seen
            os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    raise AssertionError("the moment to kill never came")


def snapshot(work):
    """{relative path: (inode, mtime_ns)} of every file under the step-output folders of `work` (logs,
    Snakemake's own timestamps and the store's shard locks aside: a killed job's lock is taken over, and
    released, by the job that redoes its shard)."""
    files = {}
    for folder in STEP_OUTPUTS:
        for p in (work / folder).rglob("*") if (work / folder).exists() else []:
            if p.is_file() and "logs" not in p.parts and p.name != ".snakemake_timestamp" \
                    and not p.name.startswith(".lock-"):
                st = p.stat()
                files[str(p.relative_to(work))] = (st.st_ino, st.st_mtime_ns)
    return files


def planned_jobs(work):
    """{(rule, shard or None): reason} of the jobs a rerun would run, from a dry run."""
    proc = snakemake(work, "--cores", "1", "--dry-run")
    jobs = {}
    for block in re.split(r"\n(?=\[|(?:local)?rule |localcheckpoint |checkpoint )", proc.stdout):
        m = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block.strip())
        if not m:
            continue
        shard = re.search(r"wildcards: .*shard=([0-9a-f]{16})", block)
        reason = re.search(r"reason: (.*)", block)
        jobs[(m.group(1), shard.group(1) if shard else None)] = reason.group(1) if reason else ""
    return jobs


def unlock_as_a_user_would(work):
    """After a SIGKILL the directory stays locked: the same command stops at once, before any job, saying
    to run --unlock; the user does."""
    assert any((work / ".snakemake" / "locks").iterdir())
    proc = snakemake(work, "--cores", "1", check=False)
    assert proc.returncode != 0 and "--unlock" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    snakemake(work, "--unlock")


def assert_same_tables(work, baseline, sample="sample_a"):
    for table in TABLES:
        got = (work / "results" / sample / table).read_bytes()
        assert got == (baseline / "results" / sample / table).read_bytes(), (sample, table)


# -------------------------------------------------------------------------------- kill and resume


def test_killed_in_embedding_and_in_summarize_resumes_to_the_same_results(tmp_path, tiny_models, baseline):
    work = tiny_workdir(tmp_path, tiny_models, sheet={"sample_a": SAMPLE_A}, **SHARDS)
    out = work / "results" / "sample_a"
    stage = work / "results" / "embedding" / "samples"

    def embedding_in_flight():
        """(finished shards, started-but-unfinished shards) or None."""
        finished, started = [], []
        for log in (stage / "logs" / "embed").glob("*.log"):
            (finished if (stage / "done" / f"{log.stem}.json").exists() else started).append(log.stem)
        return (finished, started) if finished and started else None

    # 1. killed in the middle of an embedding job
    finished, started = kill_when(start(work), embedding_in_flight)
    assert len(started) == 1  # --cores 1: the job that was running
    before = snapshot(work)
    assert not any(Path(p).name.startswith(".tmp-") and "embeddings" not in p for p in before)
    plan = planned_jobs(work)
    for shard in finished:
        assert ("embed", shard) not in plan, f"finished shard {shard} would be recomputed"
    assert ("embed", started[0]) in plan and "Missing output files" in plan[("embed", started[0])]
    shards = [s["name"] for s in json.loads((stage / "plan" / "plan.json").read_text())["shards"]]
    assert len(shards) == 2
    for shard in shards:
        assert (("embed", shard) in plan) == (shard not in finished), shard
    assert ("prepare", None) not in plan and ("plan", None) not in plan

    # 2. the rerun, killed in the middle of writing the results
    def summarize_writing():
        temps = sorted(p.name for p in [*out.glob(".tmp-*"), *(out / "plots").glob(".tmp-*")])
        return temps if any(t.endswith("fragment_calls.tsv") for t in temps) else None

    unlock_as_a_user_would(work)
    temps = kill_when(start(work), summarize_writing)
    assert any(name.endswith("fragment_calls.tsv") for name in temps), temps
    for table in [t for t in TABLES if t != "prediction_results.tsv"]:
        assert not (out / table).exists(), f"{table} appeared although summarize did not finish"
    middle = snapshot(work)
    for path, stamp in before.items():
        if not Path(path).name.startswith(".tmp-"):
            assert middle[path] == stamp, f"{path} was rewritten although it was finished"
    assert f"results/embedding/samples/done/{started[0]}.json" in set(middle) - set(before)
    plan = planned_jobs(work)
    assert set(plan) <= {("summarize", None), ("overview", None), ("all", None)} and ("summarize", None) in plan, plan
    assert "Missing output files" in plan[("summarize", None)]

    # 3. the final rerun
    snakemake(work, "--unlock")
    proc = snakemake(work, "--cores", "1")
    assert "rule summarize" in proc.stdout + proc.stderr or "localrule summarize" in proc.stdout + proc.stderr
    after = snapshot(work)
    for path, stamp in middle.items():
        if not Path(path).name.startswith(".tmp-"):
            assert after[path] == stamp, f"{path} was rewritten although it was finished"
    assert_same_tables(work, baseline)
    # leftovers of the killed writes keep their temporary names and are never read as results
    leftovers = [p.name for p in work.rglob(".tmp-*") if ".snakemake" not in p.parts]
    assert all(re.fullmatch(r"\.tmp-[0-9a-f]{8}-.+", n) for n in leftovers), leftovers
    # the killed embedding job's shard lock was taken over by the job that redid the shard, and released
    assert not [p for p in work.rglob(".lock-*") if ".snakemake" not in p.parts]


def test_ctrl_c_inside_a_step_gives_one_line_and_the_rerun_the_same_results(tmp_path, tiny_models, baseline):
    """SIGINT to the whole run (Ctrl-C in a terminal) while `summarize` runs: the step ends with one line
    and no traceback, the closing summary says the sample was interrupted, none of its results exists
    under a final or a temporary name, and the plain rerun (no --unlock) gives the uninterrupted tables."""
    work = tiny_workdir(tmp_path, tiny_models, sheet={"sample_a": SAMPLE_A}, **SHARDS)
    out = work / "results" / "sample_a"

    def summarize_running():  # its log exists once run_step has set its signal handlers
        return (out / "logs" / "summarize.log").is_file() and not (out / "sequence_summary.tsv").exists()

    proc = start(work)
    kill_when(proc, summarize_running, sig=signal.SIGINT)
    assert proc.returncode != 0
    text = (work / "snakemake.out").read_text()
    assert "Traceback" not in text, text
    line = "virnucpro ERROR summarize: interrupted (SIGINT)"
    errors = [l for l in text.splitlines() if " ERROR " in l]  # the steps' error lines (one job ran)
    assert len(errors) == 1 and errors[0].endswith(line), errors
    assert (out / "logs" / "summarize.log").read_text().strip().splitlines()[-1].endswith(line)
    assert "the run was interrupted (SIGINT); 1 of 1 sample(s) did not finish:\n  sample_a: summarize: interrupted (SIGINT)\n" in text
    for table in [t for t in TABLES if t != "prediction_results.tsv"]:
        assert not (out / table).exists(), f"{table} exists after the interrupted summarize"
    assert [p for p in work.rglob(".tmp-*") if ".snakemake" not in p.parts] == []

    snakemake(work, "--cores", "1")
    assert_same_tables(work, baseline)


# ---------------------------------------------------------------------------------- determinism


def test_two_runs_give_identical_tables(tmp_path, tiny_models, baseline):
    work = tiny_workdir(tmp_path, tiny_models, sheet={"sample_a": SAMPLE_A}, **SHARDS)
    snakemake(work, "--cores", "2")
    assert_same_tables(work, baseline)

    # the converted classifier carries a verified checksum record, and classification checks it
    (model,) = (work / "models" / "converted").glob("500_model-*.safetensors")
    assert model.with_name(model.name + ".checksum.json").is_file()
    data = bytearray(model.read_bytes())
    data[-1] ^= 0x01
    model.write_bytes(bytes(data))
    target = "results/sample_a/prediction_results.tsv"
    proc = snakemake(work, "--cores", "1", "--force", target, check=False)
    assert proc.returncode != 0
    log = (work / "results" / "sample_a" / "logs" / "classify.log").read_text().strip().splitlines()
    assert len(log) == 1 and "differs from the checksum recorded" in log[0], log
    assert not (work / target).exists()


def keyed(path, key=0):
    table = rows(path)
    return table[0], {r[key]: r for r in table[1:]}


def test_input_order_does_not_change_any_call(baseline):
    forward, backward = baseline / "results" / "sample_a", baseline / "results" / "sample_rev"
    ids = [rid for rid, _ in read_sequences(SAMPLE_A)]
    summary = rows(backward / "sequence_summary.tsv")
    assert [r[0] for r in summary[1:]] == ids[::-1]  # rows follow the input order
    for table in ("prediction_results.tsv", "fragment_calls.tsv", "sequence_summary.tsv"):
        assert keyed(forward / table) == keyed(backward / table), table
    viral = [dict(read_sequences(d / "viral.fna", allow_empty=True)) for d in (forward, backward)]
    assert viral[0] == viral[1]


# ------------------------------------------------------------------------------- an added sample


def rotated_fasta(src, dest, by=37):
    """The records of `src`, each sequence rotated by `by` bases: new fragments, so new frames."""
    dest.write_text("".join(f">{rid}_r\n{seq.decode()[by:]}{seq.decode()[:by]}\n" for rid, seq in read_sequences(src)))


def store_keys(work):
    """{store file name: number of keys} of every store file of the run's store, per namespace folder."""
    import h5py

    held = {}
    for path in sorted((work / "resources" / "embeddings").rglob("*.h5")):
        with h5py.File(path, "r") as fh:
            held[f"{path.parent.name}/{path.name}"] = len(fh["keys"])
    return held


def jobs_run(text):
    """{(rule, wildcards text)} of the jobs a snakemake run's log shows."""
    jobs = set()
    for block in re.split(r"\n(?=\[|(?:local)?rule |(?:local)?checkpoint )", text):
        m = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block.strip())
        if m:
            w = re.search(r"wildcards: (.*)", block)
            jobs.add((m.group(1), w.group(1) if w else ""))
    return jobs


def test_an_added_sample_runs_only_its_own_jobs(tmp_path, tiny_models):
    """Two samples finished; a third is added to the sheet. The rerun runs only the new sample's jobs,
    the plan, the new shards and the run files; the old samples' outputs keep their inode and mtime; the store gets one
    new file per encoder, holding only the new sample's frames; a rerun after that runs nothing."""
    rotated_fasta(SAMPLE_A, tmp_path / "sample_c.fa")
    sheet = {"sample_a": SAMPLE_A, "sample_b": REPO / "example" / "sample_b.fa.gz"}
    work = tiny_workdir(tmp_path / "work", tiny_models, sheet=sheet)
    snakemake(work, "--cores", "2")
    old = {p: s for p, s in snapshot(work).items() if "/embedding/" not in p}
    old_results = {str(p.relative_to(work)): p.stat().st_mtime_ns for s in sheet
                   for p in (work / "results" / s).rglob("*") if p.is_file() and "logs" not in p.parts}
    stored = store_keys(work)
    sheet["sample_c"] = tmp_path / "sample_c.fa"
    (work / "config" / "samples.tsv").write_text("sample\tpath\n" + "".join(f"{s}\t{p}\n" for s, p in sheet.items()))

    proc = snakemake(work, "--cores", "1")
    jobs = jobs_run(proc.stdout + proc.stderr)
    ran_rules = {rule for rule, _ in jobs}
    per_sample = [(rule, w) for rule, w in jobs if "sample=" in w]
    assert per_sample and all(w == "sample=sample_c" for _, w in per_sample), jobs
    assert {r for r, _ in per_sample} == {"prepare", "classify", "summarize"}, jobs
    assert ran_rules - {"prepare", "classify", "summarize"} <= {"plan", "embed", "list_receipts", "overview", "all"}, jobs
    now = snapshot(work)
    for path, stamp in old.items():
        assert now[path] == stamp, f"{path} was rewritten although its sample did not change"
    for path, mtime in old_results.items():
        assert (work / path).stat().st_mtime_ns == mtime, f"{path} was rewritten"
    grown = store_keys(work)
    assert {k: v for k, v in grown.items() if k in stored} == stored
    new_files = {k: v for k, v in grown.items() if k not in stored}
    plan = json.loads((work / "results" / "embedding" / "samples" / "plan" / "plan.json").read_text())
    assert len(new_files) == 2 * len(plan["shards"]) and plan["shards"], new_files
    assert sum(new_files.values()) == sum(s["esm2"] + s["dnabert_s"] for s in plan["shards"])
    assert plan["frames_to_embed"] <= plan["members"]["sample_c"]

    assert planned_jobs(work) == {}


def test_a_changed_record_with_nothing_to_embed_still_reruns_classify(tmp_path, tiny_models):
    """The store moved (embed.store set to a full copy): every record changes (it names the store) but
    nothing is to embed. Classify runs again for the sample (its record is newer than its table), while
    the batch's receipt list is remade: its ancient input must not hide the record's change."""
    work = tiny_workdir(tmp_path / "work", tiny_models, sheet={"sample_a": SAMPLE_A})
    snakemake(work, "--cores", "2")
    import shutil

    shutil.copytree(work / "resources" / "embeddings", tmp_path / "moved")
    config = work / "config" / "config.yaml"
    config.write_text(config.read_text().replace("store: resources/embeddings", f"store: {tmp_path / 'moved'}"))
    proc = snakemake(work, "--cores", "1")
    jobs = jobs_run(proc.stdout + proc.stderr)
    assert ("classify", "sample=sample_a") in jobs and not any(rule == "embed" for rule, _ in jobs), jobs
    record = json.loads((work / "results" / "embedding" / "samples" / "members" / "sample_a.json").read_text())
    assert record["store"] == str(tmp_path / "moved")
    assert planned_jobs(work) == {}
