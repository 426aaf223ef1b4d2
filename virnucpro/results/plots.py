"""The two plots of a sample, as PNG.

- Histogram of the virus score (score2) of every frame, bars coloured by the frame's call (red: virus,
  score2 > score1; dark blue: others), the 0.5 line where the frame call changes dashed and labelled.
- Virus score along the `top` sequences (the classified ones with the highest mean virus score, input
  order on ties), one panel each: every fragment with frames is a segment at its position and at the
  height of its virus score (max score2 over its frames), red when the fragment is called viral and dark
  blue otherwise (the colours of the original's `drew_fig.py`); viral regions are light red bands.
  A sequence longer than `PIXEL_COLUMNS` fragments is drawn per pixel column instead (`per_column`):
  its length cut into `PIXEL_COLUMNS` equal columns (one per pixel of the axes' width), each drawn at
  the highest virus score of the fragments whose middle lies in it, red when any of them is called
  viral, and drawn two columns wide (half a column beyond each side, viral ones over the others) so
  that it covers a whole pixel wherever it falls; a region band is at least `REGION_COLUMNS` columns
  wide. So a 20 kb prophage in a 30 Mbp record stays visible.
Both carry the sample name in the title and a colour legend; ids longer than `MAX_ID_CHARS` are
shortened with an ellipsis in the middle. Margins are fixed (`_margins`), in inches, so each figure is
drawn once, when it is saved: a layout engine would draw it a second time to measure it.
"""

import numpy as np

VIRAL_COLOUR, OTHER_COLOUR, REGION_COLOUR = "red", "darkblue", "#fcd2d2"
MAX_ID_CHARS = 60
ALONG_WIDTH, DPI = 14, 100  # inches, pixels per inch: the along-sequence figure
ALONG_LEFT, ALONG_RIGHT = 0.8, 0.45  # inches beside the panels: y labels; the last x tick label's overhang
PIXEL_COLUMNS = round((ALONG_WIDTH - ALONG_LEFT - ALONG_RIGHT) * DPI)  # the panels' width in pixels
REGION_COLUMNS = 3  # the narrowest region band, in pixel columns
ELLIPSIS = "\u2026"


def shorten(text, width=MAX_ID_CHARS):
    """`text`, or its first and last characters around an ellipsis so that it is `width` long."""
    text = str(text)
    if len(text) <= width:
        return text
    tail = (width - 1) // 2
    return text[: width - 1 - tail] + ELLIPSIS + text[len(text) - tail :]


def _figure(width, height):
    from matplotlib.figure import Figure  # heavy: only the summary step draws

    return Figure(figsize=(width, height), dpi=DPI)


def _margins(fig, left, right, top, bottom, gap=0.0):
    """Place the axes by margins in inches (and `gap` inches between stacked panels)."""
    width, height = fig.get_size_inches()
    rows = max(len(fig.axes), 1)
    panel = (height - top - bottom - gap * (rows - 1)) / rows
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height,
                        hspace=gap / panel)


def _style(ax):
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("gray")
    ax.tick_params(colors="gray", which="both")


