"""Results of one sample: per-fragment calls, one row per input sequence, viral sequences, plots.

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
- `status` is `classified`, or `no_stop_free_frame` when no fragment kept a frame; `call` is `viral`
  when viral_fraction >= threshold, `not_viral` otherwise, and `no_call` for unclassified sequences.

Outputs (all appear together or not at all):
- `fragment_calls.tsv`: `Modified_ID` (the fragment id), `Is_Virus` (True/False), `max_score1`,
  `max_score2`, one row per fragment with frames, in input order;
- `sequence_summary.tsv`: one row for every sequence of the manifest, in input order;
- `viral.fna`: the input sequences called viral, case kept, 60 bases per line;
- a histogram of frame virus scores, and the virus score along each of the `top_sequences` sequences
  with the highest mean virus score (fragments drawn as segments at their positions, red when called
  viral, dark blue otherwise, as the original's `drew_fig.py`).
Every frame must belong to a manifest sequence and fragment, and the number of frames of each sequence
must equal its `kept_frames`; anything else is an error.
"""

import logging

import numpy as np

from virnucpro.atomic import atomic_outputs
from virnucpro.errors import VirNucProError
from virnucpro.frames import fragment_layout
from virnucpro.seqio import read_sequences

log = logging.getLogger("virnucpro")

PREDICTION_COLUMNS = ["Sequence_ID", "Prediction", "score1", "score2"]
PREDICTION_HEADER = "\t".join(PREDICTION_COLUMNS) + "\n"
MANIFEST_COLUMNS = ["sequence_id", "length", "fragments", "kept_frames"]
FRAGMENT_COLUMNS = ["Modified_ID", "Is_Virus", "max_score1", "max_score2"]
SEQUENCE_COLUMNS = [
    "sequence_id", "length", "fragments", "fragments_with_frames", "viral_fragments", "viral_fraction",
    "max_virus_score", "mean_virus_score", "status", "call",
]
FRAME_ID = r"^(?P<seq>.+)_chunk_(?P<num>[0-9]+)(?P<frame>[FR][123])$"
VIRAL_COLOUR, OTHER_COLOUR = "red", "darkblue"
WIDTH = 60


def summarize(predictions, manifest, fasta, fragment_calls, sequence_summary, viral_fasta, histogram,
              along, threshold, top_sequences, *, fragment_size):
    """Write the sample's tables, viral FASTA and plots; see the module docstring. Returns the table."""
    if not 0.0 <= float(threshold) <= 1.0:
        raise VirNucProError(f"viral fraction threshold must be between 0 and 1, not {threshold}")
    if int(top_sequences) < 0:
        raise VirNucProError(f"top_sequences must be 0 or more, not {top_sequences}")
    seqs = read_manifest(manifest, fragment_size)
    frames = read_predictions(predictions)
    frag = fragment_scores(frames, seqs, predictions, manifest)
    table = sequence_table(seqs, frag, float(threshold))
    with atomic_outputs(fragment_calls, sequence_summary, viral_fasta, histogram, along) as tmp:
        t_frag, t_seq, t_fasta, t_hist, t_along = tmp
        _write_fragment_calls(t_frag, seqs, frag)
        _write_sequence_summary(t_seq, table)
        n_viral = _write_viral_fasta(t_fasta, fasta, table)
        plot_histogram(t_hist, frames["score2"])
        top = _top_sequences(table, int(top_sequences))
        plot_along(t_along, table, frag, top, fragment_size)
    log.info(
        "%d sequences: %d classified, %d called viral (viral fraction >= %s); "
        "%d fragments with frames, %d frames",
        len(table["sequence_id"]), int((table["status"] == "classified").sum()), n_viral, threshold,
        len(frag["owner"]), len(frames["id"]),
    )
    return table


# ------------------------------------------------------------------------------------------ reading


