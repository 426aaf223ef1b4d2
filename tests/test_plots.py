"""The along-sequence plot as pixels (virnucpro.results.plots): what is drawn is the virus score
(score2), and a short viral stretch of a very long record is visible, drawn per pixel column."""

import numpy as np
import pytest

from virnucpro.frames import fragment_layout
from virnucpro.results.plots import PIXEL_COLUMNS, per_column, plot_along
from virnucpro.results.sample import Sample

RED, BLUE, BAND = (1.0, 0.0, 0.0), (0.0, 0.0, 0.545), (0xFC / 255, 0xD2 / 255, 0xD2 / 255)


def along_png(path, length, viral_span, fragment_size=500, regions=()):
    """Draw one sequence of `length` bp whose fragments inside `viral_span` (0-based, end excluded)
    have virus score 0.95 (other score 0.05, called viral), every other one 0.1 (other score 0.9)."""
    owner, num, start, size = fragment_layout(np.array([length]), fragment_size)
    inside = (start >= viral_span[0]) & (start + size <= viral_span[1])
    layout = {"owner": owner, "number": num, "start": start, "length": size}
    frag = {"owner": np.zeros(len(num), dtype=np.int64), "num": num, "index": np.arange(len(num)), "viral": inside,
            "max2": np.where(inside, 0.95, 0.1).astype(np.float32),
            "max1": np.where(inside, 0.05, 0.9).astype(np.float32)}
    t = {"length": np.array([length]), "sequence_id": np.array(["chr1"]), "call": np.array(["not_viral"]),
         "viral_fragments": np.array([int(inside.sum())]), "fragments_with_frames": np.array([len(num)]),
         "status": np.array(["classified"]), "mean_virus_score": np.array([0.1])}
    starts = np.array([r[0] for r in regions], dtype=np.int64)
    ends = np.array([r[1] for r in regions], dtype=np.int64)
    reg = {"owner": np.zeros(len(regions), dtype=np.int64), "start": starts, "end": ends}
    plot_along(path, Sample("s", {}, layout, {}, frag, t, reg), np.array([0]))
    from matplotlib.image import imread

    return imread(path)[..., :3], int(inside.sum())


def pixels_of(image, colour, tol=0.25):
    """(rows, columns) of the pixels within `tol` of `colour`."""
    return np.nonzero(np.all(np.abs(image - np.array(colour)) < tol, axis=-1))


def data_line(image):
    """The dark blue line of the scores outside the viral stretch: its row and its first and last column."""
    rows, cols = pixels_of(image, BLUE)
    row = np.bincount(rows).argmax()  # the line across the panel (the legend's handle is short)
    on = cols[rows == row]
    return row, on.min(), on.max()


@pytest.mark.parametrize("length,span", [(30_000_000, (15_000_000, 15_020_000)), (20_000, (5_000, 10_000))])
def test_a_viral_stretch_is_drawn_at_its_place_at_the_virus_score(tmp_path, length, span):
    """30 Mbp (60,000 fragments, 40 of them viral: 1/1500 of the length, under one pixel each) and a
    short record (40 fragments, drawn one by one): red pixels where the stretch lies, above the blue
    line of the others: the plotted height is score2 (0.95 viral, 0.1 others), not score1 (0.05, 0.9)."""
    image, n_viral = along_png(tmp_path / "along.png", length, span, regions=[(span[0] + 1, span[1])])
    assert n_viral == (span[1] - span[0]) // 500
    blue_row, left, right = data_line(image)
    assert right - left > 0.8 * PIXEL_COLUMNS  # the line spans the panel
    rows, cols = pixels_of(image, RED)
    in_panel = rows < blue_row  # the legend's red handle lies below the panel
    rows, cols = rows[in_panel], cols[in_panel]
    assert len(cols) >= 2, "no red pixel above the line of the other fragments"
    where = left + (right - left) * np.array(span) / length
    assert where[0] - 2 <= cols.min() and cols.max() <= where[1] + 2, (cols.min(), cols.max(), where)
    height = blue_row - rows.mean()  # 0.95 - 0.1 of the y range 1.07 of a panel ~150 px high
    assert height > 60, height
    band_rows, band = pixels_of(image, BAND, tol=0.02)  # the region's band, at least 3 pixel columns wide
    band = band[band_rows < blue_row]  # not the legend's patch
    assert band.max() - band.min() + 1 >= 3 and where[0] - 3 <= band.min() and band.max() <= where[1] + 3


def test_per_column_keeps_each_columns_highest_score_and_any_viral_call():
    start = np.arange(0, 10_000, 500)
    score = np.full(20, 0.1)
    score[7] = 0.9
    viral = np.zeros(20, dtype=bool)
    viral[7] = True
    segments, called = per_column(start, np.full(20, 500), score, viral, 10_000, columns=4)
    assert segments.tolist() == [[[-1250, 0.1], [3750, 0.1]], [[1250, 0.9], [6250, 0.9]],  # two columns wide
                                 [[3750, 0.1], [8750, 0.1]], [[6250, 0.1], [11_250, 0.1]]]
    assert called.tolist() == [False, True, False, False]
    segments, called = per_column(start, np.full(20, 500), score, viral, 10_000, columns=20)
    assert segments[7].tolist() == [[3500, 0.9], [4000, 0.9]] and len(segments) == 20  # one per fragment
