"""Text forms shared by every table, track and view of a sample's results.

Scores, fractions and means are written with `SCORE_DECIMALS` decimals (`0.500000`, `1.000000`), the
same in every table, so columns line up and compare as text; a missing value is `NA`. The files kept in
the original tool's own formats (`virnucpro.results.original_files`) print scores as the original does instead.
"""

import numpy as np

SCORE_DECIMALS = 6


def score_text(x):
    """`x` with SCORE_DECIMALS decimals, or `NA` for NaN."""
    return "NA" if np.isnan(x) else f"{x:.{SCORE_DECIMALS}f}"


def score_texts(values):
    """`score_text` of every value of a column (an array), as a list: one formatting call per value."""
    text = f"{{:.{SCORE_DECIMALS}f}}".format
    return ["NA" if x != x else text(x) for x in np.asarray(values, dtype=np.float64).tolist()]


def read_tsv(path):
    """(header, rows) of a tab-separated table with a header line; every field is a string."""
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    if not lines:
        return [], []
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def write_tsv(path, columns, rows):
    """Write `columns` as the header and `rows` (iterables of values, written with `str`)."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\t".join(columns) + "\n")
        fh.writelines("\t".join(map(str, row)) + "\n" for row in rows)
