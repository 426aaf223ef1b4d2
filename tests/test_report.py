"""What the report shows besides the plots: the per-sample HTML tables (virnucpro.results.views), the overview of
all samples (those that did not finish with why: virnucpro.steps.unfinished), the models (with checksums) and
parameters of the run (virnucpro.steps.overview), and the `virnucpro overview` command. The rendered report:
tests/test_workflow_e2e.py, tests/test_reliability_inputs.py (a run with a sample that did not finish)."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.html_tables import Cells
from virnucpro.errors import VirNucProError
from virnucpro.io.tables import write_tsv
from virnucpro.results.regions import REGION_COLUMNS
from virnucpro.results.views import write_table_views
from virnucpro.steps.unfinished import sample_reason, unfinished
from virnucpro.layout import OVERVIEW
from virnucpro.steps.overview import OVERVIEW_COLUMNS, overview_rows, sample_outcomes, write_run_files
from virnucpro.steps.summarize import SEQUENCE_COLUMNS


def summary_row(sid, length, call, mean):
    return [sid, length, 1, 1, int(call == "viral"), mean, mean, mean, "classified", call]


@pytest.fixture
def tables(tmp_path):
    seqs = [summary_row("s1", 900, "not_viral", "0.100000"), summary_row("s<2>&", 1000, "viral", "0.800000"),
            summary_row("s3", 500, "viral", "0.950000"),
            ["n4", 30, 1, 0, 0, "NA", "NA", "NA", "no_stop_free_frame", "no_call"],
            summary_row("s5", 700, "not_viral", "0.300000")]
    regions = [["s<2>&", 1, 1000, 1000, 2, 2, "0.800000", "0.900000", True], ["s3", 1, 500, 500, 1, 1,
               "0.950000", "0.950000", True], ["s1", 101, 400, 300, 2, 2, "0.700000", "0.800000", False]]
    write_tsv(tmp_path / "ss.tsv", SEQUENCE_COLUMNS, seqs)
    write_tsv(tmp_path / "vr.tsv", REGION_COLUMNS, regions)
    return tmp_path, seqs, regions


def views(seqs, regions):
    """The two tables as `write_table_views` takes them: (header, rows of text)."""
    return ((SEQUENCE_COLUMNS, [[str(x) for x in r] for r in seqs]),
            (REGION_COLUMNS, [[str(x) for x in r] for r in regions]))


def test_table_views_show_every_row_viral_first(tables):
    d, seqs, regions = tables
    write_table_views(*views(seqs, regions), d / "ss.html", d / "vr.html", "my_sample", 100)
    page = Cells((d / "ss.html").read_text())
    assert page.scripts == 0  # self-contained: nothing to load
    assert page.rows[0] == SEQUENCE_COLUMNS
    assert [r[0] for r in page.rows[1:]] == ["s3", "s<2>&", "s5", "s1", "n4"]  # viral first, then by mean score
    assert page.classes[1:] == ["viral", "viral", None, None, None]
    assert "&lt;2&gt;&amp;" in (d / "ss.html").read_text()  # ids are escaped
    text = (d / "ss.html").read_text()
    assert "my_sample: sequence summary" in text and "All 5 rows." in text
    page = Cells((d / "vr.html").read_text())
    assert page.rows == [REGION_COLUMNS, *[[str(x) for x in r] for r in regions]]


def test_table_views_stop_at_max_rows(tables):
    d, seqs, regions = tables
    write_table_views(*views(seqs, regions), d / "ss.html", d / "vr.html", "s", 2)
    assert [r[0] for r in Cells((d / "ss.html").read_text()).rows[1:]] == ["s3", "s<2>&"]
    assert "The first 2 of 5 rows." in (d / "ss.html").read_text()
    assert len(Cells((d / "vr.html").read_text()).rows) == 3
    with pytest.raises(VirNucProError, match="report.max_table_rows must be 1 or more, not 0"):
        write_table_views(*views(seqs, regions), d / "a.html", d / "b.html", "s", 0)
    assert not (d / "a.html").exists()


def run_outputs(d):
    """The outputs of `write_run_files` under `d`, as the workflow names them; twice, for the tables and
    for the views."""
    outputs = {name: d / output.path for name, output in OVERVIEW.items()}
    return outputs, outputs


def status(path, error=None):
    """A prepare status file: the counts of a front end that went through, or the error that stopped it."""
    record = {"ok": True, "sequences": 1} if error is None else {"ok": False, "error": error}
    path.write_text(json.dumps(record) + "\n")
    return path


def test_overview_counts_sequences_calls_viral_bases_and_region_bases(tables):
    """Sample a: 5 sequences (3130 bp), 4 classified, 1 without a call, 2 viral (1000 + 500 bp), 3 regions
    (1000 + 500 + 300 bp, one inside a sequence not called viral). Sample c: one viral sequence whose
    fragments make no region (600 viral bp, 0 region bp), one too short to call."""
    d, _, _ = tables
    write_tsv(d / "ss2.tsv", SEQUENCE_COLUMNS, [summary_row("x", 300, "not_viral", "0.1")])
    write_tsv(d / "vr2.tsv", REGION_COLUMNS, [])
    write_tsv(d / "ss3.tsv", SEQUENCE_COLUMNS, [summary_row("v", 600, "viral", "0.6"),
                                                ["t", 90, 1, 0, 0, "NA", "NA", "NA", "shorter_than_min_length",
                                                 "no_call"]])
    tables_of = {"a": (d / "ss.tsv", d / "vr.tsv"), "b": (d / "ss2.tsv", d / "vr2.tsv"), "c": (d / "ss3.tsv", d / "vr2.tsv")}
    rows = overview_rows(["a", "b", "c"], tables_of, {})
    assert rows == [("a", "finished", 5, 3130, 4, 1, 2, 1500, 3, 1800, "0.550000"),  # median of 0.1 0.3 0.8 0.95
                    ("b", "finished", 1, 300, 1, 0, 0, 0, 0, 0, "0.100000"),
                    ("c", "finished", 2, 690, 1, 1, 1, 600, 0, 0, "0.600000")]  # the unclassified one left out
    for row in rows:  # every sequence is classified or has no call
        named = dict(zip(OVERVIEW_COLUMNS, row))
        assert named["classified"] + named["no_call"] == named["sequences"]
    (d / "bad.tsv").write_text("id\tscore\n")
    with pytest.raises(VirNucProError, match=r"bad.tsv: columns are \['id', 'score'\]"):
        overview_rows(["a"], {"a": (d / "bad.tsv", d / "vr.tsv")}, {})


def test_overview_lists_a_sample_whose_front_end_failed_with_its_error_and_no_counts(tables):
    d, _, _ = tables
    statuses = [status(d / "a.json"), status(d / "bad.json", "in.fa: no sequences (empty input)")]
    tables_of, reasons = sample_outcomes(["a", "bad"], statuses, [d / "ss.tsv"], [d / "vr.tsv"])
    assert tables_of == {"a": (d / "ss.tsv", d / "vr.tsv")} and reasons == {"bad": "in.fa: no sequences (empty input)"}
    assert overview_rows(["a", "bad"], tables_of, reasons)[1] == ("bad", "in.fa: no sequences (empty input)", *[""] * 9)
    with pytest.raises(VirNucProError, match="1 samples whose front end went through, but 2 sequence summaries"):
        sample_outcomes(["a", "bad"], statuses, [d / "ss.tsv", d / "ss.tsv"], [d / "vr.tsv", d / "vr.tsv"])
    for samples, given, why, message in [
        (["a"], {}, {}, "sample a: give either its tables or why it did not finish"),
        (["a"], {"a": (d / "ss.tsv", d / "vr.tsv")}, {"a": "x"}, "sample a: give either"),
        (["a"], {"a": (d / "ss.tsv", d / "vr.tsv")}, {"z": "x"}, "sample z: not one of the run's samples"),
        (["a", "a"], {"a": (d / "ss.tsv", d / "vr.tsv")}, {}, "sample a is given twice"),
    ]:
        with pytest.raises(VirNucProError, match=message):
            overview_rows(samples, given, why)


def test_the_report_views_show_a_reason_as_text_not_markup(tables):
    """A reason holds file names and record ids: in the HTML views it is escaped text (reStructuredText
    would eat the backslash and read the backticks)."""
    d, _, _ = tables
    reason = "in.fa: record '`touch <x>': not FASTA or FASTQ (starts with b'\\x00')"
    out, views = run_outputs(d)
    write_run_files(["bad"], {}, {"bad": reason}, [], {}, out)
    assert Cells(views["unfinished_view"].read_text()).rows == [["sample", "reason"], ["bad", reason]]
    assert Cells(views["overview_view"].read_text()).rows[1] == ["bad", reason] + [""] * 9
    assert "&lt;x&gt;" in views["unfinished_view"].read_text()
    assert out["unfinished"].read_text() == f"sample\treason\nbad\t{reason}\n"


def test_why_a_sample_did_not_finish(tmp_path):
    """One place says why, in this order: the front end's error, the last error line of the sample's logs
    (an interrupted step among them), and otherwise not reached, because of a signal or other errors."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "classify.log").write_text("2026-01-01 00:00:00 virnucpro INFO reading\n"
                                      "2026-01-01 00:00:01 virnucpro ERROR classify: interrupted (SIGINT)\n")
    bad = status(tmp_path / "bad.json", "in.fa: binary data")
    assert sample_reason(bad, logs.glob("*.log"), "SIGINT") == "in.fa: binary data"
    assert sample_reason(status(tmp_path / "ok.json"), logs.glob("*.log")) == "classify: interrupted (SIGINT)"
    assert sample_reason(tmp_path / "absent.json", [], "SIGTERM") == "not reached: the run was interrupted (SIGTERM)"
    assert sample_reason(None, []) == "not reached (see the errors above)"


