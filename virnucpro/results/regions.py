"""Viral regions: where inside each sequence the fragments called viral lie.

Rule (runs of viral fragments with a tolerated gap and a minimum size): the fragments of a sequence are
taken in order, each either viral (the original per-fragment call, max score2 >= max score1 over its
frames), not viral, or without a stop-free frame (no call). A region starts and ends with a viral
fragment; two viral fragments of the same sequence belong to one region when at most
`max_gap_fragments` fragments lie between them (not viral or without a call). A region is kept when it
holds at least `min_viral_fragments` viral fragments, or when its sequence is called viral: then every
run is kept, so that a sequence called viral always has at least one region (a short read called viral
is one region covering it), while a sequence not called viral (a bacterial contig) shows only runs of
`min_viral_fragments` or more (a prophage). Only fragments with frames are viral, so a sequence without
a call (uncut, or without a stop-free frame) has no region.

Coordinates are the fragments' own, as the original cuts them (`virnucpro.frames.fragment_layout`):
`start` is the first base of the region's first viral fragment and `end` the last base of its last
one, 1-based and inclusive; `length = end - start + 1`. `fragments` counts every fragment from the first
to the last viral one, `viral_fragments` the viral ones among them; `mean_virus_score` and
`max_virus_score` are the mean and maximum of the fragment virus scores (max score2) of the region's
fragments that have frames; `whole_sequence` is True when the region runs from base 1 to the end.
Regions are listed sequence by sequence in input order, then by position.

Every region is named `{sequence_id}|viral_region_{start}_{end}` (`region_names`), with its 1-based
inclusive coordinates as in geNomad's `{sequence}|provirus_{start}_{end}`: unique in a sample, since a
sequence's regions never overlap, and the same in the region FASTA, the GFF3 file and the BED track.
"""

import numpy as np

from virnucpro.errors import VirNucProError
from virnucpro.io.tables import score_texts

REGION_COLUMNS = [
    "sequence_id", "start", "end", "length", "fragments", "viral_fragments", "mean_virus_score",
    "max_virus_score", "whole_sequence",
]


def check_region_settings(max_gap_fragments, min_viral_fragments):
    """One-line errors naming the setting for values the rule cannot use."""
    if int(max_gap_fragments) != max_gap_fragments or max_gap_fragments < 0:
        raise VirNucProError(f"regions.max_gap_fragments must be a whole number >= 0, not {max_gap_fragments}")
    if int(min_viral_fragments) != min_viral_fragments or min_viral_fragments < 1:
        raise VirNucProError(
            f"regions.min_viral_fragments must be a whole number >= 1, not {min_viral_fragments}"
        )


def _segment_reduce(ufunc, values, lo, hi):
    """`ufunc.reduce(values[lo[i]:hi[i]])` for disjoint, ordered, non-empty segments."""
    if not lo.size:
        return np.zeros(0, dtype=values.dtype)
    padded = np.r_[values, values[:1]]  # hi may equal len(values)
    return ufunc.reduceat(padded, np.column_stack([lo, hi]).ravel())[::2]


def call_regions(seqs, layout, frag, max_gap_fragments, min_viral_fragments, called):
    """Regions of the module docstring as arrays: owner (sequence index), start, end, fragments,
    viral_fragments, mean, max, whole. `layout`: the sample's fragments (start, length) and `frag` its
    classified fragments in input order with their index into it (`virnucpro.results.sample`);
    `called`: per sequence, whether it is called viral."""
    check_region_settings(max_gap_fragments, min_viral_fragments)
    frag_start, frag_length, index = layout["start"], layout["length"], frag["index"]
    viral = np.flatnonzero(frag["viral"])  # positions in `frag`
    at, owner = index[viral], frag["owner"][viral]
    apart = (owner[1:] != owner[:-1]) | (at[1:] - at[:-1] - 1 > int(max_gap_fragments))
    first = np.flatnonzero(np.r_[True, apart]) if viral.size else np.zeros(0, np.int64)
    last = np.r_[first[1:], viral.size][: first.size] - 1
    n_viral = last - first + 1
    keep = (n_viral >= int(min_viral_fragments)) | np.asarray(called, dtype=bool)[owner[first]]
    first, last, n_viral = first[keep], last[keep], n_viral[keep]
    lo, hi = viral[first], viral[last] + 1  # the region's classified fragments are frag[lo:hi]
    scores = frag["max2"].astype(np.float64)
    start = frag_start[at[first]] + 1
    end = frag_start[at[last]] + frag_length[at[last]]
    owner = owner[first]
    return {
        "owner": owner,
        "start": start,
        "end": end,
        "fragments": at[last] - at[first] + 1,
        "viral_fragments": n_viral,
        "mean": _segment_reduce(np.add, scores, lo, hi) / (hi - lo),
        "max": _segment_reduce(np.maximum, scores, lo, hi),
        "whole": (start == 1) & (end == seqs["length"][owner]),
    }


def region_rows(seqs, regions):
    """The region table's rows (REGION_COLUMNS) as text, one row per region."""
    r = regions
    rows = zip(
        seqs["sequence_id"][r["owner"]], r["start"].tolist(), r["end"].tolist(),
        (r["end"] - r["start"] + 1).tolist(), r["fragments"].tolist(), r["viral_fragments"].tolist(),
        score_texts(r["mean"]), score_texts(r["max"]), r["whole"].tolist(),
    )
    return [[str(x) for x in row] for row in rows]


def region_names(seqs, regions):
    """`{sequence_id}|viral_region_{start}_{end}` of every region, in the order of `regions`."""
    ids = seqs["sequence_id"]
    return [f"{ids[o]}|viral_region_{s}_{e}"
            for o, s, e in zip(regions["owner"].tolist(), regions["start"].tolist(), regions["end"].tolist())]


def region_numbers(regions):
    """(k, n) per region: it is the k-th (from 1) of the n regions of its sequence (regions sorted by owner)."""
    owner = regions["owner"]
    first = np.searchsorted(owner, owner, side="left")
    return np.arange(owner.size) - first + 1, np.searchsorted(owner, owner, side="right") - first
