"""One sample's results, read and computed once, for every file the summarize step writes (`read_sample`).

Inputs: the per-frame table `prediction_results.tsv` (the original's columns `Sequence_ID, Prediction,
score1, score2`; frame ids `{seq_id}_chunk_{n}{F|R}{1-3}`, parsed from the right so sequence ids may hold
underscores), the manifest written by `prepare` (`sequence_id, length, fragments, kept_frames`, one row
per input sequence in input order) and the fragment size.

A `Sample` holds, as arrays: `seqs` (the manifest), `layout` (every fragment of the sample, as the
original cuts them: owner sequence, number, 0-based start, length; computed once), `frames` (every
frame's scores), `frag` (the fragments with frames, in input order: owner, number, index into the
layout, max score1/score2, call), `table` (one row per sequence) and `regions` (the viral regions).

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

Every frame must belong to a manifest sequence and fragment, appear once, and the number of frames of
each sequence must equal its `kept_frames`; a sequence's fragments are those of the fragment size, or
none, and the sequences without any must all be shorter than those with fragments; anything else is an
error naming the file and the first offending row. Memory: a few numbers per frame and fragment.
"""

from array import array
from dataclasses import dataclass

import numpy as np

from virnucpro.errors import VirNucProError
from virnucpro.frames import FRAME_NAMES, fragment_layout
from virnucpro.io.tables import score_texts
from virnucpro.results.original_files import PREDICTION_HEADER
from virnucpro.results.regions import call_regions

MANIFEST_COLUMNS = ("sequence_id", "length", "fragments", "kept_frames")
FRAGMENT_COLUMNS = ["Modified_ID", "Is_Virus", "max_score1", "max_score2"]
SEQUENCE_COLUMNS = [
    "sequence_id", "length", "fragments", "fragments_with_frames", "viral_fragments", "viral_fraction",
    "max_virus_score", "mean_virus_score", "status", "call", "confidence", "fragments_to_flip",
]
FRAME_CODE = {name: i for i, name in enumerate(FRAME_NAMES)}  # F1..R3 -> 0..5


@dataclass
class Sample:
    """A sample's results (module docstring); `name` names it in plot titles, tracks and views."""

    name: str
    seqs: dict
    layout: dict
    frames: dict
    frag: dict
    table: dict
    regions: dict

    def fragment_ids(self):
        """`{sequence_id}_chunk_{n}` of every classified fragment, in the order of `frag`."""
        ids = self.seqs["sequence_id"]
        return [f"{ids[o]}_chunk_{k}" for o, k in zip(self.frag["owner"].tolist(), self.frag["num"].tolist())]

    def sequence_rows(self):
        """The sequence summary's rows (SEQUENCE_COLUMNS) as text."""
        t = self.table
        rows = zip(
            t["sequence_id"], t["length"].tolist(), t["fragments"].tolist(), t["fragments_with_frames"].tolist(),
            t["viral_fragments"].tolist(), score_texts(t["viral_fraction"]), score_texts(t["max_virus_score"]),
            score_texts(t["mean_virus_score"]), t["status"], t["call"], score_texts(t["confidence"]),
            [str(k) if k >= 0 else "NA" for k in t["fragments_to_flip"].tolist()],
        )
        return [[str(x) for x in row] for row in rows]


def read_sample(predictions, manifest, fragment_size, name, settings):
    """The `Sample` of a prediction table and its manifest; `settings`: the summarize step's (threshold,
    max_gap_fragments, min_viral_fragments)."""
    seqs = read_manifest(manifest, fragment_size)
    owner, number, start, length = fragment_layout(np.where(seqs["fragments"] > 0, seqs["length"], 0), fragment_size)
    layout = {"owner": owner, "number": number, "start": start, "length": length}
    frames = read_predictions(predictions, seqs, manifest)
    frag = fragment_scores(frames, seqs, predictions, manifest)
    table = sequence_table(seqs, frag, float(settings.threshold))
    regions = call_regions(seqs, layout, frag, settings.max_gap_fragments, settings.min_viral_fragments,
                           called=table["call"] == "viral")
    return Sample(name, seqs, layout, frames, frag, table, regions)


# ------------------------------------------------------------------------------------------ reading


def read_manifest(path, fragment_size):
    """Manifest columns as arrays (ids as an object array), checked against `fragment_size`."""
    ids, counts = [], []
    try:
        with open(path, encoding="utf-8") as fh:
            header = tuple(fh.readline().rstrip("\n").split("\t"))
            if header != MANIFEST_COLUMNS:
                raise VirNucProError(f"{path}: manifest columns are {list(header)}, expected {list(MANIFEST_COLUMNS)}")
            for line in fh:
                sid, *values = line.rstrip("\n").split("\t")
                ids.append(sid)
                counts.append(tuple(map(int, values)))
    except OSError as exc:
        raise VirNucProError(f"{path}: unreadable manifest ({exc.strerror or exc})") from None
    except ValueError:
        raise VirNucProError(f"{path}: manifest counts are not all integers") from None
    if any(len(c) != 3 for c in counts):
        raise VirNucProError(f"{path}: a manifest row has not {len(MANIFEST_COLUMNS)} columns")
    seqs = dict(zip(MANIFEST_COLUMNS[1:], np.array(counts, dtype=np.int64).reshape(-1, 3).T))
    seqs["sequence_id"] = np.array(ids, dtype=object)
    if len(set(ids)) != len(ids):
        seen = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
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


