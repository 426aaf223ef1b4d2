"""Model files converted once into the form the steps load fast, addressed by their source's checksum.

`ensure_converted(kind, source, models_dir)` returns `{models_dir}/converted/{stem}-{sha16}.safetensors`,
where sha16 is the start of the sha256 of the source file as it is now (`checksums.checked_sha256`: a
recorded checksum is trusted while the file's size and mtime match, otherwise the file is hashed again).
The file is made on first use by the kind's converter, which checks its result against the source
before it is renamed into place; it gets a verified checksum record of its own and names its source's
sha256 in its metadata, and both are checked whenever it is used. A changed source therefore has
another converted file: a stale conversion can never be picked up. Concurrent jobs converting the same
source wait for each other (an exclusive lock per file).

Kinds: "esm2" (a fair-esm checkpoint -> `virnucpro.models.esm2.convert_checkpoint`) and "classifier" (an original
VirNucPro `{300|500}_model.pth` -> `virnucpro.models.mlp.convert_original`).

`model_note(kind, source, models_dir)` makes a model's note (`virnucpro.io.notes`), converting it first
where its kind needs that, after verifying a model placed by hand where the models step downloads it
(`fetch.verify_placed`); `write_note` is the workflow's `models` step for one model.
`safetensors_metadata` reads a safetensors file's metadata without torch (the classifier's fragment
size, at parse time).
"""

import fcntl
import json
import logging
import os
import struct
from pathlib import Path

from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import atomic_outputs
from virnucpro.io.checksums import checked_sha256, record_path, verification, write_record

log = logging.getLogger("virnucpro")


def _converter(kind):
    if kind == "esm2":
        from virnucpro.models.esm2 import convert_checkpoint

        return convert_checkpoint
    if kind == "classifier":
        from virnucpro.models.mlp import convert_original

        return convert_original
    raise VirNucProError(f"unknown model kind '{kind}' to convert (expected esm2 or classifier)")


def converted_path(source, source_sha256, models_dir):
    return Path(models_dir) / "converted" / f"{Path(source).stem}-{source_sha256[:16]}.safetensors"


def ensure_converted(kind, source, models_dir):
    """(converted file, source sha256) for `source`, converting it first when needed."""
    source = Path(source)
    if not source.is_file():
        raise VirNucProError(f"{source}: model file not found")
    digest = checked_sha256(source)
    out = converted_path(source, digest, models_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one converter at a time; the others find its result
        if not out.is_file():
            log.info("converting %s (sha256 %s) -> %s", source, digest, out)
            with atomic_outputs(out, record_path(out)) as (tmp, tmp_record):
                _converter(kind)(source, tmp, digest)
                write_record(tmp, verified=f"converted from {source.name} (sha256 {digest})", record=tmp_record)
    return out, digest


def is_safetensors(path):
    """True when `path` starts as a safetensors file does (an 8-byte header length, then JSON)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < (1 << 27)


def safetensors_metadata(path):
    """The metadata ({str: str}) in the header of the safetensors file `path`, read without torch; {}
    when it has none."""
    if not is_safetensors(path):
        raise VirNucProError(f"{path}: not a safetensors file")
    try:
        with open(path, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(size))
    except (ValueError, UnicodeDecodeError) as exc:
        raise VirNucProError(f"{path}: unreadable safetensors header ({exc})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def save_safetensors(state, path, metadata):
    """`safetensors.torch.save_file`, with two things made as they should be: the header is written with
    its keys sorted, so that the same state and metadata give the same bytes in every process
    (safetensors writes its metadata in hash-map order, which differs from one process to the next);
    and the file gets the mode any new file gets under the umask (safetensors writes through a
    temporary file created 0600 whatever the umask, safetensors/safetensors#782)."""
    from safetensors.torch import save_file

    save_file(state, str(path), metadata=metadata)
    _sort_header(path)
    mask = os.umask(0o077)  # reading the umask means setting it; the most restrictive value meanwhile
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _sort_header(path):
    """Rewrite a safetensors header with sorted keys, padded with spaces to its old length (data offsets
    count from the end of the header, so the tensors' bytes stay where they are)."""
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > size:  # cannot happen for the ASCII names and values written here
            raise VirNucProError(f"{path}: the sorted safetensors header is longer than the written one")
        f.seek(8)
        f.write(text + b" " * (size - len(text)))


def _source_files(kind, source):
    """The files whose checksums identify a model, and the file the steps load (before conversion)."""
    source = Path(source)
    if kind == "dnabert_s":
        from virnucpro.models.dnabert import read_snapshot

        _, tokenizer, weights = read_snapshot(source)  # a missing or broken file is a one-line error
        return [source / "config.json", tokenizer.path, weights]
    if kind == "esm2":
        from virnucpro.models.esm2 import resolve_checkpoint

        return [resolve_checkpoint(source)]
    if kind == "classifier":
        if not source.is_file():
            raise VirNucProError(f"{source}: classifier file not found")
        return [source]
    raise VirNucProError(f"unknown model kind '{kind}' (expected esm2, dnabert_s or classifier)")


def ensure_float8(converted, source_sha256):
    """The float8 file made from our float16 ESM-2 file `converted` (`esm2.convert_float8`), beside it and
    named after it (so after its source's checksum), made on first use as `ensure_converted` makes files."""
    from virnucpro.models.esm2 import convert_float8

    converted = Path(converted)
    out = converted.with_name(f"{converted.stem}-float8.safetensors")
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.is_file():
            with atomic_outputs(out, record_path(out)) as (tmp, tmp_record):
                convert_float8(converted, tmp, source_sha256)
                write_record(tmp, verified=f"quantised from {converted.name}", record=tmp_record)
    return out


def model_note(kind, source, models_dir=None, float8=False):
    """The note of the model `source` (converting it into `models_dir` when its kind needs that); a
    model at the name the models step downloads into `models_dir` is verified first as a download is;
    with `float8`, an ESM-2 note also names the float8 file (`float8_file`, `ensure_float8`)."""
    from virnucpro.steps.fetch import at_download_name, verify_placed

    files = _source_files(kind, source)
    if at_download_name(kind, source, models_dir):
        verify_placed(kind, source)
    checksums = {p.name: checked_sha256(p) for p in files}
    verified = {p.name: verification(p) for p in files}
    noted = loaded = Path(source) if kind == "dnabert_s" else files[0]  # a model name resolved to its file
    if kind == "esm2" or (kind == "classifier" and not is_safetensors(files[0])):
        if models_dir is None:
            raise VirNucProError(f"{source}: a models folder is needed to convert it (--models-dir)")
        loaded, _ = ensure_converted(kind, files[0], models_dir)
    note = {"kind": kind, "source": str(noted.resolve()), "checksums": checksums, "verified": verified,
            "file": str(Path(loaded).resolve())}
    if float8 and kind == "esm2":
        note["float8_file"] = str(ensure_float8(loaded, checksums[files[0].name]).resolve())
    return note


def write_note(kind, source, models_dir, out, float8=False):
    """The `models` step for one model: make its note and write it to `out` (JSON), atomically."""
    note = model_note(kind, source, models_dir, float8)
    with atomic_outputs(out) as (tmp,):
        tmp.write_text(json.dumps(note, indent=1) + "\n")
    return note
