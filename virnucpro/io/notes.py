"""Model notes: which file each step loads for a model, and the checksums its source had when noted.

The models step (`virnucpro.steps.models.make_note`) makes the note of one model, a dict

    {"kind", "title": what the model is, "source": the file or folder the config names,
     "checksums": {file name: sha256} of the source's files, "verified": {file name: how it was
     verified, as its checksum record says, or "unverified"}, "file": what the steps load}

for kind "esm2" (a fair-esm checkpoint; "file" is its float16 conversion),
"dnabert_s" (a snapshot folder, loaded as it is; its config.json, tokenizer.json and weights are
checksummed) or "classifier" (an original `{300|500}_model.pth`, converted once, or our `.safetensors`,
used as it is). A model downloaded by the models step is verified; so is one placed by hand where the
download would be (models.dir, the download's name), checked as the download is before it is noted;
a model anywhere else is "unverified" unless its record says otherwise (a verified download moved with
its record). The workflow's `models` step writes each note as `{models.dir}/notes/{kind}-{id}.json`,
id naming the source's path; the steps read their models from the notes only. `check_note(note)`, which
every step calls first, stops with one line when a source no longer has the noted checksums (checked by
size and modification time against its checksum records, by content otherwise): a model that changed
after it was noted never reaches results through an old note, an old conversion or old embeddings.
"""

import json
from pathlib import Path

from virnucpro.errors import VirNucProError
from virnucpro.io.checksums import checked_sha256

FIELDS = ("kind", "title", "source", "checksums", "file")


def source_sha256(note):
    """The checksum of a one-file model (esm2, classifier)."""
    (digest,) = note["checksums"].values()
    return digest


def check_note(note):
    """The note (a dict, or the path of a note file), after checking that its model's source still has
    the noted checksums (needs nothing beyond the standard library: CPU-only steps call it too)."""
    if not isinstance(note, dict):
        note = read_note(note)
    source = Path(note["source"])
    for name, noted in note["checksums"].items():
        path = source / name if source.is_dir() else source
        if not path.is_file() or checked_sha256(path) != noted:
            raise VirNucProError(
                f"{path}: changed since the models step noted it ({noted}); run the workflow again so that "
                "the change reaches every step"
            )
    return note


def read_note(path):
    try:
        note = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise VirNucProError(f"{path}: not a readable model note ({exc})") from None
    if not isinstance(note, dict) or not all(isinstance(note.get(f), (str, dict)) for f in FIELDS):
        raise VirNucProError(f"{path}: not a model note")
    return note
