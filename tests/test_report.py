"""What the report shows besides the plots: the per-sample HTML tables (virnucpro.results.views), the overview of
all samples, the models (with checksums) and parameters of the run (virnucpro.steps.report). The rendered
report: tests/test_workflow_e2e.py."""

import hashlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from virnucpro.errors import VirNucProError
from virnucpro.io.tables import write_tsv
from virnucpro.results.regions import REGION_COLUMNS
from virnucpro.results.views import write_table_views
from virnucpro.steps.report import overview_rows, write_run_files
from virnucpro.steps.summarize import SEQUENCE_COLUMNS


class Cells(HTMLParser):
    """Rows of cell texts (th and td) and the classes of the rows, from an HTML page."""

    def __init__(self, text):
        super().__init__()
        self.rows, self.classes, self.cell, self.scripts = [], [], None, 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
            self.classes.append(dict(attrs).get("class"))
        elif tag in ("td", "th"):
            self.cell = ""
        elif tag in ("script", "link", "img", "iframe"):
            self.scripts += 1

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append(self.cell)
            self.cell = None


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


def test_overview_counts_sequences_viral_calls_regions_and_bases(tables):
    d, _, _ = tables
    write_tsv(d / "ss2.tsv", SEQUENCE_COLUMNS, [summary_row("x", 300, "not_viral", "0.1")])
    write_tsv(d / "vr2.tsv", REGION_COLUMNS, [])
    rows = overview_rows(["a", "b"], [d / "ss.tsv", d / "ss2.tsv"], [d / "vr.tsv", d / "vr2.tsv"])
    assert rows == [("a", 5, 3130, 2, 3, 1800), ("b", 1, 300, 0, 0, 0)]
    (d / "bad.tsv").write_text("id\tscore\n")
    with pytest.raises(VirNucProError, match=r"bad.tsv: columns are \['id', 'score'\]"):
        overview_rows(["a"], [d / "bad.tsv"], [d / "vr.tsv"])


def test_run_files_list_samples_models_with_their_sha256_and_parameters(tables, tiny_models):
    from virnucpro.io.converted import model_note

    d, _, _ = tables
    notes = [model_note("esm2", tiny_models["models.esm2"], d / "models"),
             model_note("dnabert_s", tiny_models["models.dnabert_s"]),
             model_note("classifier", tiny_models["models.classifier"], d / "models")]
    settings = {"fragment_size": "500", "regions.max_gap_fragments": "1"}
    out = {name: d / f"{name}.tsv" for name in ("overview", "models", "parameters")}
    write_run_files(["a"], [d / "ss.tsv"], [d / "vr.tsv"], notes, settings, **out)
    assert out["overview"].read_text().splitlines() == [
        "sample\tsequences\tbp\tviral_sequences\tviral_regions\tviral_bp", "a\t5\t3130\t2\t3\t1800"]
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
