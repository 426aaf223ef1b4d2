"""The float8 guard: a run asked for `embed.precision: float8` embeds in float8 only after measuring, on
its own frames and with its own classifier, that float8 calls what float16 calls.

`check_float8(members, notes, store, outputs, check, ...)`:

1. takes a deterministic calibration subset of the run's frames (`calibration_frames`): from every member
   the frames with the smallest content keys (`store.frame_key`), an equal share each, then the
   `check["frames"]` smallest of those; the same frames give the same subset whatever their order or file;
2. embeds them with ESM-2 in float16 and in float8 (the models step's two converted files) and with
   DNABERT-S once, scores both feature sets with the run's classifier (features DNABERT-S then ESM-2, as
   classify builds them), and measures per frame the cosine of the two ESM-2 embeddings, both virus
   scores, their difference and whether the two calls (argmax, as `prediction_results` calls a frame) agree;
3. writes `outputs["table"]` (one row per frame, `TABLE_COLUMNS`) and `outputs["decision"]` (JSON: the
   precision the plan is to use, why, and the summary): float8 only if the call agreement is at least
   `check["min_call_agreement"]` and the smallest cosine at least `check["min_cosine"]`, otherwise
   float16 with one warning line saying why (`check`: config.yaml's embed.float8_check).

The measurement is kept in the embedding store (`{store}/float8-checks/{key}.tsv`), keyed by the model
checksums, the device type and the calibration frames: a rerun, or another project on the same store with
the same frames and models, reads it instead of embedding again; the thresholds are applied anew each time.
On the CPU the float8 products are emulated (`virnucpro.models.fp8`): the workflow never embeds float8
there, but the guard's logic runs the same way.
"""

import hashlib
import json
import logging
import math
from pathlib import Path

import numpy as np

from virnucpro.defaults import CONFIG, FLOAT8_CHECK_FRAMES, FLOAT8_MIN_CALL_AGREEMENT, FLOAT8_MIN_COSINE
from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import atomic_outputs
from virnucpro.io.notes import check_note, source_sha256
from virnucpro.io.tables import read_tsv, write_tsv

log = logging.getLogger("virnucpro")

TABLE_COLUMNS = ["frame", "key", "cosine", "virus_score_float16", "virus_score_float8", "score_difference",
                 "call_float16", "call_float8", "agree"]
CHECKS_FOLDER = "float8-checks"
CHECK = CONFIG["embed"]["float8_check"]  # frames, min_call_agreement, min_cosine


def calibration_frames(members, frames=FLOAT8_CHECK_FRAMES):
    """[(label "member:frame id", key, nucleotide, protein)] of the calibration subset, ordered by key.

    members: {name: (frames.fna, frames.faa)}. Each member offers its ceil(frames / members) frames of
    smallest key; of those (a frame shared by members counted once) the `frames` smallest are taken."""
    from virnucpro.io.members import member_frames

    share = math.ceil(frames / max(len(members), 1))
    offered = {}
    for name, (dna, protein) in members.items():
        chosen = sorted(((key, rid, nuc, prot) for rid, key, nuc, prot in member_frames(name, dna, protein)),
                        key=lambda f: f[0])
        for key, rid, nuc, prot in chosen[:share]:
            offered.setdefault(key, (f"{name}:{rid}", key, nuc, prot))
    return [offered[k] for k in sorted(offered)[:frames]]


def check_key(notes, device_type, keys):
    """The key of a measurement: sha256 over the model checksums, the device type and the frame keys."""
    h = hashlib.sha256()
    parts = {"esm2": source_sha256(notes["esm2"]), "dnabert_s": notes["dnabert_s"]["checksums"],
             "classifier": source_sha256(notes["classifier"]), "device": device_type}
    h.update(json.dumps(parts, sort_keys=True).encode())
    for key in keys:
        h.update(key.encode("ascii"))
    return h.hexdigest()


def measure(frames, notes, device, tokens_per_batch=None):
    """The table rows (`TABLE_COLUMNS`) of `frames` (`calibration_frames`) on `device` (a torch device)."""
    from virnucpro.models.classifier import LABELS, classifier_of
    from virnucpro.steps.embed import embed_calibration

    esm16, esm8, dna = embed_calibration(frames, notes, device, tokens_per_batch)
    clf = classifier_of(notes["classifier"])
    p16 = clf.scores(np.concatenate([dna, esm16], axis=1))
    p8 = clf.scores(np.concatenate([dna, esm8], axis=1))
    cos = (esm16 * esm8).sum(1) / np.maximum(np.linalg.norm(esm16, axis=1) * np.linalg.norm(esm8, axis=1), 1e-30)
    call16, call8 = p16.argmax(1), p8.argmax(1)
    labels = np.array(LABELS)
    return [(label, key, f"{c:.7f}", f"{a:.6f}", f"{b:.6f}", f"{b - a:.6f}", labels[x], labels[y],
             "yes" if x == y else "no")
            for (label, key, _, _), c, a, b, x, y in zip(frames, cos, p16[:, 1], p8[:, 1], call16, call8)]


