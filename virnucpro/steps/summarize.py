"""Results of one sample: per-fragment calls, one row per input sequence, viral regions, viral
sequences, genome-browser tracks, the original tool's own files, plots.

Inputs: the per-frame table `prediction_results.tsv` (the original's columns `Sequence_ID, Prediction,
score1, score2`; frame ids `{seq_id}_chunk_{n}{F|R}{1-3}`, parsed from the right so sequence ids may
hold underscores), the manifest written by `prepare` (`sequence_id, length, fragments, kept_frames`, one
row per input sequence in input order), the input FASTA/FASTQ and the fragment size.

Definitions:
- a fragment's virus score is the maximum score2 over its frames; the original per-fragment call is
  viral when max(score2) >= max(score1) over its frames (ties are viral);
- per sequence: `fragments_with_frames` counts fragments that kept at least one frame,
  `viral_fraction` = viral fragments / fragments with frames, `max_virus_score` and
  `mean_virus_score` are the maximum and the mean of its fragments' virus scores;
- `status` says why a sequence has a call or none: `shorter_than_min_length` when `prepare` did not cut
  it (the manifest lists no fragment: shorter than the minimum length), `no_stop_free_frame` when no
  fragment kept a frame, `classified` otherwise; `call` is `viral` when viral_fraction >= threshold and
  at least one fragment is viral, `not_viral` otherwise, and `no_call` for unclassified sequences;
- the evidence of a call: `fragments_with_frames` is the number of fragments scored and
  `viral_fraction` the score the call compares with the threshold; `confidence` is the share of the
  scored fragments whose own call agrees with the sequence's (viral_fraction for a viral call,
  1 - viral_fraction for not_viral) and `fragments_to_flip` the fewest fragment calls that, changed,
  would change the sequence's call (a margin counted in fragments: 1 means one fragment decides); both
  `NA` for `no_call`;
- viral regions: runs of viral fragments, `virnucpro.results.regions`; every sequence called viral has at
  least one, and only classified sequences have any.

Outputs (all appear together or not at all; those given as None are not written):
- `fragment_calls.tsv`: `Modified_ID` (the fragment id), `Is_Virus` (True/False), `max_score1`,
  `max_score2`, one row per fragment with frames, in input order;
- `sequence_summary.tsv`: one row for every sequence of the manifest, in input order;
- `viral_regions.tsv` and the tracks `virus_score.bedGraph`, `viral_regions.bed` (`virnucpro.results.tracks`);
- `viral.fna`: the input sequences called viral with their full headers, and `viral_regions.fna`: the
  bases of every viral region (`virnucpro.results.viral_fasta`);
- `viral_regions.gff3`: the viral regions as GFF3 features (`virnucpro.results.gff`);
- `prediction_results.txt`, `prediction_results_highestscore.csv` (`virnucpro.results.original_files`);
- the histogram and the along-sequence plot (`virnucpro.results.plots`);
- the sequence summary and viral regions as HTML pages for the report (`virnucpro.results.views`).
Scores, fractions and means in our tables have the same fixed number of decimals (`virnucpro.io.tables`).
Every frame must belong to a manifest sequence and fragment, and the number of frames of each sequence
must equal its `kept_frames`; a sequence's fragments are those of the fragment size, or none, and the
sequences without any must all be shorter than those with fragments; anything else is an error.
Sequences without a call appear only in `sequence_summary.tsv` (and its view): never in the fragment
calls, regions, tracks, viral FASTA or plots.
"""

import logging

import numpy as np

from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import atomic_outputs
from virnucpro.defaults import (
    MAX_GAP_FRAGMENTS,
    MAX_RECORD_BP,
    MAX_TABLE_ROWS,
    MIN_VIRAL_FRAGMENTS,
    PLOT_TOP_SEQUENCES,
    VIRAL_FRACTION_THRESHOLD,
)
from virnucpro.io.tables import score_texts, write_tsv
from virnucpro.results.gff import write_region_gff
from virnucpro.results.original_files import (
    write_highest_scores,
    write_prediction_results,
)
from virnucpro.results.plots import plot_along, plot_histogram, top_by_mean_score
from virnucpro.results.regions import (
    REGION_COLUMNS,
    call_regions,
    check_region_settings,
    region_names,
    region_rows,
)
from virnucpro.results.tracks import write_region_track, write_score_track
from virnucpro.results.views import write_table_views
from virnucpro.results.viral_fasta import region_headers, write_viral_fasta
from virnucpro.steps.prepare import MANIFEST_COLUMNS

log = logging.getLogger("virnucpro")

