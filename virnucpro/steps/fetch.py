"""Model downloads: ESM-2, DNABERT-S and the VirNucPro classifiers, each verified before it appears.

`download_model(kind, output)` fetches with urllib into temporary names beside `output`, verifies, and
renames; a failed or interrupted download leaves nothing under the final name. With no network, the
error is one line naming every URL to fetch and where to put each file.

What is verified, and how (stated plainly, as far as public sources let us pin the files):
- classifier (`300_model.pth` / `500_model.pth`, from the original GitHub repository Li-Jing-1997/
  VirNucPro): the git blob id of the bytes, sha1(b"blob <size>\\0" + content), must equal the id the
  repository's tree records for that file. This pins the exact bytes. Should the repository serve a
  Git LFS pointer (whose blob id then matches), the object is fetched from GitHub's LFS media host and
  checked against the pointer's sha256 and size.
- dnabert_s (Hugging Face zhihan1996/DNABERT-S at revision `DNABERT_S_REVISION`): `pytorch_model.bin`
  must have sha256 `DNABERT_S_WEIGHTS_SHA256`. That value is the LFS sha256 the Hub shows for this file
  in two independent copies of the authors' upload (m10an/DNABERT-S, whose history holds zhihan1996's
  "Upload 9 files" commit, and Taykhoom/DNABERTS-patched, "Duplicate from zhihan1996/DNABERT-S"); it
  pins the weights whatever the revision serves. We found no published checksum for `config.json` and
  `tokenizer.json`: they are checked for content (the architecture this project implements: 12 layers,
  hidden size 768, 12 heads, vocabulary 4096; a BPE tokenizer) and their sha256 is logged.
- esm2 (fair-esm hub files): Meta publishes no checksums. The byte count must equal the server's
  Content-Length and the file must be a complete PyTorch zip archive whose every member passes its
  CRC-32 check; the sha256 is logged.
Every verified file gets a verified checksum record `<file>.checksum.json` (virnucpro.io.checksums),
written with it; the steps that load a model check the file against its record first.

A model placed by hand where the models step would download it (`at_download_name`: in models.dir,
under a name of `DOWNLOAD_NAMES`) is verified as its download would be, once, by `verify_placed`
(the models step's note of it calls it): the classifier by its git blob id, DNABERT-S by the sha256 of
its weights and the content of its config and tokenizer, ESM-2 by the CRC-32 of every archive member.
"""

import hashlib
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import atomic_outputs
from virnucpro.io.checksums import checked_sha256, is_verified, record_path, sha256_of, write_record

log = logging.getLogger("virnucpro")

ESM2_URL = "https://dl.fbaipublicfiles.com/fair-esm/models/{name}.pt"
ESM2_REGRESSION_URL = "https://dl.fbaipublicfiles.com/fair-esm/regression/{name}-contact-regression.pt"

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
# model files the models step downloads into models.dir when they are missing: name pattern, names
DOWNLOAD_NAMES = {
    "esm2": (re.compile(r"esm2_t[0-9]+_[0-9]+[MB]_UR50D\.pt"), "a fair-esm name such as esm2_t36_3B_UR50D.pt"),
    "dnabert_s": (re.compile(r"DNABERT-S"), "DNABERT-S"),
    "classifier": (re.compile(r"(300|500)_model\.pth"), "300_model.pth or 500_model.pth"),
}
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\n"
TIMEOUT_S = 60
_CHUNK = 1 << 20
_REPORT_ABOVE = 50_000_000  # bytes: progress lines for downloads larger than this


class _Unreachable(Exception):
    """A download that failed for network reasons (turned into the one-line offline message)."""