def read_predictions(path, seqs, manifest):
    """Per frame, as arrays: owner (index of its manifest sequence), fragment number, frame (0-5), score1
    and score2 (float32) of a prediction table, read line by line."""
    index = {sid: i for i, sid in enumerate(seqs["sequence_id"].tolist())}
    owner, num, frame, s1, s2 = array("q"), array("q"), array("b"), array("f"), array("f")
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.readline() != PREDICTION_HEADER:
                raise VirNucProError(f"{path}: not a prediction table (its header is not {PREDICTION_HEADER!r})")
            for row, line in enumerate(fh, start=2):
                fields = line.rstrip("\n").split("\t")
                if len(fields) != 4:
                    raise VirNucProError(f"{path}: line {row} has {len(fields)} columns, not 4")
                seq, sep, rest = fields[0].rpartition("_chunk_")
                if not sep or not seq or not rest[:-2].isdigit() or rest[-2:] not in FRAME_CODE:
                    raise VirNucProError(f"{path}: '{fields[0]}' is not a frame id "
                                         "({sequence}_chunk_{n}{F|R}{1-3})")
                if seq not in index:
                    raise VirNucProError(f"{path}: frame '{fields[0]}' belongs to no sequence of {manifest}")
                owner.append(index[seq])
                num.append(int(rest[:-2]))
                frame.append(FRAME_CODE[rest[-2:]])
                s1.append(float(fields[2]))
                s2.append(float(fields[3]))
    except OSError as exc:
        raise VirNucProError(f"{path}: unreadable prediction table ({exc.strerror or exc})") from None
    except ValueError:
        raise VirNucProError(f"{path}: scores are not all numbers") from None
    return {"owner": np.frombuffer(owner, dtype=np.int64), "num": np.frombuffer(num, dtype=np.int64),
            "frame": np.frombuffer(frame, dtype=np.int8), "score1": np.frombuffer(s1, dtype=np.float32),
            "score2": np.frombuffer(s2, dtype=np.float32)}


def _fail_at_first(mask, message):
    """Raise `VirNucProError(message(i))` for the first index `i` where `mask` is true."""
    hits = np.flatnonzero(mask)
    if hits.size:
        raise VirNucProError(message(hits[0]))


def _frame_id(seqs, frames, i):
    return f"{seqs['sequence_id'][frames['owner'][i]]}_chunk_{frames['num'][i]}{FRAME_NAMES[frames['frame'][i]]}"


# ------------------------------------------------------------------------------------- aggregation


def fragment_scores(frames, seqs, predictions, manifest):
    """Per fragment with frames, in input order: owner (sequence index), number, index into the sample's
    fragment layout, max score1/score2, call."""
    owner, num = frames["owner"], frames["num"]
    _fail_at_first((num < 1) | (num > seqs["fragments"][owner]), lambda i: (
        f"{predictions}: frame '{_frame_id(seqs, frames, i)}' names fragment {num[i]}, but {manifest} lists "
        f"{seqs['fragments'][owner[i]]} fragment(s) for '{seqs['sequence_id'][owner[i]]}'"
    ))
    first = np.cumsum(seqs["fragments"]) - seqs["fragments"]
    key = first[owner] + num - 1  # index into the fragment layout (input order)
    code = key * len(FRAME_NAMES) + frames["frame"]
    values, counts = np.unique(code, return_counts=True)
    if (counts > 1).any():
        i = int(np.flatnonzero(code == values[counts > 1][0])[0])
        raise VirNucProError(f"{predictions}: frame '{_frame_id(seqs, frames, i)}' appears more than once")
    seen = np.bincount(owner, minlength=len(seqs["sequence_id"]))
    _fail_at_first(seen != seqs["kept_frames"], lambda i: (
        f"{predictions}: sequence '{seqs['sequence_id'][i]}' has {seen[i]} classified frame(s), but "
        f"{manifest} lists {seqs['kept_frames'][i]} kept frame(s)"
    ))
    order = np.argsort(key, kind="stable")
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else np.zeros(0, np.int64)
    max1 = np.maximum.reduceat(frames["score1"][order], starts) if key.size else np.zeros(0, np.float32)
    max2 = np.maximum.reduceat(frames["score2"][order], starts) if key.size else np.zeros(0, np.float32)
    return {"owner": owner[order][starts], "num": num[order][starts], "index": key[starts], "max1": max1,
            "max2": max2, "viral": max2 >= max1}


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
