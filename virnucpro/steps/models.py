"""The models step: each model the config names is downloaded and verified (or verified where placed by
hand), checksummed, converted once where its kind needs it, and noted.

`KINDS` is the one table of the kinds of model ("esm2", "dnabert_s", "classifier"): each `Kind` says
what its download fetches and how that is verified, which files identify it, how a file placed by hand
is checked, and which conversion the steps load it through. Nothing else dispatches on a model's kind.

- `download_model(kind, output)` (the download rules) fetches into temporary names beside `output`,
  verifies, and renames: a failed or interrupted download leaves nothing under the final name; with no
  network, the error is one line naming every URL to fetch and where to put each file.
- `note_model(kind, source, models_dir, out)` (the note rule) writes the model's note (`make_note`,
  `virnucpro.io.notes`): a model at the name the step downloads into `models_dir` is verified first as
  its download would be, its files are checksummed, and ESM-2 and an original classifier are converted
  once into `models_dir/converted/`, named by the source's sha256 (`ensure_converted`), so a changed
  source always gets a new conversion. Concurrent jobs converting one source wait for each other.

What is verified, and how (as far as public sources let us pin the files):
- classifier (`300_model.pth` / `500_model.pth`, from the original GitHub repository Li-Jing-1997/
  VirNucPro): the git blob id of the bytes must equal the id the repository's tree records for that
  file; should the repository serve a Git LFS pointer (whose blob id then matches), the object is
  fetched from GitHub's LFS media host and checked against the pointer's sha256 and size.
- dnabert_s (Hugging Face zhihan1996/DNABERT-S at revision `DNABERT_S_REVISION`): `pytorch_model.bin`
  must have sha256 `DNABERT_S_WEIGHTS_SHA256`, the LFS sha256 the Hub shows for this file in two
  independent copies of the authors' upload (m10an/DNABERT-S, whose history holds zhihan1996's "Upload 9
  files" commit, and Taykhoom/DNABERTS-patched, "Duplicate from zhihan1996/DNABERT-S"). No checksum is
  published for `config.json` and `tokenizer.json`: their content is checked (12 layers, hidden size
  768, 12 heads, vocabulary 4096; a BPE tokenizer).
- esm2 (fair-esm hub files): Meta publishes no checksums. The byte count must equal the server's
  Content-Length and the file must be a complete PyTorch zip archive whose every member passes its
  CRC-32 check.
Every verified file gets a verified checksum record `<file>.checksum.json` (virnucpro.io.checksums).
"""

import fcntl
import hashlib
import json
import logging
import os
import re
from pathlib import Path

from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import atomic_outputs
from virnucpro.io.checksums import checked_sha256, is_verified, record_path, sha256_of, verification, write_record
from virnucpro.io.downloads import (
    Unreachable,
    failed_check,
    fetch,
    git_blob_id,
    json_of,
    offline_error,
    torch_zip_problem,
)
from virnucpro.io.tensors import is_safetensors

log = logging.getLogger("virnucpro")

ESM2_URL = "https://dl.fbaipublicfiles.com/fair-esm/models/{name}.pt"
ESM2_REGRESSION_URL = "https://dl.fbaipublicfiles.com/fair-esm/regression/{name}-contact-regression.pt"
ESM2_VERIFIED = "complete PyTorch zip archive, CRC-32 of every member"

DNABERT_S_REPO = "zhihan1996/DNABERT-S"
# The authors' "Upload 9 files" commit, in the short form the Hub resolves; the weights are pinned by
# their sha256 whatever the revision serves.
DNABERT_S_REVISION = "1cdf84d"
DNABERT_S_URL = "https://huggingface.co/{repo}/resolve/{revision}/{file}"
DNABERT_S_FILES = ("config.json", "tokenizer.json", "pytorch_model.bin")
DNABERT_S_WEIGHTS_SHA256 = "f3cfc3d0541859df64759e758cc4bc40fe1d5760799a7d098a9f9f09501c1e5f"