def _threshold(ax, vertical):
    """The dashed 0.5 line, labelled on the plot."""
    if vertical:
        ax.axvline(0.5, color="black", linestyle="--", linewidth=1, label="0.5: a frame above it is called virus")
        ax.annotate("0.5", (0.5, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", fontsize=9)
    else:
        ax.axhline(0.5, color="gray", linestyle="--", linewidth=1, zorder=1)
        ax.annotate("0.5", (1.0, 0.5), xycoords=("axes fraction", "data"), xytext=(-2, 2), ha="right",
                    textcoords="offset points", fontsize=9, color="gray")


def plot_histogram(path, frames, sample):
    """Histogram of frame virus scores in [0, 1] (see the module docstring)."""
    s1 = np.asarray(frames["score1"], dtype=np.float64)
    s2 = np.asarray(frames["score2"], dtype=np.float64)
    virus = s2 > s1
    fig = _figure(8, 4.5)
    ax = fig.add_subplot()
    ax.hist([s2[~virus], s2[virus]], bins=np.linspace(0.0, 1.0, 51), stacked=True, edgecolor="white",
            color=[OTHER_COLOUR, VIRAL_COLOUR],
            label=[f"frame called others ({int((~virus).sum())})", f"frame called virus ({int(virus.sum())})"])
    _threshold(ax, vertical=True)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("virus score (score2) of each frame")
    ax.set_ylabel("frames")
    ax.set_title(f"{shorten(sample)}: virus scores of {len(s2)} frames", loc="left", fontweight="bold")
    fig.legend(loc="lower center", ncols=3, fontsize=9, frameon=False)
    _style(ax)
    _margins(fig, left=0.8, right=0.25, top=0.4, bottom=1.0)
    fig.savefig(path, format="png")


def top_by_mean_score(t, k):
    """Indices of the k classified sequences with the highest mean virus score (input order on ties)."""
    classified = np.flatnonzero(t["status"] == "classified")
    order = np.argsort(-t["mean_virus_score"][classified], kind="stable")
    return classified[order[:k]]


def _legend(fig):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Line2D([], [], color=VIRAL_COLOUR, linewidth=3, label="fragment called viral"),
        Line2D([], [], color=OTHER_COLOUR, linewidth=3, label="fragment not called viral"),
        Patch(color=REGION_COLOUR, label="viral region"),
        Line2D([], [], color="gray", linestyle="--", linewidth=1, label="virus score 0.5"),
    ]
    fig.legend(handles=handles, loc="lower center", ncols=4, frameon=False, fontsize=10)


def per_column(start, length, score, viral, seq_length, columns=PIXEL_COLUMNS):
    """(segments, viral) to draw for fragments at 0-based `start` with `length`, virus `score` and
    `viral` call in a sequence of `seq_length` bp: one segment per fragment while the sequence has at
    most `columns` fragments, otherwise one per column holding fragments (see the module docstring)."""
    score = np.asarray(score, dtype=np.float64)
    if len(score) <= columns:
        return np.stack([np.column_stack([start, score]), np.column_stack([start + length, score])], axis=1), viral
    width = seq_length / columns
    col = np.minimum(((start + length / 2) / width).astype(np.int64), columns - 1)
    best = np.full(columns, -np.inf)
    np.fmax.at(best, col, score)
    any_viral = np.bincount(col, weights=np.asarray(viral, dtype=np.float64), minlength=columns) > 0
    used = np.flatnonzero(np.isfinite(best))
    y = best[used]
    left, right = (used - 0.5) * width, (used + 1.5) * width  # two columns wide: no column falls between pixels
    return np.stack([np.column_stack([left, y]), np.column_stack([right, y])], axis=1), any_viral[used]


def _panel(ax, t, i, segments, viral, regions):
    from matplotlib.collections import LineCollection

    least = REGION_COLUMNS * int(t["length"][i]) / PIXEL_COLUMNS  # a band narrower would hardly show
    for start, end in regions:
        middle, half = (start - 1 + end) / 2, max(end - start + 1, least) / 2
        ax.axvspan(middle - half, middle + half, color=REGION_COLOUR, linewidth=0, zorder=0)
    order = np.argsort(viral, kind="stable")  # viral ones drawn last, over their neighbours
    segments, colours = segments[order], np.where(viral, VIRAL_COLOUR, OTHER_COLOUR)[order]
    ax.add_collection(LineCollection(segments, colors=colours, linewidths=2.5, capstyle="butt", zorder=2))
    _threshold(ax, vertical=False)
    ax.set_xlim(0, int(t["length"][i]))
    ax.set_ylim(-0.02, 1.05)
    ax.set_ylabel("virus score")
    ax.set_title(f"{shorten(t['sequence_id'][i])}  ({t['length'][i]} bp, {t['call'][i]}, "
                 f"{t['viral_fragments'][i]}/{t['fragments_with_frames'][i]} fragments viral, "
                 f"{len(regions)} viral region(s))", fontsize=11, fontweight="bold", loc="left")
    ax.ticklabel_format(style="plain", axis="x", useOffset=False)
    _style(ax)


def plot_along(path, sample, top):
    """Virus score of each fragment along the sequences `top` of `sample` (a `virnucpro.results.sample.Sample`),
    one panel per sequence."""
    t, frag, regions = sample.table, sample.frag, sample.regions
    n = max(len(top), 1)
    fig = _figure(ALONG_WIDTH, 1.9 * n + 1.0)
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    title = dict(x=0.01, y=1 - 0.1 / fig.get_figheight(), ha="left", va="top", fontweight="bold")
    if not len(top):
        fig.suptitle(f"{shorten(sample.name)}: virus score along sequences", **title)
        axes[0].text(0.5, 0.5, "no sequence was classified", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
        fig.savefig(path, format="png")
        return
    fig.suptitle(f"{shorten(sample.name)}: virus score along the {len(top)} sequence(s) with the highest mean "
                 "virus score", fontsize=13, **title)
    _legend(fig)
    for ax, i in zip(axes, top.tolist()):
        mine = frag["owner"] == i
        at = frag["index"][mine]  # into the sample's fragment layout
        segments, viral = per_column(sample.layout["start"][at], sample.layout["length"][at], frag["max2"][mine],
                                     frag["viral"][mine], int(t["length"][i]))
        own = regions["owner"] == i
        _panel(ax, t, i, segments, viral, list(zip(regions["start"][own], regions["end"][own])))
    axes[-1].set_xlabel("position (bp)")
    _margins(fig, left=ALONG_LEFT, right=ALONG_RIGHT, top=0.75, bottom=0.95, gap=0.55)
    fig.savefig(path, format="png")
