"""The files of the whole run that the report's front page shows (`write_run_files`, all together or
none):
- `overview.tsv`: one row per sample, in the order given: `sample`; `status`, `finished` or why the
  sample did not finish (`unfinished.sample_reason`), the counts then empty; `sequences` and `bp` (their
  total length); `classified` (sequences with status `classified`) and `no_call` (every other status:
  no call was made); `viral_sequences` (called viral) and `viral_sequence_bp` (their total length);
  `viral_regions` and `viral_region_bp` (the bases inside them); `median_virus_score`, the median of
  `max_virus_score` over the classified sequences (6 decimals; NA when none was classified), read from
  each sample's tables;
- `all_sequences.tsv`, `all_viral_regions.tsv`: every finished sample's `sequence_summary.tsv` and
  `viral_regions.tsv` rows, as they are, under a leading `sample` column, samples in the order given
  (the header alone when none finished); the samples that did not finish are in `unfinished.tsv`;
- `unfinished.tsv`: `sample, reason` of each sample that did not finish (the header alone when all did);
- `overview.html`, `unfinished.html`: those two tables as HTML fragments (every cell escaped), which the
  report's pages include as they are: a reason holds file names and record ids, which reStructuredText
  would read as markup (a backslash, a backtick);
- `models.tsv`: `model, file, sha256, verified` of every model file the run used, as the models step
  noted them (`virnucpro.io.notes`): each source file, and the conversion the steps loaded, where there
  is one; `verified` says how the file was verified (its checksum record), or "unverified";
- `models.html`: models.tsv as an HTML fragment, each sha256 shortened with the full value in its
  tooltip (`models_html`);
- `parameters.tsv`: `setting, value`;
- `provenance.json` (`virnucpro.results.provenance`), `provenance.html` (it as an HTML fragment, models
  and settings left to their own tables), and each sample's `provenance.txt`, which points to it.
The HTML fragments are tables in a box that the report's style scrolls sideways when a table is wider
than the page.
"""

import html
import json
import statistics
from pathlib import Path

from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import atomic_outputs, write_text_if_changed
from virnucpro.io.status import read_status
from virnucpro.io.tables import read_tsv, write_tsv
from virnucpro.layout import OVERVIEW
from virnucpro.results.regions import REGION_COLUMNS
from virnucpro.results.sample import SEQUENCE_COLUMNS
from virnucpro.steps.unfinished import sample_reason

OVERVIEW_COLUMNS = ["sample", "status", "sequences", "bp", "classified", "no_call", "viral_sequences",
                    "viral_sequence_bp", "viral_regions", "viral_region_bp", "median_virus_score"]
COUNTS = len(OVERVIEW_COLUMNS) - 2  # the columns after `sample` and `status`
ALL_SEQUENCE_COLUMNS = ["sample", *SEQUENCE_COLUMNS]
ALL_REGION_COLUMNS = ["sample", *REGION_COLUMNS]
UNFINISHED_COLUMNS = ["sample", "reason"]
FINISHED = "finished"


def _table(path, columns):
    header, rows = read_tsv(path)
    if header != columns:
        raise VirNucProError(f"{path}: columns are {header}, expected {columns}")
    return rows


def sample_counts(sequence_summary, viral_regions):
    """The overview's counts of one finished sample, `sequences` to `median_virus_score`, from its tables."""
    seqs, regions = _table(sequence_summary, SEQUENCE_COLUMNS), _table(viral_regions, REGION_COLUMNS)
    length, status, call, score = (SEQUENCE_COLUMNS.index(c) for c in ("length", "status", "call", "max_virus_score"))
    classified = [float(r[score]) for r in seqs if r[status] == "classified"]
    viral = [int(r[length]) for r in seqs if r[call] == "viral"]
    region_bp = sum(int(r[REGION_COLUMNS.index("length")]) for r in regions)
    median = f"{statistics.median(classified):.6f}" if classified else "NA"
    return (len(seqs), sum(int(r[length]) for r in seqs), len(classified), len(seqs) - len(classified),
            len(viral), sum(viral), len(regions), region_bp, median)


