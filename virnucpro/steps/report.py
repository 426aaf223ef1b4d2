"""The files of the whole run that the report's front page shows (`write_run_files`, all together or
none):
- `overview.tsv`: one row per sample, in the order given: `sample`; `status`, `finished` or why the
  sample did not finish (`outcome.sample_reason`), the counts then empty; `sequences` and `bp` (their
  total length); `classified` (sequences with status `classified`) and `no_call` (every other status:
  no call was made); `viral_sequences` (called viral) and `viral_sequence_bp` (their total length);
  `viral_regions` and `viral_region_bp` (the bases inside them), read from each sample's tables;
- `unfinished.tsv`: `sample, reason` of each sample that did not finish (the header alone when all did);
- `overview.html`, `unfinished.html`: those two tables as HTML fragments (every cell escaped), which the
  report's pages include as they are: a reason holds file names and record ids, which reStructuredText
  would read as markup (a backslash, a backtick);
- `models.tsv`: `model, file, sha256, verified` of every model file the run used, as the models step
  noted them (`virnucpro.io.notes`): each source file, and the conversion the steps loaded, where there
  is one; `verified` says how the file was verified (its checksum record), or "unverified";
- `parameters.tsv`: `setting, value`.
"""

import html
from pathlib import Path

from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import atomic_outputs
from virnucpro.io.tables import read_tsv, write_tsv
from virnucpro.results.regions import REGION_COLUMNS
from virnucpro.steps.outcome import sample_reason
from virnucpro.io.status import read_status
from virnucpro.steps.summarize import SEQUENCE_COLUMNS

OVERVIEW_COLUMNS = ["sample", "status", "sequences", "bp", "classified", "no_call", "viral_sequences",
                    "viral_sequence_bp", "viral_regions", "viral_region_bp"]
UNFINISHED_COLUMNS = ["sample", "reason"]
FINISHED = "finished"


def _table(path, columns):
    header, rows = read_tsv(path)
    if header != columns:
        raise VirNucProError(f"{path}: columns are {header}, expected {columns}")
    return rows


def sample_counts(sequence_summary, viral_regions):
    """The overview's counts of one finished sample, `sequences` to `viral_region_bp`, from its tables."""
    seqs, regions = _table(sequence_summary, SEQUENCE_COLUMNS), _table(viral_regions, REGION_COLUMNS)
    length, status, call = (SEQUENCE_COLUMNS.index(c) for c in ("length", "status", "call"))
    classified = sum(r[status] == "classified" for r in seqs)
    viral = [int(r[length]) for r in seqs if r[call] == "viral"]
    region_bp = sum(int(r[REGION_COLUMNS.index("length")]) for r in regions)
    return (len(seqs), sum(int(r[length]) for r in seqs), classified, len(seqs) - classified,
            len(viral), sum(viral), len(regions), region_bp)


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
    return [(s, FINISHED, *sample_counts(*tables[s])) if s in tables else (s, _one_line(reasons[s]), *[""] * 8)
            for s in samples]


def html_table(columns, rows):
    """An HTML table of `rows` under `columns`, every cell escaped (an empty cell stays empty)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>\n" for row in rows)
    return f'<table class="docutils">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n'


def _one_line(text):
    return str(text).replace("\t", " ").replace("\n", " ")


NAMES = {"esm2": "ESM-2 (protein embeddings)", "dnabert_s": "DNABERT-S (nucleotide embeddings)",
         "classifier": "VirNucPro classifier"}


MODEL_COLUMNS = ["model", "file", "sha256", "verified"]


def model_rows(notes):
    """The rows of `models.tsv` from the model notes (each a note or the path of one), in the order given:
    every file with its sha256 and how it was verified (the note's word, else its checksum record's)."""
    from virnucpro.io.checksums import checked_sha256, verification
    from virnucpro.io.notes import check_note

    rows = []
    for note in notes:
        note = check_note(note)
        name = NAMES[note["kind"]]
        source = Path(note["source"])
        for file, digest in note["checksums"].items():
            path = source if source.name == file else source / file
            verified = note.get("verified", {}).get(file) or verification(path)  # a note without the field
            rows.append((name, str(path), digest, verified))
        if note["file"] != note["source"]:
            digest = checked_sha256(note["file"])
            rows.append((f"{name}, converted", note["file"], digest, verification(note["file"])))
    return rows


def write_run_files(samples, tables, reasons, notes, settings, overview, unfinished, models, parameters,
                    overview_view, unfinished_view):
    """The files of the module docstring: `samples`, `tables` and `reasons` as `overview_rows` takes
    them, `notes` the model notes (or their paths), `settings` maps setting -> value."""
    runs = overview_rows(samples, tables, reasons)
    left = [(s, _one_line(reasons[s])) for s in samples if s in reasons]
    used = model_rows(notes)
    outputs = overview, unfinished, models, parameters, overview_view, unfinished_view
    with atomic_outputs(*outputs) as (t_overview, t_left, t_models, t_params, v_overview, v_left):
        write_tsv(t_overview, OVERVIEW_COLUMNS, runs)
        write_tsv(t_left, UNFINISHED_COLUMNS, left)
        write_tsv(t_models, MODEL_COLUMNS, used)
        write_tsv(t_params, ["setting", "value"], settings.items())
        v_overview.write_text(html_table(OVERVIEW_COLUMNS, runs), encoding="utf-8")
        v_left.write_text(html_table(UNFINISHED_COLUMNS, left), encoding="utf-8")


def overview(samples, statuses, sequence_summaries, viral_regions, **run_files):
    """The `overview` step as its rule runs it: `sample_outcomes` on the rule's inputs, then
    `write_run_files` (`run_files`: its other arguments)."""
    tables, reasons = sample_outcomes(samples, statuses, sequence_summaries, viral_regions)
    write_run_files(samples, tables, reasons, **run_files)