def summarize_check(rows, min_call_agreement=FLOAT8_MIN_CALL_AGREEMENT, min_cosine=FLOAT8_MIN_COSINE):
    """The decision of a measurement: {"precision", "reason", "frames", "min_cosine", "median_cosine",
    "call_agreement", "max_score_difference", thresholds}."""
    if not rows:
        return {"precision": "float16", "reason": "no frames to check float8 on", "frames": 0,
                "min_call_agreement": min_call_agreement, "min_cosine": min_cosine}
    col = TABLE_COLUMNS.index
    cos = np.array([float(r[col("cosine")]) for r in rows])
    agree = float(np.mean([r[col("agree")] == "yes" for r in rows]))
    diff = max(abs(float(r[col("score_difference")])) for r in rows)
    summary = {"frames": len(rows), "min_cosine": float(cos.min()), "median_cosine": float(np.median(cos)),
               "call_agreement": agree, "max_score_difference": diff,
               "min_call_agreement": min_call_agreement, "min_cosine_required": min_cosine}
    failed = []
    if agree < min_call_agreement:
        failed.append(f"calls agree on {100 * agree:.2f} % of {len(rows)} frames (at least "
                      f"{100 * min_call_agreement:.2f} % required)")
    if cos.min() < min_cosine:
        failed.append(f"the smallest cosine is {cos.min():.6f} (at least {min_cosine} required)")
    if failed:
        return {"precision": "float16", "reason": "float8 refused: " + "; ".join(failed), **summary}
    return {"precision": "float8", "reason": f"calls agree on {100 * agree:.2f} % of {len(rows)} frames, smallest "
            f"cosine {cos.min():.6f}", **summary}


def check_float8(members, notes, store, outputs, check=CHECK, device="auto", statuses=None, tokens_per_batch=None):
    """The guard step (module docstring). members: {name: (frames.fna, frames.faa)}; statuses: {name:
    prepare status file} (a member whose front end failed is left out, as the plan leaves it out); notes:
    {"esm2", "dnabert_s", "classifier"}, notes or their paths, the ESM-2 note naming a float8 file (the
    models step with embed.precision float8); outputs: {"decision", "table"}; tokens_per_batch: as
    `embed`'s."""
    from virnucpro.device import resolve_device
    from virnucpro.io.status import usable_members

    members, _ = usable_members(members, statuses)
    notes = {kind: check_note(n) for kind, n in notes.items()}
    if not notes["esm2"].get("float8_file"):
        raise VirNucProError(f"{notes['esm2']['source']}: the models step made no float8 file for it "
                             "(embed.precision float8 asks for one); run the workflow's models step again")
    chosen = calibration_frames(members, check["frames"])
    device = resolve_device(device)
    key = check_key(notes, device.type, [f[1] for f in chosen])
    kept = Path(store) / CHECKS_FOLDER / f"{key}.tsv"
    rows = _read_kept(kept)
    if rows is None:
        log.info("float8 check: %d calibration frames of %d member(s) on %s", len(chosen), len(members), device)
        rows = measure(chosen, notes, device, tokens_per_batch)
        kept.parent.mkdir(parents=True, exist_ok=True)
        with atomic_outputs(kept) as (tmp,):
            write_tsv(tmp, TABLE_COLUMNS, rows)
    else:
        log.info("float8 check: the measurement of these %d frames and models is kept in %s", len(rows), kept)
    outcome = {**summarize_check(rows, check["min_call_agreement"], check["min_cosine"]), "measurement": str(kept)}
    (log.info if outcome["precision"] == "float8" else log.warning)(
        "embedding in %s: %s", outcome["precision"], outcome["reason"])
    with atomic_outputs(outputs["decision"], outputs["table"]) as (t_decision, t_table):
        t_decision.write_text(json.dumps(outcome, indent=1) + "\n")
        write_tsv(t_table, TABLE_COLUMNS, rows)
    return outcome


def _read_kept(path):
    """The rows of a kept measurement, or None when there is none (or it cannot be read: measured again)."""
    if not path.is_file():
        return None
    try:
        header, rows = read_tsv(path)
    except (OSError, ValueError):
        return None
    return [tuple(r) for r in rows] if header == TABLE_COLUMNS else None


def read_decision(path):
    """The precision ("float16" or "float8") a guard's decision file names."""
    try:
        precision = json.loads(Path(path).read_text())["precision"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VirNucProError(f"{path}: not a readable float8 check decision ({exc})") from None
    if precision not in ("float16", "float8"):
        raise VirNucProError(f"{path}: unknown precision {precision!r}")
    return precision