def git_blob_id(data):
    """The git object id of a file with content `data` (bytes), as `git hash-object` prints it."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def download_model(kind, output):
    """Download and verify one model into `output` (a file, or the DNABERT-S directory)."""
    output = Path(output)
    if kind == "classifier":
        return _download_classifier(output)
    if kind == "esm2":
        return _download_esm2(output)
    if kind == "dnabert_s":
        return _download_dnabert_s(output)
    raise VirNucProError(f"unknown model kind '{kind}' (expected esm2, dnabert_s or classifier)")


def sources(kind, output):
    """[(URL, destination)] that the download of `kind` into `output` fetches."""
    output = Path(output)
    if kind == "classifier":
        return [(CLASSIFIER_URL.format(name=output.name), output)]
    if kind == "esm2":
        name = output.name.removesuffix(".pt")
        return [(ESM2_URL.format(name=name), output),
                (ESM2_REGRESSION_URL.format(name=name), output.with_name(f"{name}-contact-regression.pt"))]
    if kind == "dnabert_s":
        return [(DNABERT_S_URL.format(repo=DNABERT_S_REPO, revision=DNABERT_S_REVISION, file=f), output / f)
                for f in DNABERT_S_FILES]
    raise VirNucProError(f"unknown model kind '{kind}' (expected esm2, dnabert_s or classifier)")


def downloadable(kind, path):
    """True when the download of `kind` can make `path`: a classifier only under the original names (any
    other classifier, the one `snakemake train` writes included, is made by the workflow or the user)."""
    return kind != "classifier" or Path(path).name in CLASSIFIER_BLOB_IDS


def missing_models(paths):
    """The lines that tell, for every model of `paths` ({setting: path}) not on disk, where to fetch it
    from and where to put it, or which setting to point at a copy instead; a model no download makes
    (the classifier `snakemake train` writes) is named as made by `snakemake train` instead. [] when all
    are there."""
    fetched, trained = [], []
    for key, path in paths.items():
        if Path(path).exists():
            continue
        if not downloadable(key, path):
            trained.append(f"models.{key}: {path} is not on disk yet: `snakemake train` makes it (or set "
                           f"models.{key} in config.yaml to a model already on disk)")
            continue
        fetch = "; ".join(f"{url} -> {dest}" for url, dest in sources(key, path))
        fetched.append(f"  models.{key}: {fetch}")
    if fetched:
        fetched.insert(0, "models not on disk yet (no internet here?): fetch them on a machine that has it, "
                          "or set each models.* setting in config.yaml to a copy already on disk:")
    return fetched + trained


def _offline(exc, pairs):
    todo = "; ".join(f"{url} to {dest}" for url, dest in pairs)
    return VirNucProError(
        f"cannot download ({exc}). Without internet here, fetch {todo} on another machine, "
        "or point the models settings in config.yaml at copies already on disk"
    )


def fetch(url, dest):
    """Stream `url` into the file `dest`; returns the byte count. Network failures raise _Unreachable."""
    started, done, next_report = time.monotonic(), 0, 0.1
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                done += len(chunk)
                if total > _REPORT_ABOVE and done / total >= next_report:
                    rate = done / max(time.monotonic() - started, 1e-9) / 1e6
                    log.info("%s: %.0f%% of %.1f MB (%.1f MB/s)", url, 100 * done / total, total / 1e6, rate)
                    next_report += 0.1
    except urllib.error.HTTPError as exc:
        raise _Unreachable(f"{url}: {exc}") from None
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        raise _Unreachable(f"{url}: {getattr(exc, 'reason', None) or exc}") from None
    if total and done != total:
        raise _Unreachable(f"{url}: transfer ended after {done} of {total} bytes")
    return done


def _bad(url, dest, problem):
    return VirNucProError(f"{url}: downloaded file failed verification ({problem}); nothing was written to {dest}")


# ------------------------------------------------------------------------------------- classifiers


def _download_classifier(output):
    name = output.name
    if name not in CLASSIFIER_BLOB_IDS:
        raise VirNucProError(f"{output}: the VirNucPro classifiers are {' and '.join(CLASSIFIER_BLOB_IDS)}")
    ((url, _),) = sources("classifier", output)
    with atomic_outputs(output, record_path(output)) as (tmp, tmp_record):
        try:
            fetch(url, tmp)
            data = tmp.read_bytes()
            blob = git_blob_id(data)
            if blob != CLASSIFIER_BLOB_IDS[name]:
                raise _bad(url, output, f"git blob id {blob}, expected {CLASSIFIER_BLOB_IDS[name]}")
            digest = hashlib.sha256(data).hexdigest()
            if data.startswith(LFS_POINTER):
                url = CLASSIFIER_LFS_URL.format(name=name)
                digest = _fetch_lfs_object(url, tmp, data, output)
        except _Unreachable as exc:
            raise _offline(exc, [(url, output)]) from None
        write_record(tmp, digest, verified=f"git blob id {blob} of the original repository", record=tmp_record)
    log.info("%s verified (git blob id %s) -> %s", name, CLASSIFIER_BLOB_IDS[name], output)
    return output


def _fetch_lfs_object(url, tmp, pointer, output):
    """Fetch the LFS object `pointer` names into `tmp`, checked against its size and sha256 (returned)."""
    fields = dict(line.split(" ", 1) for line in pointer.decode().splitlines() if " " in line)
    oid, size = fields.get("oid", "").removeprefix("sha256:"), int(fields.get("size", -1))
    n = fetch(url, tmp)
    if n != size or sha256_of(tmp) != oid:
        raise _bad(url, output, f"LFS object of {n} bytes does not match the pointer (sha256 {oid}, {size} bytes)")
    return oid


# ------------------------------------------------------------------------------------------- ESM-2


def _download_esm2(output):
    name = output.name.removesuffix(".pt")
    if output.suffix != ".pt" or not name.startswith("esm2_"):
        raise VirNucProError(f"{output}: an ESM-2 file is named like esm2_t36_3B_UR50D.pt")
    pairs = sources("esm2", output)
    finals = [dest for _, dest in pairs]
    with atomic_outputs(*finals, *map(record_path, finals)) as tmps:
        try:
            for (url, final), tmp, tmp_record in zip(pairs, tmps[:2], tmps[2:]):
                fetch(url, tmp)
                problem = _torch_zip_problem(tmp)
                if problem:
                    raise _bad(url, final, problem)
                digest = write_record(tmp, verified="complete PyTorch zip archive, CRC-32 of every member",
                                      record=tmp_record)
                log.info("%s verified (complete zip, CRC-32 of every member; sha256 %s)", final.name, digest)
        except _Unreachable as exc:
            raise _offline(exc, pairs) from None
    return output


def _torch_zip_problem(path):
    """Why `path` is not a complete PyTorch zip checkpoint, or None."""
    try:
        with zipfile.ZipFile(path) as z:
            if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist()):
                return "no data.pkl: not a PyTorch checkpoint"
            broken = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"not a complete zip archive: {exc}"
    return f"member {broken} fails its CRC-32 check" if broken else None


# --------------------------------------------------------------------------------------- DNABERT-S


def _download_dnabert_s(output):
    pairs = sources("dnabert_s", output)
    if output.is_dir() and any(output.iterdir()):
        raise VirNucProError(f"{output}: directory exists and is not empty; remove it to download again")
    with atomic_outputs(output) as (tmp,):
        tmp.mkdir()
        try:
            for url, final in pairs:
                part = tmp / final.name
                fetch(url, part)
                digest = sha256_of(part)
                problem = _DNABERT_CHECKS[final.name](part, digest)
                if problem:
                    raise _bad(url, output, problem)
                write_record(part, digest, verified=f"{DNABERT_S_REPO} at {DNABERT_S_REVISION}, {_VERIFIED[final.name]}")
                log.info("%s verified (sha256 %s)", final.name, digest)
        except _Unreachable as exc:
            raise _offline(exc, pairs) from None
    log.info("DNABERT-S (%s at %s) -> %s", DNABERT_S_REPO, DNABERT_S_REVISION, output)
    return output


def _json(path):
    try:
        return json.loads(Path(path).read_text()), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"not JSON ({exc})"


def _check_config(path, digest):
    config, problem = _json(path)
    if problem:
        return problem
    expected = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "vocab_size": 4096}
    wrong = {k: config.get(k) for k, v in expected.items() if config.get(k) != v}
    return f"config.json differs from DNABERT-S: {wrong}" if wrong else None


def _check_tokenizer(path, digest):
    tokenizer, problem = _json(path)
    if problem:
        return problem
    kind = (tokenizer.get("model") or {}).get("type")
    return None if kind == "BPE" else f"tokenizer.json holds a {kind!r} model, not BPE"


def _check_weights(path, digest):
    return None if digest == DNABERT_S_WEIGHTS_SHA256 else f"sha256 {digest}, expected {DNABERT_S_WEIGHTS_SHA256}"


_VERIFIED = {
    "config.json": "content checked", "tokenizer.json": "content checked",
    "pytorch_model.bin": "published sha256",
}
_DNABERT_CHECKS = {  # file -> check(path, its sha256): the problem, or None
    "config.json": _check_config,
    "tokenizer.json": _check_tokenizer,
    "pytorch_model.bin": _check_weights,
}


# ------------------------------------------------------------------------------ placed by hand


def at_download_name(kind, path, models_dir):
    """True when `path` is where the models step downloads `kind` into `models_dir` (symbolic links are
    not followed: a link of that name in models.dir is a file placed there)."""
    if models_dir is None:
        return False
    path = Path(os.path.abspath(path))
    pattern, _ = DOWNLOAD_NAMES[kind]
    return path.parent == Path(os.path.abspath(models_dir)) and pattern.fullmatch(path.name) is not None


def classifier_blob_problem(path):
    """How the classifier file `path` (named 300_model.pth or 500_model.pth) differs from the published
    one (its git blob id), or None."""
    path = Path(path)
    expected = CLASSIFIER_BLOB_IDS[path.name]
    blob = git_blob_id(path.read_bytes())  # a few MB
    return None if blob == expected else f"git blob id {blob}, published {expected}"


def _placed_checks(kind, path):
    """[(file, check(file, its sha256) -> problem or None, how it is verified)] for a model placed at its
    download name `path`: what its download is verified by."""
    path = Path(path)
    if kind == "classifier":
        how = f"git blob id {CLASSIFIER_BLOB_IDS[path.name]} of the original repository"
        return [(path, lambda f, digest: classifier_blob_problem(f), how)]
    if kind == "esm2":
        return [(path, lambda f, digest: _torch_zip_problem(f), "complete PyTorch zip archive, CRC-32 of every member")]
    if kind == "dnabert_s":
        from virnucpro.models.encoders import DNABERT_WEIGHT_FILES  # torch-free

        other = [n for n in DNABERT_WEIGHT_FILES if n not in DNABERT_S_FILES and (path / n).exists()]
        if other:  # read in preference to pytorch_model.bin, and never published
            raise _placed_error(kind, path / other[0], "the published DNABERT-S has no such file")
        return [(path / name, _DNABERT_CHECKS[name], f"{DNABERT_S_REPO} at {DNABERT_S_REVISION}, {_VERIFIED[name]}")
                for name in DNABERT_S_FILES]
    raise VirNucProError(f"unknown model kind '{kind}' (expected esm2, dnabert_s or classifier)")


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
    for file, check, how in _placed_checks(kind, path):
        if not file.is_file():
            raise _placed_error(kind, file, "it does not exist")
        digest = checked_sha256(file)  # refuses a verified file whose content changed since
        if is_verified(file):
            continue
        problem = check(file, digest)
        if problem:
            raise _placed_error(kind, file, problem)
        try:
            write_record(file, digest, verified=f"{how}; placed by hand")
        except OSError as exc:
            log.warning("cannot record the verification of %s (%s); it is verified again next time", file, exc)
        log.info("%s verified (%s)", file, how)
