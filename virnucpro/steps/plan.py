"""The embedding plan of a run: every frame of every sample embedded once, in pooled shards.

`plan_embeddings(members, out_dir, store, namespaces, tokens_per_shard, device)` reads the kept frames of
every member (a sample, or a training set) as `prepare` wrote them (`frames.fna` and `frames.faa`: the same
ids in the same order), keys each frame by content (`virnucpro.io.store.frame_key`), and leaves out what the
embedding store already holds for each encoder's namespace. Identical frames, within a sample or across
samples, are embedded once. Every store file the plan takes frames from is checked in full first; one
that fails is set aside (one warning line) and its frames are planned again. The remaining frames, in
order of first appearance (members in the order given), are cut into n = ceil(tokens / tokens_per_shard)
contiguous shards balanced by ESM-2 token count (residues truncated at 1022, plus BOS and EOS: ESM-2 3B
dominates the cost of every shard). A shard is named by its content (the first 16 hex digits of a sha256
over the namespaces and its keys), so the same work always gets the same name. The plan directory (`virnucpro.layout`), written complete or not at all:

    plan.json               device, store, namespaces, shards and counts
    shards/{shard}.faa      proteins to embed with ESM-2, `>{key} {member}:{frame id}` (its first appearance)
    shards/{shard}.fna      nucleotide slices to embed with DNABERT-S, headed the same way

and beside it, in `members_dir` (outside the plan directory, which the workflow replaces whole), each
member's plan (`virnucpro.io.members`): its frame list (every frame's id and key, in its order) and the
store files (relative to each namespace's folder) that hold all its frames. A member's plan is written
only where its content changed: an unchanged member's plan keeps its bytes and its modification time,
so nothing that reads it runs again. plan.json's `member_shards` names, per member, the shards of this
plan holding its new frames: what must be embedded before its features can be read. That list changes
once the shards are embedded (the next plan has none for the member), so it is kept out of the
member's plan, whose content depends only on the member's frames, the store, the namespaces and the
store files holding its frames.

`list_receipts` (rule `list_receipts`) lists the receipts of the plan's shards.
"""

import hashlib
import json
import logging
import math
from pathlib import Path

import numpy as np

from virnucpro.defaults import TOKENS_PER_SHARD
from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import atomic_outputs
from virnucpro.io.members import ENCODERS, member_frames, paired_frames, skipped_member, write_member
from virnucpro.layout import PLAN_FILE, SHARDS
from virnucpro.io.store import (
    StoreFileError,
    StoreIndex,
    remove_stale_temporaries,
    set_aside,
    store_files,
    verify_store_file,
)
from virnucpro.models.namespaces import ESM2_PRECISION, ESM2_TRUNCATION

log = logging.getLogger("virnucpro")

SUFFIX = {"esm2": ".faa", "dnabert_s": ".fna"}


def shard_bounds(tokens, tokens_per_shard):
    """Start indices of each shard plus the end, for per-frame token counts `tokens`."""
    tokens = np.asarray(tokens, dtype=np.int64)
    total = int(tokens.sum())
    n = math.ceil(total / tokens_per_shard) if total else 0
    if n == 0:
        return [0]
    midpoints = np.cumsum(tokens) - tokens / 2
    cuts = np.searchsorted(midpoints, np.arange(1, n) * total / n)
    return [0, *np.unique(cuts).tolist(), tokens.size]


class _Work:
    """The frames still to embed, in order of first appearance, with what each needs; and, per member,
    its frames' places in that list and the store files that already hold the rest."""

    def __init__(self, indexes):
        self.indexes = indexes  # encoder -> StoreIndex of what is stored
        self.order = {}  # key -> position in the work list
        self.needs = []  # per position: (needs ESM-2, needs DNABERT-S)
        self.tokens = []  # per position: ESM-2 tokens
        self.distinct = set()
        self.positions = {}  # member -> (frames,) int64 position, -1 when all of the frame is stored
        self.stored_in = {}  # member -> encoder -> store file indices holding its stored frames
        self.frame_lists = {}  # member -> its frames' ids and keys, as its frame list's text

    def add_member(self, name, frames):
        at, stored, lines = [], {e: set() for e in ENCODERS}, []
        for rid, key, _, protein in frames:
            lines.append(f"{rid}\t{key}\n")
            self.distinct.add(key)
            located = {e: self.indexes[e].where.get(key.encode("ascii")) for e in ENCODERS}
            for e in ENCODERS:
                if located[e] is not None:
                    stored[e].add(located[e][0])
            at.append(self._position(key, protein, tuple(located[e] is None for e in ENCODERS)))
        self.positions[name] = np.array(at, dtype=np.int64)
        self.stored_in[name] = stored
        self.frame_lists[name] = "".join(lines)

    def _position(self, key, protein, needs):
        if key in self.order:
            return self.order[key]
        if not any(needs):
            return -1
        self.order[key] = len(self.needs)
        self.needs.append(needs)
        self.tokens.append(min(len(protein), ESM2_TRUNCATION) + 2)
        return self.order[key]