def test_closing_summary_names_the_interrupt_and_counts_a_stale_summary_of_a_failed_sample(tmp_path):
    for sample in ("done", "stale", "waiting"):
        (tmp_path / sample / "prepare").mkdir(parents=True)
        status(tmp_path / sample / "prepare" / "status.json", "in.fa: binary data" if sample == "stale" else None)
    for sample in ("done", "stale"):  # stale: a summary left from before its input went bad
        write_tsv(tmp_path / sample / "sequence_summary.tsv", SEQUENCE_COLUMNS, [])
    assert unfinished(tmp_path, ["done", "stale", "waiting"], "SIGINT") == [
        "the run was interrupted (SIGINT); 2 of 3 sample(s) did not finish:",
        "  stale: in.fa: binary data",
        "  waiting: not reached: the run was interrupted (SIGINT)",
    ]
    assert unfinished(tmp_path, ["done"]) == []


def test_run_files_list_samples_models_with_their_sha256_and_parameters(tables, tiny_models):
    from virnucpro.steps.models import make_note

    d, _, _ = tables
    notes = [make_note("esm2", tiny_models["models.esm2"], d / "models"),
             make_note("dnabert_s", tiny_models["models.dnabert_s"]),
             make_note("classifier", tiny_models["models.classifier"], d / "models")]
    settings = {"fragment_size": "500", "regions.max_gap_fragments": "1"}
    out, views = run_outputs(d)
    write_run_files(["a"], {"a": (d / "ss.tsv", d / "vr.tsv")}, {}, notes, settings, out)
    assert Cells(views["overview_view"].read_text()).rows == [line.split("\t") for line in
                                                             out["overview"].read_text().splitlines()]
    assert out["overview"].read_text().splitlines() == [
        "sample\tstatus\tsequences\tbp\tclassified\tno_call\tviral_sequences\tviral_sequence_bp\tviral_regions"
        "\tviral_region_bp\tmedian_virus_score", "a\tfinished\t5\t3130\t4\t1\t2\t1500\t3\t1800\t0.550000"]
    assert out["unfinished"].read_text() == "sample\treason\n"  # every sample finished
    lines = [line.split("\t") for line in out["models"].read_text().splitlines()]
    assert lines[0] == ["model", "file", "sha256", "verified"]
    for name, path, digest, _ in lines[1:]:  # every file named, with its own checksum
        assert hashlib.sha256(open(path, "rb").read()).hexdigest() == digest, (name, path)
    names = [name for name, _, _, _ in lines[1:]]
    assert names.count("ESM-2 (protein embeddings)") == 1 and names.count("DNABERT-S (nucleotide embeddings)") == 3
    assert "ESM-2 (protein embeddings), converted" in names and "VirNucPro classifier, converted" in names
    for name, path, _, verified in lines[1:]:  # the tiny models lie outside models.dir: nothing compared them
        expected = f"converted from {Path(path).name.split('-')[0]}" if name.endswith("converted") else "unverified"
        assert verified.startswith(expected), (name, path, verified)
    files = [path for _, path, _, _ in lines[1:]]
    assert tiny_models["models.classifier"] in files and tiny_models["models.esm2"] in files
    assert out["parameters"].read_text() == "setting\tvalue\nfragment_size\t500\nregions.max_gap_fragments\t1\n"