CLASSIFIER_URL = "https://raw.githubusercontent.com/Li-Jing-1997/VirNucPro/main/{name}"
CLASSIFIER_LFS_URL = "https://media.githubusercontent.com/media/Li-Jing-1997/VirNucPro/main/{name}"
CLASSIFIER_BLOB_IDS = {
    "300_model.pth": "a0b5b85e7c1e44f00cde146d091beb82b2c8e855",
    "500_model.pth": "fc35d5ef9f1f4564eea7036f34f4f8ec6000d33d",
}
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\n"


class Kind:
    """A kind of model: `name` (its config key under models.*), `title` (for the report), `folder` (a
    snapshot folder rather than one file), `download_names` (the names the models step downloads into
    models.dir: a pattern, and the same for people)."""

    name = title = download_names = None
    folder = False
    float8 = False  # has a float8 form (embed.precision float8): made beside its conversion

    def downloadable(self, path):
        """Whether the download can make `path` (a name of `download_names`, or one the download accepts)."""
        return True

    def sources(self, output):
        """[(URL, destination)] that the download into `output` fetches."""
        raise NotImplementedError

    def download(self, output):
        """Fetch and verify the model into `output`."""
        raise NotImplementedError

    def placed_checks(self, path):
        """[(file, check(file, its sha256) -> problem or None, how it is verified)] of a model placed by
        hand at its download name: what its download is verified by."""
        raise NotImplementedError

    def files(self, source):
        """The files whose checksums identify the model `source`; the first is the one loaded (a one-file kind)."""
        raise NotImplementedError

    def converter(self, file):
        """The conversion the steps load `file` through (`converter(source, out, source_sha256)`), or None."""
        return None


# ------------------------------------------------------------------------------------------- ESM-2


class Esm2(Kind):
    name, title, float8 = "esm2", "ESM-2 (protein embeddings)", True
    download_names = (re.compile(r"esm2_t[0-9]+_[0-9]+[MB]_UR50D\.pt"), "a fair-esm name such as esm2_t36_3B_UR50D.pt")

    def sources(self, output):
        name = Path(output).name.removesuffix(".pt")
        return [(ESM2_URL.format(name=name), Path(output)),
                (ESM2_REGRESSION_URL.format(name=name), Path(output).with_name(f"{name}-contact-regression.pt"))]

    def download(self, output):
        if output.suffix != ".pt" or not output.name.startswith("esm2_"):
            raise VirNucProError(f"{output}: an ESM-2 file is named like esm2_t36_3B_UR50D.pt")
        pairs = self.sources(output)
        finals = [dest for _, dest in pairs]
        with atomic_outputs(*finals, *map(record_path, finals)) as tmps:
            try:
                for (url, final), tmp, tmp_record in zip(pairs, tmps[:2], tmps[2:]):
                    fetch(url, tmp)
                    if problem := torch_zip_problem(tmp):
                        raise failed_check(url, final, problem)
                    digest = write_record(tmp, verified=ESM2_VERIFIED, record=tmp_record)
                    log.info("%s verified (complete zip, CRC-32 of every member; sha256 %s)", final.name, digest)
            except Unreachable as exc:
                raise offline_error(exc, pairs) from None
        return output

    def placed_checks(self, path):
        return [(Path(path), lambda f, digest: torch_zip_problem(f), ESM2_VERIFIED)]

    def files(self, source):
        from virnucpro.models.esm2 import resolve_checkpoint

        return [resolve_checkpoint(source)]

    def converter(self, file):
        from virnucpro.models.esm2 import convert_checkpoint

        return convert_checkpoint


# --------------------------------------------------------------------------------------- DNABERT-S


def _check_config(path, digest):
    config, problem = json_of(path)
    if problem:
        return problem
    expected = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "vocab_size": 4096}
    wrong = {k: config.get(k) for k, v in expected.items() if config.get(k) != v}
    return f"config.json differs from DNABERT-S: {wrong}" if wrong else None


def _check_tokenizer(path, digest):
    tokenizer, problem = json_of(path)
    if problem:
        return problem
    model = (tokenizer.get("model") or {}).get("type")
    return None if model == "BPE" else f"tokenizer.json holds a {model!r} model, not BPE"


def _check_weights(path, digest):
    return None if digest == DNABERT_S_WEIGHTS_SHA256 else f"sha256 {digest}, expected {DNABERT_S_WEIGHTS_SHA256}"


