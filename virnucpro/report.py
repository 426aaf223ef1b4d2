"""The files of the whole run that the report's front page shows (`write_run_files`, all together or
none):
- `overview.tsv`: one row per sample: `sample, sequences, bp, viral_sequences, viral_regions, viral_bp`
  (`viral_bp`: bases inside viral regions), read from each sample's tables;
- `models.tsv`: `model, file, sha256` of every model file the run used, and what the classifier was
  made from (the original file it was converted from, or its training) with that sha256;
- `parameters.tsv`: `setting, value`.
"""

from pathlib import Path

from virnucpro.atomic import atomic_outputs
from virnucpro.errors import VirNucProError
from virnucpro.regions import REGION_COLUMNS
from virnucpro.summary import SEQUENCE_COLUMNS
from virnucpro.tables import read_tsv, write_tsv

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


def model_files(esm2, dnabert_s, classifier):
    """(model, file) pairs of every model file the run reads, and (what, sha256) the classifier was made from."""
    from virnucpro.classifier import load_classifier  # torch: only this step reads model files
    from virnucpro.dnabert import find_weights

    clf = load_classifier(classifier)
    files = [
        ("ESM-2 (protein embeddings)", Path(esm2)),
        ("DNABERT-S weights (nucleotide embeddings)", find_weights(dnabert_s)),
        ("DNABERT-S tokenizer", Path(dnabert_s) / "tokenizer.json"),
        ("VirNucPro classifier", Path(classifier)),
    ]
    return files, (clf.source, clf.source_sha256)


def model_rows(esm2, dnabert_s, classifier):
    """The rows of `models.tsv`."""
    from virnucpro.embeddings import file_sha256

    files, (source, source_sha256) = model_files(esm2, dnabert_s, classifier)
    rows = [(name, str(path), file_sha256(path)) for name, path in files]
    if source and source_sha256:
        rows.append(("VirNucPro classifier, made from", source, source_sha256))
    return rows


def write_run_files(samples, sequence_summaries, viral_regions, esm2, dnabert_s, classifier, settings, overview,
                    models, parameters):
    """The three files of the module docstring; `settings` maps setting -> value."""
    runs = overview_rows(samples, sequence_summaries, viral_regions)
    used = model_rows(esm2, dnabert_s, classifier)
    with atomic_outputs(overview, models, parameters) as (t_overview, t_models, t_params):
        write_tsv(t_overview, OVERVIEW_COLUMNS, runs)
        write_tsv(t_models, ["model", "file", "sha256"], used)
        write_tsv(t_params, ["setting", "value"], settings.items())