def test_overview_command_keeps_the_order_given_and_lists_unfinished_samples(tables, tiny_models):
    """`virnucpro overview --sample ... --unfinished NAME STATUS`: rows in the order given, the unfinished
    sample with the error its status records; a status without an error is refused."""
    from virnucpro.steps.models import note_model

    d, _, _ = tables
    note = d / "classifier.json"
    note_model("classifier", tiny_models["models.classifier"], d / "models", note)
    bad = status(d / "bad.json", "in.fa: no sequences (empty input)")
    command = [sys.executable, "-m", "virnucpro.cli", "overview", "--unfinished", "bad", str(bad),
               "--sample", "a", str(d / "ss.tsv"), str(d / "vr.tsv"), "--note", str(note), "--out-dir", str(d / "out")]
    proc = subprocess.run(command, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in (d / "out" / "overview.tsv").read_text().splitlines()]
    assert [r[:3] for r in rows[1:]] == [["bad", "in.fa: no sequences (empty input)", ""], ["a", "finished", "5"]]
    assert (d / "out" / "unfinished.tsv").read_text() == "sample\treason\nbad\tin.fa: no sequences (empty input)\n"
    assert [r[:2] for r in tsv_rows(d / "out" / "all_sequences.tsv")[1:]] == [["a", "s1"], ["a", "s<2>&"], ["a", "s3"],
                                                                           ["a", "n4"], ["a", "s5"]]
    record = json.loads((d / "out" / "provenance.json").read_text())
    assert [m["file"] for m in record["models"]] == [r[1] for r in tsv_rows(d / "out" / "models.tsv")[1:]]
    command[6] = str(status(d / "ok.json"))
    proc = subprocess.run(command, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip().endswith(
        f"--unfinished bad: {d / 'ok.json'} records no error: give its tables with --sample"), proc.stderr


def test_all_sequences_and_all_regions_hold_every_finished_sample_rows_under_its_name(tables):
    """Two finished samples (c, a) around one that did not finish (bad): their rows in the order given,
    each as its sample's table holds it, under a leading `sample` column; bad has none."""
    d, seqs, regions = tables
    write_tsv(d / "ss3.tsv", SEQUENCE_COLUMNS, [summary_row("v", 600, "viral", "0.600000")])
    write_tsv(d / "vr3.tsv", REGION_COLUMNS, [["v", 1, 600, 600, 1, 1, "0.600000", "0.600000", True]])
    out, views = run_outputs(d)
    given = {"a": (d / "ss.tsv", d / "vr.tsv"), "c": (d / "ss3.tsv", d / "vr3.tsv")}
    write_run_files(["c", "bad", "a"], given, {"bad": "in.fa: binary data"}, [], {}, out)
    text = [[str(x) for x in r] for r in seqs]
    assert tsv_rows(out["all_sequences"]) == [["sample", *SEQUENCE_COLUMNS], ["c", "v", "600", "1", "1", "1",
                                              "0.600000", "0.600000", "0.600000", "classified", "viral"],
                                              *[["a", *r] for r in text]]
    assert tsv_rows(out["all_regions"]) == [["sample", *REGION_COLUMNS], ["c", "v", "1", "600", "600", "1", "1",
                                            "0.600000", "0.600000", "True"], *[["a", *map(str, r)] for r in regions]]
    write_run_files(["bad"], {}, {"bad": "in.fa: binary data"}, [], {}, out)
    assert tsv_rows(out["all_sequences"]) == [["sample", *SEQUENCE_COLUMNS]]  # none finished: the header alone


def tsv_rows(path):
    return [line.split("\t") for line in Path(path).read_text().splitlines()]


def git(tree, *args):
    subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def test_provenance_names_version_commit_dirty_tree_and_nothing_outside_git(tmp_path):
    import virnucpro
    from virnucpro.results.provenance import workflow_source

    assert workflow_source(tmp_path) == {"version": virnucpro.__version__, "commit": None, "dirty": None}
    tree = tmp_path / "tree"
    (tree / "virnucpro").mkdir(parents=True)
    (tree / "virnucpro" / "__init__.py").write_text("")
    git(tree, "init", "-q")
    git(tree, "add", ".")
    git(tree, "commit", "-q", "-m", "one")
    head = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert workflow_source(tree) == {"version": virnucpro.__version__, "commit": head, "dirty": False}
    (tree / "virnucpro" / "__init__.py").write_text("x = 1\n")
    assert workflow_source(tree)["dirty"] is True
    assert workflow_source(tree / "virnucpro")["commit"] is None  # inside a work tree, but not its top


def test_provenance_file_names_software_devices_precision_models_and_settings(tables, tiny_models):
    """The run's provenance.json: the source tree's commit, installed versions, the GPU model each store
    file records (else the receipt's device), the float8 decision, models.tsv's rows, the settings; the
    report's table of it; every sample folder's pointer to it."""
    import h5py
    from importlib import metadata

    import virnucpro
    from virnucpro.steps.models import make_note

    d, _, _ = tables
    with h5py.File(d / "shard0.h5", "w") as f:
        f.attrs["device"] = "NVIDIA H200"
        f.attrs["precision"] = "float16"
    receipts = [d / "r0.json", d / "r1.json"]
    receipts[0].write_text(json.dumps({"device": "cuda:0", "store_files": {"esm2": str(d / "shard0.h5")}}))
    receipts[1].write_text(json.dumps({"device": "cuda:1", "store_files": {"esm2": str(d / "gone.h5")}}))
    decision = d / "float8_check.json"
    decision.write_text(json.dumps({"precision": "float16", "reason": "float8 refused: calls differ"}))
    notes = [make_note("classifier", tiny_models["models.classifier"], d / "models")]
    settings = {"embed.precision": "float8", "fragment_size": "500"}
    out, views = run_outputs(d)
    pointers = {"a": d / "a" / "provenance.txt"}
    (d / "a").mkdir()
    write_run_files(["a"], {"a": (d / "ss.tsv", d / "vr.tsv")}, {}, notes, settings, out,
                    pointers=pointers, receipts=receipts, float8_check=decision)
    record = json.loads(out["provenance"].read_text())
    tree = Path(virnucpro.__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert record["workflow"]["version"] == virnucpro.__version__ and record["workflow"]["commit"] == (head or None)
    assert record["software"]["torch"] == metadata.version("torch")
    assert record["software"]["snakemake"] == metadata.version("snakemake")
    assert record["embedding"] == {"devices": ["NVIDIA H200", "cuda:1"], "shards": 2, "precision": "float8",
                                   "store_precisions": {"esm2": ["float16"]},
                                   "float8_check": {"precision": "float16", "reason": "float8 refused: calls differ"}}
    assert [list(m.values()) for m in record["models"]] == tsv_rows(out["models"])[1:]
    assert record["settings"] == settings
    shown = dict(Cells(views["provenance_view"].read_text()).rows[1:])
    assert shown["embedding devices"] == "NVIDIA H200, cuda:1" and shown["float8 check"].startswith("float16: ")
    assert shown["git commit"] == (head or "none (not a git work tree)")
    pointer = pointers["a"].read_text()
    assert "../provenance.json" in pointer and f"workflow {virnucpro.__version__}, commit {head or 'none'}" in pointer
    receipts[1].write_text("{")
    with pytest.raises(VirNucProError, match=r"r1.json: not a readable embedding receipt"):
        write_run_files(["a"], {"a": (d / "ss.tsv", d / "vr.tsv")}, {}, notes, settings, out,
                        receipts=receipts)


def test_models_view_shortens_each_sha256_with_the_full_value_in_its_tooltip():
    from virnucpro.steps.overview import models_html

    digest = "0123456789abcdef" * 4
    page = models_html([("VirNucPro classifier", "/m/c.pth", digest, "unverified")])
    assert Cells(page).rows[1] == ["VirNucPro classifier", "/m/c.pth", "0123456789ab\u2026", "unverified"]
    assert f'<abbr title="{digest}">0123456789ab\u2026</abbr>' in page


@pytest.mark.browser
def test_a_table_wider_than_the_window_scrolls_in_its_box_not_the_page(tables, browser):
    """A sequence summary of 30 columns in a 1280 px window (headless Chromium): the page is no wider
    than the window, the table's box ends inside it and scrolls sideways, and scrolled to its end the
    box shows the last column."""
    d, seqs, regions = tables
    header = SEQUENCE_COLUMNS + [f"extra_column_{i}" for i in range(20)]
    wide = [[str(x) for x in r] + ["0.123456789"] * 20 for r in seqs]
    write_table_views((header, wide), views(seqs, regions)[1], d / "ss.html", d / "vr.html", "wide", 100)
    browser.set_window_size(1280, 900)
    browser.get((d / "ss.html").as_uri())
    width, window = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= window <= 1280
    left, right, inner, outer = browser.execute_script(
        "const b = document.querySelector('table').parentElement, r = b.getBoundingClientRect();"
        "return [r.left, r.right, b.scrollWidth, b.clientWidth]")
    assert right <= window and inner > outer > 0.8 * window  # the table is wider than its box, which scrolls
    last = browser.execute_script(
        "const b = document.querySelector('table').parentElement; b.scrollLeft = b.scrollWidth;"
        "const c = [...document.querySelectorAll('th')].pop().getBoundingClientRect(); return [c.left, c.right]")
    assert left <= last[0] and last[1] <= right + 1, (left, right, last)