PREDICTION_COLUMNS = ["Sequence_ID", "Prediction", "score1", "score2"]
FRAGMENT_COLUMNS = ["Modified_ID", "Is_Virus", "max_score1", "max_score2"]
SEQUENCE_COLUMNS = [
    "sequence_id", "length", "fragments", "fragments_with_frames", "viral_fragments", "viral_fraction",
    "max_virus_score", "mean_virus_score", "status", "call", "confidence", "fragments_to_flip",
]
FRAME_ID = r"^(?P<seq>.+)_chunk_(?P<num>[0-9]+)(?P<frame>[FR][123])$"


def summarize(predictions, manifest, fasta, fragment_calls, sequence_summary, viral_fasta, histogram,
              along, threshold=VIRAL_FRACTION_THRESHOLD, top_sequences=PLOT_TOP_SEQUENCES, *, fragment_size, sample="",
              viral_regions=None,
              score_track=None, region_track=None, original_predictions=None, original_calls=None,
              sequences_view=None, regions_view=None, regions_fasta=None, regions_gff=None, max_gap_fragments=MAX_GAP_FRAGMENTS,
              min_viral_fragments=MIN_VIRAL_FRAGMENTS, max_table_rows=MAX_TABLE_ROWS, max_bp=MAX_RECORD_BP):
    """Write the sample's tables, regions, tracks, viral FASTA, original files, plots and HTML views; see
    the module docstring. `sample` names the sample in plot titles, track names and views. Returns the
    per-sequence table."""
    if not 0.0 <= float(threshold) <= 1.0:
        raise VirNucProError(f"viral fraction threshold must be between 0 and 1, not {threshold}")
    if int(top_sequences) < 0:
        raise VirNucProError(f"top_sequences must be 0 or more, not {top_sequences}")
    check_region_settings(max_gap_fragments, min_viral_fragments)
    seqs = read_manifest(manifest, fragment_size)
    frames = read_predictions(predictions)
    frag = fragment_scores(frames, seqs, predictions, manifest)
    table = sequence_table(seqs, frag, float(threshold))
    regions = call_regions(seqs, frag, fragment_size, max_gap_fragments, min_viral_fragments,
                           called=table["call"] == "viral")
    if (sequences_view or regions_view) and not (sequences_view and regions_view and viral_regions):
        raise VirNucProError("the HTML views need both view paths and the viral region table")
    outputs = (fragment_calls, sequence_summary, viral_fasta, histogram, along, viral_regions, score_track,
               region_track, original_predictions, original_calls, sequences_view, regions_view, regions_fasta,
               regions_gff)
    with atomic_outputs(*outputs) as tmp:
        (t_frag, t_seq, t_fasta, t_hist, t_along, t_regions, t_score, t_bed, t_orig, t_calls, t_vseq, t_vreg,
         t_rfasta, t_gff) = tmp
        _write_fragment_calls(t_frag, seqs, frag)
        summary_rows = sequence_rows(table)
        write_tsv(t_seq, SEQUENCE_COLUMNS, summary_rows)
        n_viral = write_viral_fasta(t_fasta, fasta, table, max_bp, t_rfasta, regions,
                                    region_headers(regions, region_names(seqs, regions), sample))
        if t_gff is not None:
            write_region_gff(t_gff, seqs, regions)
        regions_rows = region_rows(seqs, regions)
        if t_regions is not None:
            write_tsv(t_regions, REGION_COLUMNS, regions_rows)
        if t_score is not None:
            write_score_track(t_score, seqs, frag, fragment_size, sample)
        if t_bed is not None:
            write_region_track(t_bed, seqs, regions, sample)
        if t_orig is not None:
            write_prediction_results(t_orig, frames)
        if t_calls is not None:
            write_highest_scores(t_calls, fragment_ids(seqs, frag), frag["viral"])
        if t_vseq is not None:
            write_table_views((SEQUENCE_COLUMNS, summary_rows), (REGION_COLUMNS, regions_rows), t_vseq, t_vreg,
                              sample, max_table_rows)
        plot_histogram(t_hist, frames, sample)
        plot_along(t_along, table, frag, regions, top_by_mean_score(table, int(top_sequences)), fragment_size,
                   sample)
    _log_counts(table, n_viral, threshold, regions, frag, frames)
    return table


def _log_counts(table, n_viral, threshold, regions, frag, frames):
    status = table["status"]
    log.info(
        "%d sequences: %d classified, %d shorter than min_length, %d without a stop-free frame; %d called viral "
        "(viral fraction >= %s); %d viral region(s); %d fragments with frames, %d frames",
        len(status), int((status == "classified").sum()), int((status == "shorter_than_min_length").sum()),
        int((status == "no_stop_free_frame").sum()), n_viral, threshold, len(regions["owner"]),
        len(frag["owner"]), len(frames["id"]),
    )


# ------------------------------------------------------------------------------------------ reading