def all_sample_rows(samples, tables, which):
    """Yield the rows of `all_sequences.tsv` (`which` 0) or `all_viral_regions.tsv` (1): each finished
    sample's (of `samples`, in order; `tables` as `overview_rows` takes it) table rows under its name,
    one sample's table in memory at a time."""
    columns = (SEQUENCE_COLUMNS, REGION_COLUMNS)[which]
    for s in (s for s in samples if s in tables):
        yield from ((s, *r) for r in _table(tables[s][which], columns))


def sample_outcomes(samples, statuses, sequence_summaries, viral_regions):
    """(tables, reasons) for `overview_rows`, from the files as the overview rule passes them: the
    prepare status of every sample of `samples` (in order), and the sequence summary and viral regions
    of each sample whose status records no error (in order)."""
    if len(statuses) != len(samples):
        raise VirNucProError(f"{len(samples)} samples but {len(statuses)} prepare statuses")
    reasons = {s: sample_reason(status) for s, status in zip(samples, statuses) if read_status(status)}
    done = [s for s in samples if s not in reasons]
    if not len(done) == len(sequence_summaries) == len(viral_regions):
        raise VirNucProError(f"{len(done)} samples whose front end went through, but {len(sequence_summaries)} "
                             f"sequence summaries and {len(viral_regions)} region tables")
    return dict(zip(done, zip(sequence_summaries, viral_regions))), reasons


def overview_rows(samples, tables, reasons):
    """The rows of `overview.tsv`, one per sample in the order given: `tables` maps each finished sample
    to its (sequence summary, viral regions), `reasons` each other sample to why it did not finish."""
    if twice := sorted({s for s in samples if samples.count(s) > 1}):
        raise VirNucProError(f"sample {twice[0]} is given twice")
    for sample in samples:
        if (sample in tables) == (sample in reasons):
            raise VirNucProError(f"sample {sample}: give either its tables or why it did not finish")
    if extra := sorted((set(tables) | set(reasons)) - set(samples)):
        raise VirNucProError(f"sample {extra[0]}: not one of the run's samples")
    return [(s, FINISHED, *sample_counts(*tables[s])) if s in tables else (s, _one_line(reasons[s]), *[""] * COUNTS)
            for s in samples]


def html_table(columns, rows):
    """An HTML table of `rows` under `columns`, every cell escaped (an empty cell stays empty)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>\n" for row in rows)
    return f'<table class="docutils">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n'


def _one_line(text):
    return str(text).replace("\t", " ").replace("\n", " ")


MODEL_COLUMNS = ["model", "file", "sha256", "verified"]
SHORT_HASH = 12


def model_rows(notes):
    """The rows of `models.tsv` from the model notes (each a note or the path of one), in the order given:
    every file with its sha256 and how it was verified (the note's word, else its checksum record's)."""
    from virnucpro.io.checksums import checked_sha256, verification
    from virnucpro.io.notes import check_note

    rows = []
    for note in notes:
        note = check_note(note)
        name = note["title"]
        source = Path(note["source"])
        for file, digest in note["checksums"].items():
            path = source if source.name == file else source / file
            verified = note.get("verified", {}).get(file) or verification(path)  # a note without the field
            rows.append((name, str(path), digest, verified))
        if note["file"] != note["source"]:
            digest = checked_sha256(note["file"])
            rows.append((f"{name}, converted", note["file"], digest, verification(note["file"])))
    return rows


def models_html(rows):
    """models.tsv as an HTML table for the report: each sha256 shortened to its first `SHORT_HASH`
    characters and an ellipsis, the full value in the cell's tooltip (an `abbr` title) and in the TSV."""
    table = html_table(MODEL_COLUMNS, rows)
    for digest in {r[MODEL_COLUMNS.index("sha256")] for r in rows}:
        if len(digest) > SHORT_HASH:
            short = f'<abbr title="{html.escape(digest)}">{html.escape(digest[:SHORT_HASH])}\u2026</abbr>'
            table = table.replace(f"<td>{html.escape(digest)}</td>", f"<td>{short}</td>")
    return table


