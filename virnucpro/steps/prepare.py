"""`virnucpro prepare`: input sequences -> fragments -> stop-free frames (+ a manifest).

Outputs, all written to temporary names and renamed together when the whole input has been read:
- `out_dna` / `out_protein`: one record per kept frame (`>{id}_chunk_{n}{F|R}{1-3}`, one-line sequence),
  byte for byte as the original's `identified_nucleotide` / `identified_protein` files;
- `out_fragments` (optional): the fragments as the original's `chunked{S}.fa` (case kept, 60 per line);
- `manifest` (optional): TSV `sequence_id, length, fragments, kept_frames`, one row per input sequence,
  in input order, so later steps account for sequences that gave no frame.
A sequence shorter than `min_length` bp is not cut: it gets no fragment and no frame (its manifest row
has `fragments` 0), because the classifier was trained on whole 300/500 bp fragments and is at chance
level on much shorter ones. `min_length=None` means the fragment size; `min_length=0` cuts every
sequence, exactly as the original does.
Records are processed in groups of about `group_bases` bases; memory is bounded by the group and the
longest single record, not by the input size: a record longer than `max_bp` is refused (`seqio`).

`prepare` is the step its rule and the CLI call: given a status file (the workflow), bad input is
recorded there and the sample's outputs are written empty, so that the run's other samples go on.
"""

import json
import logging
import time
from dataclasses import asdict, dataclass

import numpy as np

from virnucpro.errors import InputError, VirNucProError
from virnucpro.frames import FRAME_NAMES, encode, fragment_layout, six_frames
from virnucpro.io.atomic import atomic_outputs
from virnucpro.io.seqio import MAX_RECORD_BP, read_sequences

log = logging.getLogger("virnucpro")
MANIFEST_COLUMNS = ("sequence_id", "length", "fragments", "kept_frames")
FRAGMENT_WINDOW = 4096  # fragments translated at once: bounds the (F, S) arrays to a few MB


@dataclass
class PrepareStats:
    sequences: int = 0
    bases: int = 0
    fragments: int = 0
    frames: int = 0
    shorter_than_min_length: int = 0  # sequences left uncut


def resolve_min_length(min_length, fragment_size):
    """The minimum length in bp that `min_length` stands for: None is the fragment size."""
    if min_length is None:
        return int(fragment_size)
    if isinstance(min_length, bool) or not isinstance(min_length, (int, np.integer)) or min_length < 0:
        raise VirNucProError(f"min_length must be a whole number of bp >= 0 (or null), not {min_length!r}")
    return int(min_length)


def cut_and_translate(input_path, fragment_size, out_dna, out_protein, out_fragments=None, manifest=None,
                      group_bases=1 << 22, max_bp=MAX_RECORD_BP, min_length=None):
    """Run the front end on `input_path`; returns `PrepareStats`. See the module docstring."""
    min_length = resolve_min_length(min_length, fragment_size)
    stats = PrepareStats()
    started = last_report = time.monotonic()
    with atomic_outputs(out_dna, out_protein, out_fragments, manifest) as tmp:
        handles = [None if p is None else open(p, "wb", buffering=1 << 20) for p in tmp]
        try:
            writer = _Writer(*handles)
            group, group_len = [], 0
            for rid, seq in read_sequences(input_path, max_bp=max_bp):
                group.append((rid, seq))
                group_len += len(seq)
                if group_len >= group_bases:
                    _process(group, fragment_size, min_length, writer, stats)
                    group, group_len = [], 0
                    last_report = _progress(stats, started, last_report)
            _process(group, fragment_size, min_length, writer, stats)
        finally:
            for h in handles:
                if h is not None:
                    h.close()
    rate = stats.bases / max(time.monotonic() - started, 1e-9) / 1e6
    log.info(
        "prepare %s: %d sequences, %d bp, %d fragments, %d kept frames (%.1f Mbp/s); %d sequence(s) shorter "
        "than min_length (%d bp) not cut", input_path, stats.sequences, stats.bases, stats.fragments,
        stats.frames, rate, stats.shorter_than_min_length, min_length,
    )
    return stats


