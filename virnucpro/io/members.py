"""A member's plan: what the embedding plan says about one member (a sample or a training set).

Two files in the plan's members folder (`virnucpro.layout.MEMBERS`), written by the plan:

    {member}.json         {"member", "frames": count, "store", "namespaces": {encoder: namespace},
                           "files": {encoder: [store file names, relative to the namespace's folder]},
                           "frames_sha256": of the frame list}; or, for a member left out of the plan
                           because its front end failed, {"member", "skipped": the error, ...}
    {member}.frames.tsv   the frame list: every frame's id and content key (`store.frame_key`), one
                          `{id}\\t{key}` line per frame, in the order of the member's frames

The frame list is written first and the JSON last, each only where its content changed, so that a
member whose frames and store files are the same keeps both files, bytes and modification times.
`frame_list` reads the list back, checked against the JSON's sha256; the steps that read a member's
features take its frames from it rather than reading and hashing the frames again.
"""

import hashlib
import json
from pathlib import Path

from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import write_text_if_changed
from virnucpro.io.seqio import read_frames
from virnucpro.io.store import frame_key

ENCODERS = ("esm2", "dnabert_s")
FRAME_LIST = ".frames.tsv"  # beside {member}.json
PLAN_AGAIN = "plan again (snakemake --forcerun plan)"


def frame_list_path(path):
    path = Path(path)
    return path.with_name(path.stem + FRAME_LIST)


def write_member(folder, member, frame_list):
    """Write a member's plan (`member`, without its frame list's sha256) and its frame list (the text)."""
    path = Path(folder) / f"{member['member']}.json"
    write_text_if_changed(frame_list_path(path), frame_list)
    member = {**member, "frames_sha256": hashlib.sha256(frame_list.encode()).hexdigest()}
    write_text_if_changed(path, json.dumps(member, indent=1) + "\n")
    return path


def skipped_member(name, error, store, namespaces):
    """The plan of a member left out (its front end failed): no frames, and why."""
    return {"member": name, "skipped": error, "frames": 0, "store": store, "namespaces": namespaces,
            "files": {e: [] for e in ENCODERS}}


def read_member(path):
    """A member's plan (the JSON); a member left out of the plan is an error naming why."""
    try:
        member = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise VirNucProError(f"{path}: not a readable member plan ({exc})") from None
    if member.get("skipped"):
        raise VirNucProError(f"'{member['member']}' was left out of the embedding plan: its front end failed "
                             f"({member['skipped']})")
    return member


def frame_list(path, member):
    """Yield (frame id, key) of the member whose plan `member` was read from `path`, in order; a list that
    does not match the plan (count or sha256) is an error saying to plan again."""
    listed, digest, n = frame_list_path(path), hashlib.sha256(), 0
    try:
        with open(listed, encoding="utf-8", newline="") as fh:
            for line in fh:
                digest.update(line.encode())
                rid, _, key = line.rstrip("\n").partition("\t")
                n += 1
                yield rid, key
    except OSError as exc:
        raise VirNucProError(f"{listed}: cannot read the frame list ({exc.strerror or exc}); {PLAN_AGAIN}") from None
    if n != member["frames"] or digest.hexdigest() != member["frames_sha256"]:
        raise VirNucProError(f"{listed}: does not match its member plan {path} (changed since the plan was "
                             f"made); {PLAN_AGAIN}")


def member_frames(name, dna, protein):
    """Yield (frame id, key, nucleotide, protein) of one member; both files must hold the same ids in order."""
    for rid, nucleotide, prot in paired_frames(name, dna, protein):
        yield rid, frame_key(nucleotide, prot), nucleotide, prot


def paired_frames(name, dna, protein):
    """Yield (frame id, nucleotide, protein) of one member, checking that both files hold the same ids."""
    proteins = read_frames(protein)
    for rid, nucleotide in read_frames(dna):
        pid, prot = next(proteins, (None, None))
        if pid != rid:
            raise VirNucProError(f"{dna} and {protein} of '{name}' do not hold the same frames in the same order")
        yield rid, nucleotide, prot
    if next(proteins, None) is not None:
        raise VirNucProError(f"{dna} and {protein} of '{name}' do not hold the same frames in the same order")