DNABERT_S_CHECKS = {  # file -> (check(path, its sha256): the problem or None, how it is verified)
    "config.json": (_check_config, "content checked"),
    "tokenizer.json": (_check_tokenizer, "content checked"),
    "pytorch_model.bin": (_check_weights, "published sha256"),
}


class DnabertS(Kind):
    name, title, folder = "dnabert_s", "DNABERT-S (nucleotide embeddings)", True
    download_names = (re.compile(r"DNABERT-S"), "DNABERT-S")

    def sources(self, output):
        return [(DNABERT_S_URL.format(repo=DNABERT_S_REPO, revision=DNABERT_S_REVISION, file=f), Path(output) / f)
                for f in DNABERT_S_FILES]

    def download(self, output):
        pairs = self.sources(output)
        if output.is_dir() and any(output.iterdir()):
            raise VirNucProError(f"{output}: directory exists and is not empty; remove it to download again")
        with atomic_outputs(output) as (tmp,):
            tmp.mkdir()
            try:
                for url, final in pairs:
                    part = tmp / final.name
                    fetch(url, part)
                    digest = sha256_of(part)
                    check, how = DNABERT_S_CHECKS[final.name]
                    if problem := check(part, digest):
                        raise failed_check(url, output, problem)
                    write_record(part, digest, verified=f"{DNABERT_S_REPO} at {DNABERT_S_REVISION}, {how}")
                    log.info("%s verified (sha256 %s)", final.name, digest)
            except Unreachable as exc:
                raise offline_error(exc, pairs) from None
        log.info("DNABERT-S (%s at %s) -> %s", DNABERT_S_REPO, DNABERT_S_REVISION, output)
        return output

    def placed_checks(self, path):
        from virnucpro.models.namespaces import DNABERT_WEIGHT_FILES  # numpy: not at parse time (virnucpro.config)

        path = Path(path)
        other = [n for n in DNABERT_WEIGHT_FILES if n not in DNABERT_S_FILES and (path / n).exists()]
        if other:  # read in preference to pytorch_model.bin, and never published
            raise _placed_error(self.name, path / other[0], "the published DNABERT-S has no such file")
        return [(path / name, check, f"{DNABERT_S_REPO} at {DNABERT_S_REVISION}, {how}")
                for name, (check, how) in DNABERT_S_CHECKS.items()]

    def files(self, source):
        from virnucpro.models.dnabert import read_snapshot

        _, tokenizer, weights = read_snapshot(source)  # a missing or broken file is a one-line error
        return [Path(source) / "config.json", tokenizer.path, weights]


# ------------------------------------------------------------------------------------- classifiers


def classifier_blob_problem(path):
    """How the classifier file `path` (named 300_model.pth or 500_model.pth) differs from the published
    one (its git blob id), or None."""
    path = Path(path)
    expected = CLASSIFIER_BLOB_IDS[path.name]
    blob = git_blob_id(path.read_bytes())  # a few MB
    return None if blob == expected else f"git blob id {blob}, published {expected}"


