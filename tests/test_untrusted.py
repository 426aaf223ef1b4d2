"""Untrusted files: nothing unpickles an untrusted file or runs model-repository code, model files are
checked against their recorded checksums before they are loaded, a sequence file is refused as soon as a
record passes the length limit, and sample names and paths never reach a shell."""

import ast
import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.workflow_runs import REPO, make_workdir, snakemake
from virnucpro.cli import main as cli_main
from virnucpro.errors import InputError, VirNucProError
from virnucpro.io import checksums, seqio
from virnucpro.io.checksums import SUFFIX, checked_sha256, record_path, write_record
from virnucpro.steps.models import ensure_converted, make_note
from virnucpro.models.esm2 import load_converted
from virnucpro.models import dnabert

CODE = sorted([*(REPO / "virnucpro").rglob("*.py"), *(REPO / "scripts").glob("*.py")])
RULES = sorted([REPO / "workflow" / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")])
FORBIDDEN = {
    "weights_only=False": r"weights_only\s*=\s*False",
    "pickle.load": r"\bpickle\.(loads?|Unpickler)\b|\bfrom\s+pickle\s+import\b|\bcPickle\b|\bdill\b|\bjoblib\.load\b",
    "trust_remote_code": r"trust_remote_code",
    "eval(": r"(?<![.\w])eval\s*\(",  # the builtin; `model.eval()` is torch's eval mode
    "exec(": r"(?<![.\w])exec\s*\(",
    "shell=True": r"shell\s*=\s*True",
    "os.system": r"\bos\.(system|popen|exec\w*|spawn\w*)\b",
}


def code_lines(path):
    """(line number, line) of `path` without comments and docstrings (prose may name what we avoid)."""
    text = path.read_text()
    docs = set()
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            docs.update(range(body[0].lineno, body[0].end_lineno + 1))
    return [(i, line.split("#")[0]) for i, line in enumerate(text.splitlines(), 1) if i not in docs]


CAUGHT = {  # what each pattern must catch, written the ways code writes it
    "weights_only=False": ["torch.load(p, weights_only = False)"],
    "pickle.load": ["pickle.load(fh)", "pickle.loads(b)", "pickle.Unpickler(fh).load()",
                    "from pickle import Unpickler", "joblib.load(p)"],
    "trust_remote_code": ["AutoModel.from_pretrained(d, trust_remote_code=True)"],
    "eval(": ["eval(text)", "x = eval (text)"],
    "exec(": ["exec(code)"],
    "shell=True": ["subprocess.run(cmd, shell=True)"],
    "os.system": ["os.system(cmd)", "os.popen(cmd)", "os.execvp(a, b)"],
}


@pytest.mark.parametrize("what", FORBIDDEN)
def test_the_scan_catches_what_it_names_and_not_its_safe_look_alikes(what):
    assert all(re.search(FORBIDDEN[what], line) for line in CAUGHT[what]), CAUGHT[what]
    safe = ["model.eval()", "except pickle.UnpicklingError:", "torch.load(p, weights_only=True)", "os.path.join(a)"]
    assert not any(re.search(FORBIDDEN[what], line) for line in safe)


@pytest.mark.parametrize("what", FORBIDDEN)
def test_no_unsafe_loading_or_shell_in_the_package(what):
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()}" for p in CODE for i, line in code_lines(p)
            if re.search(FORBIDDEN[what], line)]
    hits += [f"{p.relative_to(REPO)}:{i}: {line.strip()}" for p in RULES
             for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(FORBIDDEN[what], line)]
    assert hits == [], hits


def test_every_torch_load_passes_weights_only_true():
    calls = []
    for path in CODE:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                calls.append((f"{path.relative_to(REPO)}:{node.lineno}", ok))
    assert calls, "no torch.load found: the test looks in the wrong place"
    assert [c for c, ok in calls if not ok] == []


def test_no_fair_esm_or_hugging_face_loader_that_unpickles_or_runs_repository_code():
    """fair-esm's own loaders call torch.load without weights_only; transformers' Auto* classes would
    run the DNABERT-S repository's code. Neither may be called."""
    banned = r"load_model_and_alphabet(_local|_hub)?\(|esm\.pretrained\.esm2_\w+\(|from_pretrained\(|AutoModel"
    hits = [f"{p.name}:{i}" for p in CODE for i, line in code_lines(p) if re.search(banned, line)]
    assert hits == [], hits


