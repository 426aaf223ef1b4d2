"""Whole checks of an embedding store and of a models folder: the `virnucpro verify-store` command.

`check_store(root, findings, quarantine)` checks every namespace folder of a store: its namespace.json
parses and names the folder it is in, and every store file passes `store.verify_store_file` (every
chunk of its keys and embeddings read against its Fletcher-32 checksum, both sha256s compared, written
for that namespace). Folders of an older store format (files without checksums, which this version
never reads) are counted, not checked; files already set aside (`quarantine/`) and temporaries are left
alone. With `quarantine`, a store file that fails is set aside (`store.set_aside`), as a plan would.

`check_models(models_dir, findings)` hashes in full every file under a models folder that has a
checksum record (`checksums`) and compares size and sha256 with the record; every converted file must
have one. The steps themselves compare only size and modification time with the record, so a file
whose content changed under the same size and time is found here only.

Both add to a `Findings`: how many files were checked, and each bad file as (path, problem).
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from virnucpro.errors import VirNucProError
from virnucpro.io.checksums import SUFFIX, read_record, record_path, sha256_of
from virnucpro.io.store import FORMAT, QUARANTINE, Namespace, StoreFileError, set_aside, verify_store_file

log = logging.getLogger("virnucpro")


@dataclass
class Findings:
    checked: int = 0
    bad: list = field(default_factory=list)  # (path, problem)
    older: list = field(default_factory=list)  # namespace folders of an older store format
    namespaces: int = 0


def check_store(root, findings, quarantine=False):
    """Check every namespace folder of the store `root` into `findings`; see the module docstring."""
    root = Path(root)
    if not root.is_dir():
        raise VirNucProError(f"{root}: no embedding store there (not a folder)")
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        namespace, problem = _namespace_of(folder)
        if problem:
            findings.bad.append((folder / "namespace.json", problem))
        elif dict(namespace.fields).get("format") != FORMAT:
            findings.older.append(folder)
            continue
        findings.namespaces += 1
        files = sorted(p for p in folder.glob("*.h5") if not p.name.startswith(".tmp-"))
        log.info("checking %d store file(s) of %s", len(files), folder)
        for path in files:
            findings.checked += 1
            try:
                verify_store_file(path, namespace)
            except StoreFileError as exc:
                findings.bad.append((path, f"{exc.problem}; {set_aside(path)}" if quarantine else exc.problem))
            except VirNucProError as exc:  # not readable by this user: a setup problem, left in place
                findings.bad.append((path, str(exc).removeprefix(f"{path}: ")))


def _namespace_of(folder):
    """(Namespace or None, problem or None) of a namespace folder, from its namespace.json."""
    described = folder / "namespace.json"
    try:
        data = json.loads(described.read_text())
        namespace = Namespace.from_json(data)
    except FileNotFoundError:
        return None, "missing: not a namespace folder of an embedding store"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"not a readable namespace description ({type(exc).__name__}: {exc})"
    if namespace.name != folder.name or data.get("id") != namespace.id:
        return None, f"describes namespace {namespace.name} (id {data.get('id')}), not the folder {folder.name}"
    return namespace, None


def check_models(models_dir, findings):
    """Hash every recorded file under `models_dir` in full into `findings`; see the module docstring."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise VirNucProError(f"{models_dir}: no models folder there (not a folder)")
    for path in sorted(models_dir.rglob("*")):
        parts = path.relative_to(models_dir).parts
        if not path.is_file() or path.name.endswith(SUFFIX) or any(p.startswith(".") or p == QUARANTINE for p in parts):
            continue
        try:
            record = read_record(path)
        except VirNucProError as exc:
            findings.bad.append((record_path(path), str(exc).removeprefix(f"{record_path(path)}: ")))
            continue
        if record is None:
            if parts[0] == "converted":
                findings.bad.append((path, f"converted model without its checksum record ({record_path(path).name})"))
            continue
        findings.checked += 1
        log.info("hashing %s", path)
        if problem := _against_record(path, record):
            findings.bad.append((path, problem))


def _against_record(path, record):
    """What is wrong with `path` against its checksum record (None when nothing)."""
    st = path.stat()
    if st.st_size != record["size"]:
        return f"{st.st_size} bytes, its checksum record says {record['size']}"
    digest = sha256_of(path)
    if digest == record["sha256"]:
        return None
    if st.st_mtime_ns == record["mtime_ns"]:
        return (f"content changed under the same size and modification time (sha256 {digest}, recorded "
                f"{record['sha256']}): the steps, which compare only those, would use it")
    return f"sha256 {digest} differs from its checksum record ({record['sha256']})"


def verify(store, models_dir=None, quarantine=False):
    """Findings of the whole store `store` and, given, the models folder `models_dir`."""
    findings = Findings()
    check_store(store, findings, quarantine)
    if models_dir is not None:
        check_models(models_dir, findings)
    return findings
