"""Genome-browser tracks of a sample (IGV, JBrowse, the UCSC browser load them as they are).

Both files start with a `track` line, use 0-based half-open coordinates (BED convention: a region of
bases 1..100 is `0  100`) and are sorted by sequence id (byte order, as `LC_ALL=C sort -k1,1 -k2,2n`),
then by start.
- `virus_score.bedGraph`: the virus score (max score2 over its frames) of every fragment with frames,
  at the fragment's coordinates. Where the original's fragments overlap (the last fragments of a
  sequence whose length is not a multiple of the fragment size), a fragment's interval ends where the
  next one starts, so that intervals never overlap (bedGraph forbids it); fragments without a frame
  leave a gap.
- `viral_regions.bed`: the viral regions (`virnucpro.results.regions`) as BED9: name
  `{sequence_id}|viral_region_{start}_{end}` (`region_names`: unique, 1-based inclusive coordinates as in
  the region FASTA and GFF3, while the BED columns are 0-based), score 0-1000 from the mean virus score,
  strand `.`, drawn in red.
"""

import numpy as np

from virnucpro.io.tables import score_texts
from virnucpro.results.regions import region_names

REGION_RGB = "200,0,0"


def _id_rank(ids):
    """Rank of each sequence id in byte (code point) order."""
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.argsort(np.asarray(ids, dtype=object), kind="stable")] = np.arange(len(ids))
    return rank


def _quote(text):
    return str(text).replace('"', "'")


def write_score_track(path, seqs, layout, frag, sample):
    """The bedGraph of fragment virus scores; see the module docstring (`layout`, `frag`: as
    `virnucpro.results.sample` holds them)."""
    owner_all, start, length = layout["owner"], layout["start"], layout["length"]
    same_next = np.r_[owner_all[1:] == owner_all[:-1], False]
    stop = np.where(same_next, np.r_[start[1:], 0], start + length)  # ends where the next fragment starts
    at = frag["index"]
    order = np.lexsort((at, _id_rank(seqs["sequence_id"])[frag["owner"]]))
    ids = seqs["sequence_id"]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(
            f'track type=bedGraph name="{_quote(sample)} virus score" description="VirNucPro virus score '
            'of each fragment (max score2 over its frames)" visibility=full autoScale=off viewLimits=0:1 '
            "color=200,0,0 altColor=0,0,139 graphType=bar\n"
        )
        fh.writelines(
            f"{ids[o]}\t{s}\t{e}\t{v}\n"
            for o, s, e, v in zip(frag["owner"][order].tolist(), start[at[order]].tolist(),
                                  stop[at[order]].tolist(), score_texts(frag["max2"][order]))
        )


def write_region_track(path, seqs, regions, sample):
    """The BED9 file of viral regions; see the module docstring."""
    r = regions
    names = region_names(seqs, regions)
    order = np.lexsort((r["start"], _id_rank(seqs["sequence_id"])[r["owner"]]))
    ids = seqs["sequence_id"]
    score = np.rint(np.nan_to_num(r["mean"]) * 1000).astype(np.int64)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(
            f'track name="{_quote(sample)} viral regions" description="VirNucPro viral regions (runs of '
            'fragments called viral)" visibility=pack itemRgb="On"\n'
        )
        for i in order.tolist():
            s, e = int(r["start"][i]) - 1, int(r["end"][i])
            fh.write(f"{ids[r['owner'][i]]}\t{s}\t{e}\t{names[i]}\t{score[i]}\t.\t{s}\t{e}\t{REGION_RGB}\n")