def test_rules_never_use_a_shell():
    """Every rule that runs something does it through `script:` (arguments travel as Python objects);
    no `shell:`, `run:` with subprocess, or `notebook:` where a wildcard could be spliced into a command."""
    for path in RULES:
        text = path.read_text()
        assert not re.search(r"^\s+(shell|run|notebook|wrapper|cwl):", text, re.M), path.name
    scripts = sum(len(re.findall(r"^\s+script:", p.read_text(), re.M)) for p in RULES)
    assert scripts >= 10


# ------------------------------------------------------------------------------- model checksums


def _tamper(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _downloaded(src, folder):
    """A copy of `src` in `folder` with the verified record a download writes."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / Path(src).name
    shutil.copy(src, dest)
    write_record(dest, verified="as the download rule verifies")
    return dest


def test_tampered_esm2_file_is_refused_before_loading(tmp_path, tiny_models, capsys):
    model = _downloaded(tiny_models["models.esm2"], tmp_path / "models")
    out, _ = ensure_converted("esm2", model, tmp_path / "models")  # the recorded file converts
    _tamper(model)
    with pytest.raises(VirNucProError, match=r"sha256 \w+ differs from the checksum recorded when it was verified"):
        ensure_converted("esm2", model, tmp_path / "other")
    rc = cli_main(["note-model", "esm2", str(model), "--models-dir", str(tmp_path / "other"),
                   "--out", str(tmp_path / "note.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and "differs from the checksum recorded" in err[-1] and str(model) in err[-1]
    assert not (tmp_path / "other").exists()  # refused before anything was converted
    assert not (tmp_path / "note.json").exists()
    _tamper(out)  # the converted file has a verified record of its own
    with pytest.raises(VirNucProError, match="differs from the checksum recorded when it was verified"):
        load_converted(out, "0" * 64, "cpu")


@pytest.mark.parametrize("which", ["weights", "tokenizer.json"])
def test_tampered_dnabert_file_is_refused_before_loading(tmp_path, tiny_models, which):
    model = tmp_path / "DNABERT-S"
    shutil.copytree(tiny_models["models.dnabert_s"], model)
    files = [p for p in model.iterdir() if p.is_file() and not p.name.endswith(SUFFIX)]
    for p in files:
        write_record(p, verified="as the download rule verifies")
    weights = next(p for p in files if p.name in ("pytorch_model.bin", "model.safetensors"))
    _tamper(weights if which == "weights" else model / which)
    with pytest.raises(VirNucProError, match="differs from the checksum recorded"):
        make_note("dnabert_s", model)
    with pytest.raises(VirNucProError, match="differs from the checksum recorded"):
        dnabert.load_dnabert(model)


def test_unreadable_record_is_one_clear_error(tmp_path, tiny_models):
    model = _downloaded(tiny_models["models.esm2"], tmp_path)
    record_path(model).write_text("not a checksum\n")
    with pytest.raises(VirNucProError, match="not a checksum record; delete it"):
        checked_sha256(model)


def test_a_file_is_hashed_once_and_a_changed_unverified_file_is_hashed_again(tmp_path, monkeypatch):
    f = tmp_path / "model.pt"
    f.write_bytes(b"weights" * 1000)
    want = hashlib.sha256(f.read_bytes()).hexdigest()
    assert checked_sha256(f) == want
    record = json.loads(record_path(f).read_text())
    assert record == {"sha256": want, "size": 7000, "mtime_ns": f.stat().st_mtime_ns, "verified": None}
    hashed = []
    monkeypatch.setattr("virnucpro.io.checksums.sha256_of", lambda p: hashed.append(p) or want)
    assert checked_sha256(f) == want and hashed == []  # size and mtime match: not read again
    monkeypatch.undo()
    f.write_bytes(b"other weights")  # the user replaced an unverified file: its new content counts
    assert checked_sha256(f) == hashlib.sha256(b"other weights").hexdigest()


def test_records_of_read_only_files_go_to_the_cache(tmp_path, monkeypatch):
    folder = tmp_path / "shared"
    folder.mkdir()
    f = folder / "model.pt"
    f.write_bytes(b"w" * 100)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("os.access", lambda path, mode: Path(path) != folder)  # as if not writable
    assert checked_sha256(f) == hashlib.sha256(b"w" * 100).hexdigest()
    assert not (folder / f"model.pt{SUFFIX}").exists()
    assert len(list((tmp_path / "cache" / "virnucpro" / "checksums").glob("*.json"))) == 1


def test_a_file_no_record_can_be_kept_for_is_hashed_once_per_process(tmp_path, monkeypatch):
    folder = tmp_path / "shared"
    folder.mkdir()
    f = folder / "model.pt"
    f.write_bytes(b"w" * 100)
    (tmp_path / "cache").write_text("a file, not a folder: no record can be written there either\n")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("os.access", lambda path, mode: Path(path) != folder)  # as if not writable
    hashed, sha256_of = [], checksums.sha256_of
    monkeypatch.setattr("virnucpro.io.checksums.sha256_of", lambda p: hashed.append(p) or sha256_of(p))
    want = hashlib.sha256(b"w" * 100).hexdigest()
    assert checked_sha256(f) == want and checked_sha256(f) == want and len(hashed) == 1
    assert not record_path(f).exists()
    older = folder / "older.pt"  # replaced by a file of the same size and mtime (rsync -a): hashed again
    older.write_bytes(b"v" * 100)
    os.utime(older, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns))
    os.replace(older, f)
    assert checked_sha256(f) == hashlib.sha256(b"v" * 100).hexdigest() and len(hashed) == 2


# --------------------------------------------------------------------------- sequence files


class _Counting(io.BufferedReader):
    """A file reader that counts the bytes it hands out."""

    taken = 0

    def read(self, size=-1):
        return self._count(super().read(size))

    def readline(self, size=-1):
        return self._count(super().readline(size))

    def _count(self, data):
        self.taken += len(data)
        return data


@pytest.mark.parametrize("length", [1001, 1100, 3 << 20])  # past the limit by 1, by less than a piece, by pieces
def test_a_fastq_sequence_is_refused_as_soon_as_it_passes_the_limit(tmp_path, monkeypatch, length):
    """Refused having read at most the limit and a line end past it, even when the line ends soon after."""
    path = tmp_path / "reads.fq"
    path.write_bytes(b"@r1\n" + b"A" * length + b"\n+\n" + b"I" * length + b"\n")
    readers = []
    monkeypatch.setattr(seqio, "open_binary", lambda p: readers.append(_Counting(io.FileIO(p))) or readers[-1])
    with pytest.raises(InputError, match="record 'r1'.* longer than 1,000 bp"):
        list(seqio.read_sequences(path, max_bp=1000))
    assert readers[0].taken <= len(b"@r1\n") + 1000 + 3


def test_a_fastq_record_at_the_limit_passes(tmp_path):
    path = tmp_path / "reads.fq"
    path.write_bytes(b"@r1\r\n" + b"A" * 1000 + b"\r\n+r1\r\n" + b"I" * 1000 + b"\r\n")
    assert list(seqio.read_sequences(path, max_bp=1000)) == [("r1", b"A" * 1000)]


# -------------------------------------------------------------------- names and paths, no shell


def test_tricky_sample_name_and_path_run_without_executing_anything(tmp_path, tiny_models):
    """A sample name with every allowed punctuation character, and a FASTA in a folder whose name holds
    spaces, `$(...)`, backticks, `;`, quotes and `&`: prepare runs and nothing in the name is executed."""
    folder = tmp_path / "in dir $(touch PWNED) `touch PWNED2`; touch PWNED3 & 'q' \"d\""
    folder.mkdir()
    fasta = folder / "my reads; $(id).fa"
    shutil.copy(REPO / "example" / "sample_a.fa", fasta)
    sample = "S-1.v2_x"
    models = {**tiny_models, "models.dir": str(tmp_path / "models"), "embed.device": "cpu"}
    work = make_workdir(tmp_path / "work", sheet={sample: fasta}, **models)
    snakemake(work, "--cores", "1", "results/embedding/samples/plan")
    out = work / "results" / sample
    assert (out / "prepare" / "frames.faa").stat().st_size > 0
    assert (work / "results" / "embedding" / "samples" / "members" / f"{sample}.json").is_file()
    assert str(fasta) in (out / "logs" / "prepare.log").read_text()
    for where in (tmp_path, work, folder, REPO, Path.cwd()):
        assert not list(where.glob("PWNED*")), where
    assert json.loads((work / "results" / "embedding" / "samples" / "members" / f"{sample}.json")
                      .read_text())["member"] == sample  # the name reached the steps as it is
    assert os.path.exists(fasta)