class Classifier(Kind):
    name, title = "classifier", "VirNucPro classifier"
    download_names = (re.compile(r"(300|500)_model\.pth"), "300_model.pth or 500_model.pth")

    def downloadable(self, path):
        """Only the original names (any other classifier, the one `snakemake train` writes included, is
        made by the workflow or the user)."""
        return Path(path).name in CLASSIFIER_BLOB_IDS

    def sources(self, output):
        return [(CLASSIFIER_URL.format(name=Path(output).name), Path(output))]

    def download(self, output):
        name = output.name
        if name not in CLASSIFIER_BLOB_IDS:
            raise VirNucProError(f"{output}: the VirNucPro classifiers are {' and '.join(CLASSIFIER_BLOB_IDS)}")
        ((url, _),) = self.sources(output)
        with atomic_outputs(output, record_path(output)) as (tmp, tmp_record):
            try:
                fetch(url, tmp)
                data = tmp.read_bytes()
                blob = git_blob_id(data)
                if blob != CLASSIFIER_BLOB_IDS[name]:
                    raise failed_check(url, output, f"git blob id {blob}, expected {CLASSIFIER_BLOB_IDS[name]}")
                digest = hashlib.sha256(data).hexdigest()
                if data.startswith(LFS_POINTER):
                    url = CLASSIFIER_LFS_URL.format(name=name)
                    digest = _fetch_lfs_object(url, tmp, data, output)
            except Unreachable as exc:
                raise offline_error(exc, [(url, output)]) from None
            write_record(tmp, digest, verified=f"git blob id {blob} of the original repository", record=tmp_record)
        log.info("%s verified (git blob id %s) -> %s", name, CLASSIFIER_BLOB_IDS[name], output)
        return output

    def placed_checks(self, path):
        how = f"git blob id {CLASSIFIER_BLOB_IDS[Path(path).name]} of the original repository"
        return [(Path(path), lambda f, digest: classifier_blob_problem(f), how)]

    def files(self, source):
        if not Path(source).is_file():
            raise VirNucProError(f"{source}: classifier file not found")
        return [Path(source)]

    def converter(self, file):
        if is_safetensors(file):
            return None  # ours already (converted, or retrained)
        from virnucpro.models.mlp import convert_original

        return convert_original


def _fetch_lfs_object(url, tmp, pointer, output):
    """Fetch the LFS object `pointer` names into `tmp`, checked against its size and sha256 (returned)."""
    fields = dict(line.split(" ", 1) for line in pointer.decode().splitlines() if " " in line)
    oid, size = fields.get("oid", "").removeprefix("sha256:"), int(fields.get("size", -1))
    n = fetch(url, tmp)
    if n != size or sha256_of(tmp) != oid:
        raise failed_check(url, output, f"LFS object of {n} bytes does not match the pointer (sha256 {oid}, "
                                        f"{size} bytes)")
    return oid


KINDS = {kind.name: kind for kind in (Esm2(), DnabertS(), Classifier())}


def kind_of(name):
    if name not in KINDS:
        raise VirNucProError(f"unknown model kind '{name}' (expected {', '.join(KINDS)})")
    return KINDS[name]


# ----------------------------------------------------------------------------------- downloading


def download_model(kind, output):
    """Download and verify one model into `output` (a file, or the DNABERT-S directory)."""
    return kind_of(kind).download(Path(output))


def missing_models(paths):
    """The lines that tell, for every model of `paths` ({kind: path}) not on disk, where to fetch it
    from and where to put it, or which setting to point at a copy instead; a model no download makes
    (the classifier `snakemake train` writes) is named as made by `snakemake train` instead. [] when all
    are there."""
    fetched, trained = [], []
    for key, path in paths.items():
        if Path(path).exists():
            continue
        if not kind_of(key).downloadable(path):
            trained.append(f"models.{key}: {path} is not on disk yet: `snakemake train` makes it (or set "
                           f"models.{key} in config.yaml to a model already on disk)")
            continue
        fetch_lines = "; ".join(f"{url} -> {dest}" for url, dest in kind_of(key).sources(path))
        fetched.append(f"  models.{key}: {fetch_lines}")
    if fetched:
        fetched.insert(0, "models not on disk yet (no internet here?): fetch them on a machine that has it, "
                          "or set each models.* setting in config.yaml to a copy already on disk:")
    return fetched + trained


# ------------------------------------------------------------------------------ placed by hand


def at_download_name(kind, path, models_dir):
    """True when `path` is where the models step downloads `kind` into `models_dir` (symbolic links are
    not followed: a link of that name in models.dir is a file placed there)."""
    if models_dir is None:
        return False
    path = Path(os.path.abspath(path))
    pattern, _ = kind_of(kind).download_names
    return path.parent == Path(os.path.abspath(models_dir)) and pattern.fullmatch(path.name) is not None


def _placed_error(kind, file, problem):
    return VirNucProError(
        f"{file}: placed where the models step downloads the published file, but {problem}: delete it to "
        f"download the published one, or move it out of models.dir and point models.{kind} at it to use it "
        "unverified"
    )