def read_manifest(path, fragment_size):
    """Manifest columns as arrays (ids as an object array), checked against `fragment_size`."""
    import pandas as pd

    try:
        df = pd.read_csv(path, sep="\t", dtype={"sequence_id": str}, keep_default_na=False, na_filter=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise VirNucProError(f"{path}: unreadable manifest ({exc})") from None
    if list(df.columns) != MANIFEST_COLUMNS:
        raise VirNucProError(f"{path}: manifest columns are {list(df.columns)}, expected {MANIFEST_COLUMNS}")
    try:
        seqs = {c: df[c].to_numpy(dtype=np.int64) for c in MANIFEST_COLUMNS[1:]}
    except (ValueError, TypeError):
        raise VirNucProError(f"{path}: manifest counts are not all integers") from None
    seqs["sequence_id"] = df["sequence_id"].to_numpy(dtype=object)
    if df["sequence_id"].duplicated().any():
        dup = df["sequence_id"][df["sequence_id"].duplicated()].iloc[0]
        raise VirNucProError(f"{path}: sequence '{dup}' is listed twice")
    expected = -(-seqs["length"] // int(fragment_size))
    bad = np.flatnonzero(expected != seqs["fragments"])
    if bad.size:
        i = bad[0]
        raise VirNucProError(
            f"{path}: sequence '{seqs['sequence_id'][i]}' of {seqs['length'][i]} bp has {seqs['fragments'][i]} "
            f"fragments, not the {expected[i]} of {fragment_size} bp fragments "
            "(manifest from another fragment size?)"
        )
    return seqs


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
    beyond = np.flatnonzero((num < 1) | (num > seqs["fragments"][owner]))
    if beyond.size:
        i = beyond[0]
        raise VirNucProError(
            f"{predictions}: frame '{frames['id'][i]}' names fragment {num[i]}, but {manifest} lists "
            f"{seqs['fragments'][owner[i]]} fragment(s) for '{seqs['sequence_id'][owner[i]]}'"
        )
    seen = np.bincount(owner, minlength=n_seq)
    wrong = np.flatnonzero(seen != seqs["kept_frames"])
    if wrong.size:
        i = wrong[0]
        raise VirNucProError(
            f"{predictions}: sequence '{seqs['sequence_id'][i]}' has {seen[i]} classified frame(s), but "
            f"{manifest} lists {seqs['kept_frames'][i]} kept frame(s)"
        )
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
    call = np.where(~classified, "no_call", np.where(fraction >= threshold, "viral", "not_viral"))
    return {
        "sequence_id": seqs["sequence_id"],
        "length": seqs["length"],
        "fragments": seqs["fragments"],
        "fragments_with_frames": with_frames,
        "viral_fragments": viral,
        "viral_fraction": fraction,
        "max_virus_score": max_score,
        "mean_virus_score": np.where(classified, score_sum / safe, np.nan),
        "status": np.where(classified, "classified", "no_stop_free_frame"),
        "call": call,
    }


# ------------------------------------------------------------------------------------------ writing


def _number(x):
    return "NA" if np.isnan(x) else f"{x:.6g}"


def _score(x):
    return "NA" if np.isnan(x) else str(np.float32(x))


def _write_fragment_calls(path, seqs, frag):
    ids = seqs["sequence_id"]
    rows = (
        f"{ids[o]}_chunk_{k}\t{v}\t{a!s}\t{b!s}\n"
        for o, k, v, a, b in zip(frag["owner"].tolist(), frag["num"].tolist(), frag["viral"].tolist(),
                                 frag["max1"], frag["max2"])
    )
    with open(path, "w") as fh:
        fh.write("\t".join(FRAGMENT_COLUMNS) + "\n")
        fh.writelines(rows)


def _write_sequence_summary(path, t):
    rows = zip(
        t["sequence_id"], t["length"].tolist(), t["fragments"].tolist(), t["fragments_with_frames"].tolist(),
        t["viral_fragments"].tolist(), map(_number, t["viral_fraction"]), map(_score, t["max_virus_score"]),
        map(_number, t["mean_virus_score"]), t["status"], t["call"],
    )
    with open(path, "w") as fh:
        fh.write("\t".join(SEQUENCE_COLUMNS) + "\n")
        fh.writelines("\t".join(map(str, row)) + "\n" for row in rows)


def _write_viral_fasta(path, fasta, t):
    """Copy the sequences called viral from `fasta`, which must match the manifest record for record."""
    ids, lengths, viral = t["sequence_id"], t["length"], t["call"] == "viral"
    n = 0
    with open(path, "wb") as out:
        i = -1
        for i, (rid, seq) in enumerate(read_sequences(fasta)):
            if i >= len(ids) or rid != ids[i] or len(seq) != lengths[i]:
                expected = f"'{ids[i]}' ({lengths[i]} bp)" if i < len(ids) else "no more records"
                raise VirNucProError(
                    f"{fasta}: record {i + 1} is '{rid}' ({len(seq)} bp) but the manifest expects {expected}; "
                    "the input changed since `prepare` ran"
                )
            if viral[i]:
                head = (f">{rid} viral_fragments={t['viral_fragments'][i]}/{t['fragments_with_frames'][i]} "
                        f"mean_virus_score={_number(t['mean_virus_score'][i])}\n")
                out.write(head.encode() + b"".join(seq[j : j + WIDTH] + b"\n" for j in range(0, len(seq), WIDTH)))
                n += 1
        if i + 1 != len(ids):
            raise VirNucProError(f"{fasta}: {i + 1} records, but the manifest lists {len(ids)}")
    return n


# -------------------------------------------------------------------------------------------- plots


def _figure(width, height):
    from matplotlib.figure import Figure  # heavy: only the summary step draws

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _style(ax):
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("gray")
    ax.tick_params(colors="gray", which="both")


def plot_histogram(path, scores):
    """Histogram of frame virus scores (score2) in [0, 1], the 0.5 decision line dashed."""
    fig = _figure(8, 4.5)
    ax = fig.add_subplot()
    ax.hist(np.asarray(scores, dtype=np.float64), bins=np.linspace(0.0, 1.0, 51), color="gray", edgecolor="white")
    ax.axvline(0.5, color="black", linestyle="--", linewidth=1)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("virus score (score2) of each frame")
    ax.set_ylabel("frames")
    ax.set_title(f"Virus scores of {len(scores)} frames")
    _style(ax)
    fig.savefig(path, format="png")


def _top_sequences(t, k):
    """Indices of the k classified sequences with the highest mean virus score (input order on ties)."""
    classified = np.flatnonzero(t["status"] == "classified")
    order = np.argsort(-t["mean_virus_score"][classified], kind="stable")
    return classified[order[:k]]


def plot_along(path, t, frag, top, fragment_size):
    """Virus score of each fragment along the sequences `top`, one panel per sequence."""
    n = max(len(top), 1)
    fig = _figure(14, 1.9 * n + 0.6)
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    if not len(top):
        axes[0].text(0.5, 0.5, "no sequence was classified", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
        fig.savefig(path, format="png")
        return
    top = top.tolist()
    owner, number, start, length = fragment_layout(t["length"][top], fragment_size)
    where = {
        (top[o], k): (s, n_)
        for o, k, s, n_ in zip(owner.tolist(), number.tolist(), start.tolist(), length.tolist())
    }
    panel = dict(zip(top, axes))
    for o, k, score, viral in zip(frag["owner"].tolist(), frag["num"].tolist(), frag["max2"].tolist(),
                                  frag["viral"].tolist()):
        if o in panel:
            s, n_ = where[(o, k)]
            panel[o].plot([s, s + n_], [score, score], color=VIRAL_COLOUR if viral else OTHER_COLOUR,
                          linewidth=2.5, solid_capstyle="butt")
    for i, ax in zip(top, axes):
        ax.axhline(0.5, color="lightgray", linestyle="--", linewidth=1)
        ax.set_xlim(0, int(t["length"][i]))
        ax.set_ylim(-0.02, 1.05)
        ax.set_ylabel("virus score")
        ax.set_title(f"{t['sequence_id'][i]}  ({t['length'][i]} bp, {t['call'][i]}, "
                     f"{t['viral_fragments'][i]}/{t['fragments_with_frames'][i]} fragments viral)",
                     fontsize=11, fontweight="bold", loc="left")
        ax.ticklabel_format(style="plain", axis="x", useOffset=False)
        _style(ax)
    axes[-1].set_xlabel("position (bp)")
    fig.savefig(path, format="png")
