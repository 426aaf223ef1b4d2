"""A sample's sequence summary and viral regions as self-contained HTML pages, for the report to show
in the page (no script, no outside resource). The sequence summary lists viral calls first, then by mean
virus score (highest first); the regions keep their table's order; at most `max_rows` rows each, the
TSV files staying the complete tables. The table lies in a box that scrolls (sideways where the table is
wider than the window, down where it is taller), its header row staying at the top of the box: the page
itself never gets wider than the window.
"""

import html
from pathlib import Path

from virnucpro.errors import VirNucProError

STYLE = """
body { font-family: system-ui, sans-serif; font-size: 13px; margin: 1em; color: #222; }
h1 { font-size: 17px; } p { max-width: 60em; }
div.scroll { overflow: auto; max-width: 100%; max-height: 85vh; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #eee; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; white-space: normal; overflow-wrap: anywhere;
  min-width: 14em; max-width: 30em; }
tr.viral td { background: #fde2e2; }
"""


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
        f"<div class=scroll><table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table></div>"
        "</body></html>\n"
    )


def write_table_views(sequence_summary, viral_regions, sequences_html, regions_html, sample, max_rows):
    """Write the two pages from the tables `sequence_summary` and `viral_regions`, each a
    (header, rows) pair with every field as the TSV file holds it (not atomic: callers write to
    temporary names)."""
    if int(max_rows) < 1:
        raise VirNucProError(f"report.max_table_rows must be 1 or more, not {max_rows}")
    header, seqs = sequence_summary
    call, mean = header.index("call"), header.index("mean_virus_score")
    ranked = sorted(seqs, key=lambda r: (r[call] != "viral", -float(r[mean]) if r[mean] != "NA" else 1.0))
    shown = ranked[: int(max_rows)]
    Path(sequences_html).write_text(_page(
        f"{sample}: sequence summary",
        "One row per input sequence; <b>call</b> says whether it is viral (highlighted). Viral calls come "
        "first, then the highest mean virus score; sequence_summary.tsv has every row in input order.",
        header, shown, [r[call] == "viral" for r in shown], len(seqs),
    ), encoding="utf-8")
    header, regions = viral_regions
    shown = regions[: int(max_rows)]
    Path(regions_html).write_text(_page(
        f"{sample}: viral regions",
        "Where inside each sequence the viral part lies: <b>start</b> and <b>end</b> in bp (1-based, "
        "inclusive); <b>whole_sequence</b> True means the whole sequence is viral.",
        header, shown, [False] * len(shown), len(regions),
    ), encoding="utf-8")