def verify_placed(kind, path):
    """Verify the model `path` at its download name (`at_download_name`) as its download would be; each
    file gets a verified checksum record saying how, so that this happens once per file (a file whose
    record already holds a verification for its content is not checked again). A file that fails stops
    with one line naming it and what differs."""
    for file, check, how in kind_of(kind).placed_checks(path):
        if not file.is_file():
            raise _placed_error(kind, file, "it does not exist")
        digest = checked_sha256(file)  # refuses a verified file whose content changed since
        if is_verified(file):
            continue
        if problem := check(file, digest):
            raise _placed_error(kind, file, problem)
        try:
            write_record(file, digest, verified=f"{how}; placed by hand")
        except OSError as exc:
            log.warning("cannot record the verification of %s (%s); it is verified again next time", file, exc)
        log.info("%s verified (%s)", file, how)


# ------------------------------------------------------------------------------------- converting


def converted_path(source, source_sha256, models_dir):
    return Path(models_dir) / "converted" / f"{Path(source).stem}-{source_sha256[:16]}.safetensors"


def _once(out, make):
    """Make the file `out` with `make(tmp, tmp_record)` unless it is there, one process at a time (an
    exclusive lock per file: the others find its result), complete or not at all."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.is_file():
            with atomic_outputs(out, record_path(out)) as (tmp, tmp_record):
                make(tmp, tmp_record)
    return out


def ensure_converted(kind, source, models_dir):
    """(converted file, source sha256) for the model file `source`, converted first when needed: the file
    gets a verified checksum record and names its source's sha256 in its metadata."""
    source = Path(source)
    if not source.is_file():
        raise VirNucProError(f"{source}: model file not found")
    digest = checked_sha256(source)
    convert = kind_of(kind).converter(source)
    out = converted_path(source, digest, models_dir)

    def make(tmp, tmp_record):
        log.info("converting %s (sha256 %s) -> %s", source, digest, out)
        convert(source, tmp, digest)
        write_record(tmp, verified=f"converted from {source.name} (sha256 {digest})", record=tmp_record)

    return _once(out, make), digest


def ensure_float8(converted, source_sha256):
    """The float8 file made from our float16 ESM-2 file `converted` (`esm2.convert_float8`), beside it and
    named after it (so after its source's checksum), made on first use as `ensure_converted` makes files."""
    from virnucpro.models.esm2 import convert_float8

    converted = Path(converted)

    def make(tmp, tmp_record):
        convert_float8(converted, tmp, source_sha256)
        write_record(tmp, verified=f"quantised from {converted.name}", record=tmp_record)

    return _once(converted.with_name(f"{converted.stem}-float8.safetensors"), make)


# ----------------------------------------------------------------------------------------- noting


def make_note(kind, source, models_dir=None, float8=False):
    """The note of the model `source` (converting it into `models_dir` when its kind needs that); a model
    at the name the models step downloads into `models_dir` is verified first as a download is; with
    `float8`, the note of a kind that has a float8 form (ESM-2) also names that file (`float8_file`,
    `ensure_float8`)."""
    model = kind_of(kind)
    files = model.files(source)
    if at_download_name(kind, source, models_dir):
        verify_placed(kind, source)
    checksums = {p.name: checked_sha256(p) for p in files}
    verified = {p.name: verification(p) for p in files}
    noted = loaded = Path(source) if model.folder else files[0]  # a model name resolved to its file
    if not model.folder and model.converter(files[0]) is not None:
        if models_dir is None:
            raise VirNucProError(f"{source}: a models folder is needed to convert it (--models-dir)")
        loaded, _ = ensure_converted(kind, files[0], models_dir)
    note = {"kind": kind, "title": model.title, "source": str(noted.resolve()), "checksums": checksums,
            "verified": verified, "file": str(Path(loaded).resolve())}
    if float8 and model.float8:
        note["float8_file"] = str(ensure_float8(loaded, checksums[files[0].name]).resolve())
    return note


def note_model(kind, source, models_dir, out, float8=False):
    """The models step for one model: make its note and write it to `out` (JSON), atomically."""
    note = make_note(kind, source, models_dir, float8)
    with atomic_outputs(out) as (tmp,):
        tmp.write_text(json.dumps(note, indent=1) + "\n")
    return note
