"""Model notes: which file each step loads for a model, and the checksums its source had when noted.

`model_note(kind, source, models_dir)` makes the note of one model, a dict

    {"kind", "source": the file or folder the config names, "checksums": {file name: sha256} of the
     source's files, "file": what the steps load}

for kind "esm2" (a fair-esm checkpoint; "file" is its float16 conversion, `converted.ensure_converted`),
"dnabert_s" (a snapshot folder, loaded as it is; its config.json, tokenizer.json and weights are
checksummed) or "classifier" (an original `{300|500}_model.pth`, converted once, or our `.safetensors`,
used as it is). The workflow's `models` step writes each note as `{models.dir}/notes/{kind}-{id}.json`,
id naming the source's path; the steps read their models from the notes only. `check_note(note)`, which
every step calls first, stops with one line when a source no longer has the noted checksums (checked by
size and modification time against its checksum records, by content otherwise): a model that changed
after it was noted never reaches results through an old note, an old conversion or old embeddings.
"""

import json
from pathlib import Path

from virnucpro.atomic import atomic_outputs
from virnucpro.checksums import checked_sha256
from virnucpro.errors import VirNucProError

KINDS = ("esm2", "dnabert_s", "classifier")


def _source_files(kind, source):
    """The files whose checksums identify a model, and the file the steps load (before conversion)."""
    source = Path(source)
    if kind == "dnabert_s":
        from virnucpro.dnabert import read_snapshot

        _, tokenizer, weights = read_snapshot(source)  # a missing or broken file is a one-line error
        return [source / "config.json", tokenizer.path, weights]
    if kind == "esm2":
        from virnucpro.esm2 import resolve_checkpoint

        return [resolve_checkpoint(source)]
    if kind == "classifier":
        if not source.is_file():
            raise VirNucProError(f"{source}: classifier file not found")
        return [source]
    raise VirNucProError(f"unknown model kind '{kind}' (expected one of {', '.join(KINDS)})")


def model_note(kind, source, models_dir=None):
    """The note of the model `source` (converting it into `models_dir` when its kind needs that)."""
    from virnucpro.classifier import is_safetensors
    from virnucpro.converted import ensure_converted

    files = _source_files(kind, source)
    checksums = {p.name: checked_sha256(p) for p in files}
    loaded = Path(source) if kind == "dnabert_s" else files[0]
    if kind == "esm2" or (kind == "classifier" and not is_safetensors(files[0])):
        if models_dir is None:
            raise VirNucProError(f"{source}: a models folder is needed to convert it (--models-dir)")
        loaded, _ = ensure_converted(kind, files[0], models_dir)
    return {"kind": kind, "source": str(Path(source).resolve()), "checksums": checksums,
            "file": str(Path(loaded).resolve())}


def source_sha256(note):
    """The checksum of a one-file model (esm2, classifier)."""
    (digest,) = note["checksums"].values()
    return digest


def check_note(note):
    """The note (a dict, or the path of a note file), after checking that its model's source still has
    the noted checksums."""
    if not isinstance(note, dict):
        note = read_note(note)
    files = _source_files(note["kind"], note["source"])
    for path in files:
        noted = note["checksums"].get(path.name)
        if noted is None or checked_sha256(path) != noted:
            raise VirNucProError(
                f"{path}: changed since the models step noted it ({noted}); run the workflow again so that "
                "the change reaches every step"
            )
    return note


def write_note(kind, source, models_dir, out):
    """The `models` step for one model: make its note and write it to `out` (JSON), atomically."""
    note = model_note(kind, source, models_dir)
    with atomic_outputs(out) as (tmp,):
        tmp.write_text(json.dumps(note, indent=1) + "\n")
    return note


def read_note(path):
    try:
        note = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise VirNucProError(f"{path}: not a readable model note ({exc})") from None
    if not isinstance(note, dict) or note.get("kind") not in KINDS:
        raise VirNucProError(f"{path}: not a model note")
    return note