def prepare(input_path, fragment_size, out_dna, out_protein, manifest=None, status=None, out_fragments=None,
            max_bp=MAX_RECORD_BP, min_length=None):
    """The `prepare` step on one sample, as its rule and the CLI run it: `prepare`, and with `status`
    (JSON) the workflow's record of how it went, {"ok": true, and the counts}.

    With `status`, bad input (an `InputError`) is logged as one error line, the sample's outputs are
    written empty and `status` holds {"ok": false, "error": that line}: the embedding plan leaves the
    sample out and its classification fails with the line, while the run's other samples finish.
    Without `status` the error is raised.
    """
    try:
        stats = cut_and_translate(input_path, fragment_size, out_dna, out_protein, out_fragments=out_fragments,
                        manifest=manifest, max_bp=max_bp, min_length=min_length)
    except InputError as exc:
        if status is None:
            raise
        log.error("prepare: %s", exc)
        with atomic_outputs(out_dna, out_protein, out_fragments, manifest, status) as outputs:
            for path in outputs[:-1]:
                if path is not None:
                    path.write_bytes(b"")
            outputs[-1].write_text(json.dumps({"ok": False, "error": str(exc)}) + "\n")
        return None
    if status is not None:
        with atomic_outputs(status) as (note,):
            note.write_text(json.dumps({"ok": True, **asdict(stats)}) + "\n")
    return stats


def _progress(stats, started, last_report, every_s=10.0):
    """Log a progress line at most every `every_s` seconds; returns the time of the last line."""
    now = time.monotonic()
    if now - last_report < every_s:
        return last_report
    log.info("prepare: %d sequences, %.1f Mbp so far (%.1f Mbp/s), %d kept frames",
             stats.sequences, stats.bases / 1e6, stats.bases / (now - started) / 1e6, stats.frames)
    return now


class _Writer:
    def __init__(self, dna, protein, fragments, manifest):
        self.dna, self.protein, self.fragments, self.manifest = dna, protein, fragments, manifest
        if manifest is not None:
            manifest.write(("\t".join(MANIFEST_COLUMNS) + "\n").encode())


def _process(group, size, min_length, writer, stats):
    """Fragments and kept frames of `group`, written; a sequence shorter than `min_length` is not cut."""
    if not group:
        return
    ids = [rid for rid, _ in group]
    lengths = np.fromiter((len(s) for _, s in group), dtype=np.int64, count=len(group))
    short = lengths < min_length
    owner, number, start, length = fragment_layout(np.where(short, 0, lengths), size)  # short: no fragment
    offsets = np.cumsum(lengths) - lengths
    joined = b"".join(s for _, s in group)
    upper = joined.upper()
    codes = encode(upper, size)
    names = [f"{ids[o]}_chunk_{k}".encode() for o, k in zip(owner.tolist(), number.tolist())]
    kept = np.zeros(len(group), dtype=np.int64)
    for lo in range(0, owner.size, FRAGMENT_WINDOW):
        hi = min(lo + FRAGMENT_WINDOW, owner.size)
        frames = six_frames(upper, codes, offsets[owner[lo:hi]] + start[lo:hi], length[lo:hi], size)
        _write_frames(writer, names, lo, frames)
        np.add.at(kept, owner[lo:hi][frames.fragment], 1)
    if writer.fragments is not None:
        _write_fragments(writer.fragments, names, joined, offsets[owner] + start, length)
    if writer.manifest is not None:
        rows = zip(ids, lengths.tolist(), np.bincount(owner, minlength=len(group)).tolist(),
                   kept.tolist())
        writer.manifest.write("".join(f"{i}\t{n}\t{f}\t{k}\n" for i, n, f, k in rows).encode())
    stats.sequences += len(group)
    stats.bases += int(lengths.sum())
    stats.fragments += owner.size
    stats.frames += int(kept.sum())
    stats.shorter_than_min_length += int(short.sum())


_SUFFIX = [name.encode() for name in FRAME_NAMES]


def _write_frames(writer, names, first, frames):
    heads = [b">" + names[first + i] + _SUFFIX[f] + b"\n"
             for i, f in zip(frames.fragment.tolist(), frames.frame.tolist())]
    writer.dna.write(b"".join(h + s + b"\n" for h, s in zip(heads, frames.nucleotide)))
    writer.protein.write(b"".join(h + s + b"\n" for h, s in zip(heads, frames.protein)))


def _write_fragments(out, names, joined, starts, lengths):
    parts = []
    for name, a, n in zip(names, starts.tolist(), lengths.tolist()):
        parts.append(b">" + name + b"\n")
        end = a + n
        parts.extend(joined[i : min(i + 60, end)] + b"\n" for i in range(a, end, 60))
    out.write(b"".join(parts))