def write_run_files(samples, tables, reasons, notes, settings, outputs, pointers=None, receipts=(), float8_check=None):
    """The files of the module docstring (`outputs`: {name: path} of exactly `virnucpro.layout.OVERVIEW`'s
    names): `samples`, `tables` and `reasons` as `overview_rows` takes them, `notes` the model notes (or
    their paths), `settings` maps setting -> value; the provenance (`virnucpro.results.provenance`, from
    `receipts` and `float8_check`) as JSON and as an HTML table, and `pointers` maps a sample to the path
    of its `provenance.txt`, written after the run files and only where its text changed: a sample
    folder is touched only when what it names changed (an added sample leaves the others' folders as
    they are)."""
    from virnucpro.results.provenance import pointer_text, provenance

    runs = overview_rows(samples, tables, reasons)
    left = [(s, _one_line(reasons[s])) for s in samples if s in reasons]
    used = model_rows(notes)
    record = provenance(used, settings, receipts, float8_check)
    if set(outputs) != set(OVERVIEW):
        raise VirNucProError(f"the overview writes {', '.join(OVERVIEW)}; given {', '.join(outputs)}")
    names = list(OVERVIEW)
    with atomic_outputs(*(outputs[name] for name in names)) as tmp:
        t = dict(zip(names, tmp))
        write_tsv(t["overview"], OVERVIEW_COLUMNS, runs)
        write_tsv(t["unfinished"], UNFINISHED_COLUMNS, left)
        write_tsv(t["models"], MODEL_COLUMNS, used)
        write_tsv(t["parameters"], ["setting", "value"], settings.items())
        write_tsv(t["all_sequences"], ALL_SEQUENCE_COLUMNS, all_sample_rows(samples, tables, 0))
        write_tsv(t["all_regions"], ALL_REGION_COLUMNS, all_sample_rows(samples, tables, 1))
        t["provenance"].write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        t["overview_view"].write_text(_scrolling(html_table(OVERVIEW_COLUMNS, runs)), encoding="utf-8")
        t["unfinished_view"].write_text(_scrolling(html_table(UNFINISHED_COLUMNS, left)), encoding="utf-8")
        t["models_view"].write_text(_scrolling(models_html(used)), encoding="utf-8")
        t["provenance_view"].write_text(_scrolling(html_table(["item", "value"], provenance_rows(record))),
                                        encoding="utf-8")
    for path in (pointers or {}).values():
        write_text_if_changed(path, pointer_text(record))


def provenance_rows(record):
    """The provenance as (item, value) rows for the report (models and settings have their own tables)."""
    w, e = record["workflow"], record["embedding"]
    check = e["float8_check"]
    rows = [("workflow version", w["version"]), ("git commit", w["commit"] or "none (not a git work tree)"),
            ("uncommitted changes", {None: "unknown", True: "yes", False: "no"}[w["dirty"]])]
    rows += [(name, version or "not installed") for name, version in record["software"].items()]
    rows += [("embedding devices", ", ".join(e["devices"]) or "none this run (every frame was in the store)"),
             ("embedding precision", e["precision"] or "unknown"),
             ("float8 check", f"{check['precision']}: {check['reason']}" if check else "not run")]
    return rows


def _scrolling(table):
    """An HTML table in a box (class virnucpro-table) that the report's style (workflow/report/workflow.rst)
    scrolls sideways when the table is wider than the page."""
    return f'<div class="virnucpro-table">\n{table}</div>\n'


def overview(samples, statuses, sequence_summaries, viral_regions, notes, settings, outputs, pointers=None,
             receipts=(), float8_check=None):
    """The `overview` step as its rule runs it: `sample_outcomes` on the rule's inputs, then
    `write_run_files` (the other arguments are its own)."""
    tables, reasons = sample_outcomes(samples, statuses, sequence_summaries, viral_regions)
    write_run_files(samples, tables, reasons, notes, settings, outputs, pointers, receipts, float8_check)