def read_manifest(path, fragment_size):
    """Manifest columns as arrays (ids as an object array), checked against `fragment_size`."""
    import pandas as pd

    try:
        df = pd.read_csv(path, sep="\t", dtype={"sequence_id": str}, keep_default_na=False, na_filter=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise VirNucProError(f"{path}: unreadable manifest ({exc})") from None
    if tuple(df.columns) != MANIFEST_COLUMNS:
        raise VirNucProError(
            f"{path}: manifest columns are {list(df.columns)}, expected {list(MANIFEST_COLUMNS)}"
        )
    try:
        seqs = {c: df[c].to_numpy(dtype=np.int64) for c in MANIFEST_COLUMNS[1:]}
    except (ValueError, TypeError):
        raise VirNucProError(f"{path}: manifest counts are not all integers") from None
    seqs["sequence_id"] = df["sequence_id"].to_numpy(dtype=object)
    if df["sequence_id"].duplicated().any():
        dup = df["sequence_id"][df["sequence_id"].duplicated()].iloc[0]
        raise VirNucProError(f"{path}: sequence '{dup}' is listed twice")
    expected = -(-seqs["length"] // int(fragment_size))
    _fail_at_first((expected != seqs["fragments"]) & (seqs["fragments"] != 0), lambda i: (
        f"{path}: sequence '{seqs['sequence_id'][i]}' of {seqs['length'][i]} bp has {seqs['fragments'][i]} "
        f"fragments, not the {expected[i]} of {fragment_size} bp fragments "
        "(manifest from another fragment size?)"
    ))
    _check_uncut(path, seqs)
    return seqs


def _check_uncut(path, seqs):
    """Sequences left uncut (no fragment: shorter than min_length) must all be shorter than those cut."""
    uncut, lengths = seqs["fragments"] == 0, seqs["length"]
    if not uncut.any() or uncut.all():
        return
    longest = np.flatnonzero(uncut)[np.argmax(lengths[uncut])]
    shortest = np.flatnonzero(~uncut)[np.argmin(lengths[~uncut])]
    if lengths[longest] >= lengths[shortest]:
        raise VirNucProError(
            f"{path}: sequence '{seqs['sequence_id'][longest]}' of {lengths[longest]} bp has no fragment, but "
            f"'{seqs['sequence_id'][shortest]}' of {lengths[shortest]} bp was cut: no one min_length gives this "
            "manifest"
        )


def read_predictions(path):
    """Frame ids, parsed id parts and float32 scores of a prediction table."""
    import pandas as pd

    try:
        df = pd.read_csv(
            path, sep="\t", dtype={"Sequence_ID": str, "Prediction": str}, keep_default_na=False,
            na_filter=False,
        )
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise VirNucProError(f"{path}: unreadable prediction table ({exc})") from None
    if list(df.columns) != PREDICTION_COLUMNS:
        raise VirNucProError(f"{path}: columns are {list(df.columns)}, expected {PREDICTION_COLUMNS}")
    try:
        s1 = df["score1"].to_numpy(dtype=np.float32)
        s2 = df["score2"].to_numpy(dtype=np.float32)
    except (ValueError, TypeError):
        raise VirNucProError(f"{path}: scores are not all numbers") from None
    ids = df["Sequence_ID"]
    if ids.duplicated().any():
        raise VirNucProError(f"{path}: frame '{ids[ids.duplicated()].iloc[0]}' appears more than once")
    parts = ids.str.extract(FRAME_ID)
    unparsed = parts["seq"].isna().to_numpy()
    if unparsed.any():
        raise VirNucProError(
            f"{path}: '{ids[unparsed].iloc[0]}' is not a frame id ({{sequence}}_chunk_{{n}}{{F|R}}{{1-3}})"
        )
    return {
        "id": ids.to_numpy(dtype=object),
        "seq": parts["seq"].to_numpy(dtype=object),
        "num": parts["num"].to_numpy(dtype=np.int64),
        "score1": s1,
        "score2": s2,
    }


def _fail_at_first(mask, message):
    """Raise `VirNucProError(message(i))` for the first index `i` where `mask` is true."""
    hits = np.flatnonzero(mask)
    if hits.size:
        raise VirNucProError(message(hits[0]))


# ------------------------------------------------------------------------------------- aggregation


def fragment_scores(frames, seqs, predictions, manifest):
    """Per fragment with frames, in input order: owner (sequence index), number, max score1/score2, call."""
    import pandas as pd

    n_seq = len(seqs["sequence_id"])
    owner = pd.Index(seqs["sequence_id"]).get_indexer(frames["seq"])
    if (owner < 0).any():
        frame = frames["id"][np.flatnonzero(owner < 0)[0]]
        raise VirNucProError(f"{predictions}: frame '{frame}' belongs to no sequence of {manifest}")
    num = frames["num"]
    _fail_at_first((num < 1) | (num > seqs["fragments"][owner]), lambda i: (
        f"{predictions}: frame '{frames['id'][i]}' names fragment {num[i]}, but {manifest} lists "
        f"{seqs['fragments'][owner[i]]} fragment(s) for '{seqs['sequence_id'][owner[i]]}'"
    ))
    seen = np.bincount(owner, minlength=n_seq)
    _fail_at_first(seen != seqs["kept_frames"], lambda i: (
        f"{predictions}: sequence '{seqs['sequence_id'][i]}' has {seen[i]} classified frame(s), but "
        f"{manifest} lists {seqs['kept_frames'][i]} kept frame(s)"
    ))
    first = np.cumsum(seqs["fragments"]) - seqs["fragments"]
    key = first[owner] + num - 1  # global fragment index in input order
    order = np.argsort(key, kind="stable")
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else np.zeros(0, np.int64)
    max1 = np.maximum.reduceat(frames["score1"][order], starts) if key.size else np.zeros(0, np.float32)
    max2 = np.maximum.reduceat(frames["score2"][order], starts) if key.size else np.zeros(0, np.float32)
    return {
        "owner": owner[order][starts],
        "num": num[order][starts],
        "max1": max1,
        "max2": max2,
        "viral": max2 >= max1,
    }


def sequence_table(seqs, frag, threshold):
    """One row per manifest sequence (columns of SEQUENCE_COLUMNS, as arrays)."""
    n = len(seqs["sequence_id"])
    with_frames = np.bincount(frag["owner"], minlength=n)
    viral = np.bincount(frag["owner"], weights=frag["viral"], minlength=n).astype(np.int64)
    score_sum = np.bincount(frag["owner"], weights=frag["max2"].astype(np.float64), minlength=n)
    max_score = np.full(n, np.nan, dtype=np.float32)
    np.fmax.at(max_score, frag["owner"], frag["max2"])
    classified = with_frames > 0
    safe = np.maximum(with_frames, 1)
    fraction = np.where(classified, viral / safe, np.nan)
    is_viral = (fraction >= threshold) & (viral > 0)
    call = np.where(~classified, "no_call", np.where(is_viral, "viral", "not_viral"))
    status = np.select([seqs["fragments"] == 0, ~classified], ["shorter_than_min_length", "no_stop_free_frame"],
                       "classified")
    return {
        "sequence_id": seqs["sequence_id"],
        "length": seqs["length"],
        "fragments": seqs["fragments"],
        "fragments_with_frames": with_frames,
        "viral_fragments": viral,
        "viral_fraction": fraction,
        "max_virus_score": max_score,
        "mean_virus_score": np.where(classified, score_sum / safe, np.nan),
        "status": status,
        "call": call,
        "confidence": np.where(classified, np.where(is_viral, fraction, 1.0 - fraction), np.nan),
        "fragments_to_flip": np.where(classified, _fragments_to_flip(viral, with_frames, is_viral, threshold), -1),
    }


def _fragments_to_flip(viral, scored, is_viral, threshold):
    """Per sequence with `scored` > 0: the fewest fragment calls to change for the sequence's call to change.
    `need` is the fewest viral fragments a viral call takes (m >= 1 with m / scored >= threshold, the
    same float comparison as the call); a viral call flips when its viral count falls below it."""
    n = np.maximum(scored, 1)
    need = np.clip(np.ceil(threshold * n), 1, n).astype(np.int64)
    need = np.where((need > 1) & ((need - 1) / n >= threshold), need - 1, need)  # ceil rounded up
    need = np.where(need / n < threshold, need + 1, need)  # ceil rounded down
    return np.where(is_viral, viral - need + 1, need - viral)


# ------------------------------------------------------------------------------------------ writing


def fragment_ids(seqs, frag):
    """`{sequence_id}_chunk_{n}` of every classified fragment, in the order of `frag`."""
    ids = seqs["sequence_id"]
    return [f"{ids[o]}_chunk_{k}" for o, k in zip(frag["owner"].tolist(), frag["num"].tolist())]


def _write_fragment_calls(path, seqs, frag):
    rows = zip(fragment_ids(seqs, frag), frag["viral"].tolist(), score_texts(frag["max1"]),
               score_texts(frag["max2"]))
    write_tsv(path, FRAGMENT_COLUMNS, rows)


def sequence_rows(t):
    """The sequence summary's rows (SEQUENCE_COLUMNS) as text, from `sequence_table`'s arrays."""
    rows = zip(
        t["sequence_id"], t["length"].tolist(), t["fragments"].tolist(), t["fragments_with_frames"].tolist(),
        t["viral_fragments"].tolist(), score_texts(t["viral_fraction"]), score_texts(t["max_virus_score"]),
        score_texts(t["mean_virus_score"]), t["status"], t["call"], score_texts(t["confidence"]),
        [str(k) if k >= 0 else "NA" for k in t["fragments_to_flip"].tolist()],
    )
    return [[str(x) for x in row] for row in rows]
