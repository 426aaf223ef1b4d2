"""The files of the whole run that the report's front page shows (`write_run_files`, all together or
none):
- `overview.tsv`: one row per sample: `sample, sequences, bp, viral_sequences, viral_regions, viral_bp`
  (`viral_bp`: bases inside viral regions), read from each sample's tables;
- `models.tsv`: `model, file, sha256, verified` of every model file the run used, as the models step
  noted them (`virnucpro.io.notes`): each source file, and the conversion the steps loaded, where there
  is one; `verified` says how the file was verified (its checksum record), or "unverified";
- `parameters.tsv`: `setting, value`.
"""

from pathlib import Path

from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import atomic_outputs
from virnucpro.io.tables import read_tsv, write_tsv
from virnucpro.results.regions import REGION_COLUMNS
from virnucpro.steps.summarize import SEQUENCE_COLUMNS

OVERVIEW_COLUMNS = ["sample", "sequences", "bp", "viral_sequences", "viral_regions", "viral_bp"]


def _table(path, columns):
    header, rows = read_tsv(path)
    if header != columns:
        raise VirNucProError(f"{path}: columns are {header}, expected {columns}")
    return rows


def overview_rows(samples, sequence_summaries, viral_regions):
    """The rows of `overview.tsv`, one per sample in the order given."""
    if not len(samples) == len(sequence_summaries) == len(viral_regions):
        raise VirNucProError(f"{len(samples)} samples, {len(sequence_summaries)} summaries and "
                             f"{len(viral_regions)} region tables")
    length, call = SEQUENCE_COLUMNS.index("length"), SEQUENCE_COLUMNS.index("call")
    region_length = REGION_COLUMNS.index("length")
    rows = []
    for sample, summary, regions in zip(samples, sequence_summaries, viral_regions):
        seqs, regs = _table(summary, SEQUENCE_COLUMNS), _table(regions, REGION_COLUMNS)
        rows.append((sample, len(seqs), sum(int(r[length]) for r in seqs), sum(r[call] == "viral" for r in seqs),
                     len(regs), sum(int(r[region_length]) for r in regs)))
    return rows


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


def write_run_files(samples, sequence_summaries, viral_regions, notes, settings, overview, models, parameters):
    """The three files of the module docstring; `settings` maps setting -> value, `notes` are the model
    notes (or their paths)."""
    runs = overview_rows(samples, sequence_summaries, viral_regions)
    used = model_rows(notes)
    with atomic_outputs(overview, models, parameters) as (t_overview, t_models, t_params):
        write_tsv(t_overview, OVERVIEW_COLUMNS, runs)
        write_tsv(t_models, MODEL_COLUMNS, used)
        write_tsv(t_params, ["setting", "value"], settings.items())
