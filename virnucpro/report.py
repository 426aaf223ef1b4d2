"""What the Snakemake report shows besides the plots: tables a person reads in the page, the overview of
all samples, and the models and parameters of the run.

- `write_table_views`: a sample's sequence summary and viral regions as self-contained HTML pages (no
  script, no outside resource; the report shows them in the page). The sequence summary lists viral
  calls first, then by mean virus score (highest first), at most `max_rows` rows each; the regions keep
  their table's order. The TSV files stay the complete tables.
- `write_overview`: one row per sample: `sample, sequences, bp, viral_sequences, viral_regions, viral_bp`
  (`viral_bp`: bases inside viral regions), read from each sample's tables.
- `write_run_info`: `models.tsv` (`model, file, sha256` of every model file the run used, the original
  classifier the converted one was made from included) and `parameters.tsv` (`setting, value`).
"""

import html
from pathlib import Path

from virnucpro.atomic import atomic_outputs
from virnucpro.errors import VirNucProError
from virnucpro.tables import read_tsv, write_tsv

OVERVIEW_COLUMNS = ["sample", "sequences", "bp", "viral_sequences", "viral_regions", "viral_bp"]
STYLE = """
body { font-family: system-ui, sans-serif; font-size: 13px; margin: 1em; color: #222; }
h1 { font-size: 17px; } p { max-width: 60em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #eee; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; white-space: normal; overflow-wrap: anywhere;
  min-width: 14em; max-width: 30em; }
tr.viral td { background: #fde2e2; }
"""


def _table(path, columns):
    header, rows = read_tsv(path)
    if header != columns:
        raise VirNucProError(f"{path}: columns are {header}, expected {columns}")
    return rows


def _page(title, intro, header, rows, highlight, total):
    """A self-contained HTML page: title, intro (HTML), the table of `rows` (rows to highlight marked)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join(
        f'<tr{" class=viral" if v else ""}>' + "".join(f"<td>{html.escape(x)}</td>" for x in row) + "</tr>\n"
        for row, v in zip(rows, highlight)
    )
    count = f"All {total} rows." if len(rows) == total else f"The first {len(rows)} of {total} rows."
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n<p>{intro} {count}</p>\n"
        f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table></body></html>\n"
    )


def write_table_views(sequence_summary, viral_regions, sequences_html, regions_html, sample, max_rows):
    """The two HTML views of the module docstring."""
    from virnucpro.regions import REGION_COLUMNS
    from virnucpro.summary import SEQUENCE_COLUMNS

    if int(max_rows) < 1:
        raise VirNucProError(f"report.max_table_rows must be 1 or more, not {max_rows}")
    seqs = _table(sequence_summary, SEQUENCE_COLUMNS)
    regions = _table(viral_regions, REGION_COLUMNS)
    call, mean = SEQUENCE_COLUMNS.index("call"), SEQUENCE_COLUMNS.index("mean_virus_score")
    ranked = sorted(seqs, key=lambda r: (r[call] != "viral", -float(r[mean]) if r[mean] != "NA" else 1.0))
    shown_seqs, shown_regions = ranked[: int(max_rows)], regions[: int(max_rows)]
    with atomic_outputs(sequences_html, regions_html) as (t_seq, t_reg):
        Path(t_seq).write_text(_page(
            f"{sample}: sequence summary",
            "One row per input sequence; <b>call</b> says whether it is viral (highlighted). Viral calls come "
            "first, then the highest mean virus score; sequence_summary.tsv has every row in input order.",
            SEQUENCE_COLUMNS, shown_seqs, [r[call] == "viral" for r in shown_seqs], len(seqs),
        ), encoding="utf-8")
        Path(t_reg).write_text(_page(
            f"{sample}: viral regions",
            "Where inside each sequence the viral part lies: <b>start</b> and <b>end</b> in bp (1-based, "
            "inclusive); <b>whole_sequence</b> True means the whole sequence is viral.",
            REGION_COLUMNS, shown_regions, [False] * len(shown_regions), len(regions),
        ), encoding="utf-8")


def write_overview(samples, sequence_summaries, viral_regions, out):
    """The overview table of all samples (one row each, in the order given)."""
    from virnucpro.regions import REGION_COLUMNS
    from virnucpro.summary import SEQUENCE_COLUMNS

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
    with atomic_outputs(out) as (tmp,):
        write_tsv(tmp, OVERVIEW_COLUMNS, rows)


def model_files(esm2, dnabert_s, classifier):
    """(model, file) pairs of every model file the run reads, and the original classifier's sha256."""
    from virnucpro.classifier import load_classifier
    from virnucpro.dnabert import find_weights

    clf = load_classifier(classifier)
    files = [
        ("ESM-2 (protein embeddings)", Path(esm2)),
        ("DNABERT-S weights (nucleotide embeddings)", find_weights(dnabert_s)),
        ("DNABERT-S tokenizer", Path(dnabert_s) / "tokenizer.json"),
        ("VirNucPro classifier", Path(classifier)),
    ]
    return files, (clf.source, clf.source_sha256)


def write_run_info(esm2, dnabert_s, classifier, settings, models_out, parameters_out):
    """`models.tsv` and `parameters.tsv` of the module docstring; `settings` maps setting -> value."""
    from virnucpro.embeddings import file_sha256

    files, (source, source_sha256) = model_files(esm2, dnabert_s, classifier)
    rows = [(name, str(path), file_sha256(path)) for name, path in files]
    if source and source_sha256:
        rows.append(("VirNucPro classifier, made from", source, source_sha256))
    with atomic_outputs(models_out, parameters_out) as (t_models, t_params):
        write_tsv(t_models, ["model", "file", "sha256"], rows)
        write_tsv(t_params, ["setting", "value"], settings.items())