def plan_embeddings(members, out_dir, members_dir, store, namespaces, tokens_per_shard, device, device_setting=None,
                    skipped=None, esm2_precision=None):
    """Write the plan directory; returns the plan (the contents of plan.json). See the module docstring.

    members: {name: (frames.fna, frames.faa)} in order; namespaces: {encoder: store.Namespace}; device:
    the device type the embedding jobs run on, as `device_setting` (embed.device) resolved; skipped:
    {name: error} of members left out (their front end failed), whose plans say why; esm2_precision:
    "float8" when the embedding jobs run ESM-2 in float8 (its namespace says so too), else None.
    """
    if tokens_per_shard < 1:
        raise VirNucProError(f"shards.tokens_per_shard must be positive, not {tokens_per_shard}")
    store = Path(store).resolve()
    for e in ENCODERS:
        remove_stale_temporaries(store, namespaces[e])
    work = _checked_work(members, store, namespaces)
    files = {e: work.indexes[e].files for e in ENCODERS}
    bounds = shard_bounds(work.tokens, tokens_per_shard)
    keys = list(work.order)
    shard_of = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))
    names = [_shard_name(namespaces, keys[lo:hi], work.needs[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
    plan = {
        "device": device,
        "device_setting": device_setting or device,
        "esm2_precision": esm2_precision or ESM2_PRECISION[device],
        "store": str(store),
        "namespaces": {e: namespaces[e].to_json() for e in ENCODERS},
        "shards": [
            {"name": n, "frames": hi - lo, "tokens": int(sum(work.tokens[lo:hi])),
             **{e: int(sum(needs[i] for needs in work.needs[lo:hi])) for i, e in enumerate(ENCODERS)}}
            for n, lo, hi in zip(names, bounds[:-1], bounds[1:])
        ],
        "members": {name: int(work.positions[name].size) for name in members},
        "member_shards": {name: _new_shards(work.positions[name], shard_of, names) for name in members},
        "skipped": dict(skipped or {}),
        "frames": int(sum(p.size for p in work.positions.values())),
        "distinct_frames": len(work.distinct),
        "frames_to_embed": len(keys),
    }
    for name in members:
        write_member(members_dir, _member_plan(name, plan, work, shard_of, names, files), work.frame_lists[name])
    for name, error in plan["skipped"].items():
        write_member(members_dir, skipped_member(name, error, plan["store"], plan["namespaces"]), "")
    _write(out_dir, plan, members, work, keys, shard_of, names)
    _log(plan)
    return plan


def _checked_work(members, store, namespaces):
    """The work list of `members` against the store files that pass their checks. Every file's keys are
    read (checksums of every chunk); every file that serves a frame of the members is then checked in
    full (`verify_store_file`: every chunk of its embeddings, and its sha256s). A file failing either is
    set aside (`set_aside`, one warning line) and the work list is made again without it, so that its
    frames come from another file or are embedded again."""
    files = {e: store_files(store, namespaces[e]) for e in ENCODERS}
    verified = set()
    while True:
        bad = []
        work = _Work({e: StoreIndex(files[e], bad=bad) for e in ENCODERS})
        for name, (dna, protein) in members.items():
            work.add_member(name, member_frames(name, dna, protein))
        failed = []
        for e in ENCODERS:
            index = work.indexes[e]
            for path in sorted({index.files[f] for held in work.stored_in.values() for f in held[e]} - verified):
                try:
                    verify_store_file(path, namespaces[e])
                    verified.add(path)
                except StoreFileError as exc:
                    failed.append(exc)
        for exc in bad + failed:
            log.warning("plan: store file %s: %s; %s; its frames are embedded again", exc.path, exc.problem,
                        set_aside(exc.path))
        if not failed:
            return work
        gone = {exc.path for exc in failed}
        files = {e: [p for p in work.indexes[e].files if p not in gone] for e in ENCODERS}


def _shard_name(namespaces, keys, needs):
    h = hashlib.sha256()
    for e in ENCODERS:
        h.update(namespaces[e].id.encode())
    for key, (esm, dna) in zip(keys, needs):
        h.update(f"{key}{int(esm)}{int(dna)}".encode())
    return h.hexdigest()[:16]


def _new_shards(at, shard_of, names):
    """The shards holding a member's new frames (`at`: its frames' positions in the work list)."""
    return sorted({names[s] for s in shard_of[at[at >= 0]].tolist()})


def _member_plan(name, plan, work, shard_of, names, files):
    """The member's plan without its frame list: per encoder, the store files holding the member's frames
    (see the module docstring: nothing in it changes once its frames are embedded)."""
    at = work.positions[name]
    new = at[at >= 0]
    member = {"member": name, "frames": int(at.size), "store": plan["store"], "namespaces": plan["namespaces"],
              "files": {}}
    for i, e in enumerate(ENCODERS):
        held = {files[e][f].name for f in work.stored_in[name][e]}
        held |= {f"{names[shard_of[a]]}.h5" for a in new.tolist() if work.needs[a][i]}
        member["files"][e] = sorted(held)
    return member


def _write(out_dir, plan, members, work, keys, shard_of, names):
    """The plan directory, written complete or not at all (`atomic_outputs`)."""
    with atomic_outputs(out_dir) as (tmp,):
        (tmp / SHARDS).mkdir(parents=True)
        _write_shards(tmp / SHARDS, members, work, keys, shard_of, names)
        (tmp / PLAN_FILE).write_text(json.dumps(plan, indent=1) + "\n")


def _write_shards(folder, members, work, keys, shard_of, names):
    """Every frame to embed, once, into its shard's .faa (if ESM-2 needs it) and .fna (if DNABERT-S does).

    Members are read in the order that numbered the work list, so first appearances come in position
    order and the shards are written one after the other; `keys[at]` is the key of position `at` (the
    frames are not hashed again)."""
    current, handles, next_at = None, {}, 0
    try:
        for member, (dna, protein) in members.items():
            for (rid, nucleotide, prot), at in zip(paired_frames(member, dna, protein), work.positions[member]):
                if at < next_at:  # stored, or written already
                    continue
                if at != next_at:
                    raise RuntimeError(f"internal error: frame {rid} of {member} out of order in the work list")
                next_at += 1
                if shard_of[at] != current:
                    _close(handles)
                    current = shard_of[at]
                    handles = {e: open(folder / f"{names[current]}{SUFFIX[e]}", "w") for e in ENCODERS}
                for i, (e, seq) in enumerate(zip(ENCODERS, (prot, nucleotide))):
                    if work.needs[at][i]:
                        handles[e].write(f">{keys[at]} {member}:{rid}\n{seq}\n")
    finally:
        _close(handles)


def _close(handles):
    for h in handles.values():
        h.close()


def _log(plan):
    shards = plan["shards"]
    log.info(
        "plan: %d frames of %d member(s), %d distinct; %d to embed (ESM-2 %d, DNABERT-S %d; the rest is "
        "in the store), %d ESM-2 tokens in %d shard(s)",
        plan["frames"], len(plan["members"]), plan["distinct_frames"], plan["frames_to_embed"],
        sum(s["esm2"] for s in shards), sum(s["dnabert_s"] for s in shards),
        sum(s["tokens"] for s in shards), len(shards),
    )


def plan(members, out_dir, members_dir, store, notes, device, tokens_per_shard=TOKENS_PER_SHARD, statuses=None,
         float8_decision=None):
    """The `plan` step: the namespaces of the models the notes name (`virnucpro.io.notes`, checked to be
    current), on the device the embedding jobs will use (`device.planned_device`), then `plan_embeddings`.
    notes: {"esm2": note, "dnabert_s": note}, each a note or the path of a note file; statuses: {name:
    prepare status file}: a member whose front end failed is left out (`prepare.prepare`);
    float8_decision: the float8 guard's decision file (`check_float8`), when the run asked for float8:
    ESM-2 is planned in the precision it names."""
    from virnucpro.device import planned_device
    from virnucpro.io.status import usable_members
    from virnucpro.io.notes import check_note
    from virnucpro.models.namespaces import namespaces
    from virnucpro.steps.check_float8 import read_decision

    members, skipped = usable_members(members, statuses)
    planned = planned_device(device)
    float8 = float8_decision is not None and read_decision(float8_decision) == "float8"
    if float8 and planned != "cuda":
        raise VirNucProError("embed.precision float8 runs on CUDA GPUs only, but this plan is for the CPU "
                             f"(embed.device {device}); set embed.device to cuda, or the precision to float16")
    spaces = namespaces(check_note(notes["esm2"]), check_note(notes["dnabert_s"]), planned, float8=float8)
    return plan_embeddings(members, out_dir, members_dir, store, spaces, tokens_per_shard, planned, device, skipped,
                           esm2_precision="float8" if float8 else None)


def list_receipts(receipts, out):
    """Write the paths of a plan's shard receipts, one per line, to `out` (rule `list_receipts`): the one
    file the steps that read the store wait for, so that their inputs stay the same files from run to run."""
    with atomic_outputs(out) as (tmp,):
        tmp.write_text("".join(f"{r}\n" for r in receipts))
    log.info("%d shard receipt(s) -> %s", len(receipts), out)
    return out
