"""What made a run's results, as one JSON object (`provenance`), written by the overview step as
`provenance.json` beside the run's other files:
- `workflow`: `version` (`virnucpro.__version__` of the code that ran), `commit` (`git rev-parse HEAD` of
  the source tree the package was imported from, None when that tree is not the top of a git work
  tree or git is absent) and `dirty` (tracked files changed since that commit; None without a commit);
- `software`: the versions of python, snakemake, torch, numpy, h5py (read from the installed packages'
  metadata, without importing them; None where one is not installed where the overview ran);
- `embedding`: `devices`, the distinct devices the embedding shards of the finished samples were
  computed on (the GPU model each store file records, else the receipt's device; empty when every frame
  was already in the store from an earlier run: then the store files' own attributes say it),
  `shards` (receipts read), `precision` (the `embed.precision` setting), `store_precisions` (per
  encoder, the distinct precisions those store files record: what the matrix products ran in, e.g.
  float32 on the CPU whatever the setting) and `float8_check` (the float8 guard's decision, precision and
  reason, where the run made one);
- `models`: the rows of `models.tsv` (model, file, sha256, verified);
- `settings`: the settings of `parameters.tsv`.

`pointer_text` is the text of the `provenance.txt` each sample's folder gets: it names the run file
(written by the overview, so adding a sample reruns no other sample's steps to refresh it).
"""

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import virnucpro
from virnucpro.errors import VirNucProError

SOFTWARE = ("snakemake", "torch", "numpy", "h5py")


def _git(tree, *args):
    try:
        proc = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def workflow_source(tree=None):
    """{version, commit, dirty} of the source tree (default: the one `virnucpro` was imported from)."""
    tree = Path(tree or Path(virnucpro.__file__).resolve().parents[1])
    top = _git(tree, "rev-parse", "--show-toplevel")
    commit = _git(tree, "rev-parse", "HEAD") if top and Path(top).resolve() == tree.resolve() else None
    changed = _git(tree, "status", "--porcelain", "--untracked-files=no") if commit else None
    return {"version": virnucpro.__version__, "commit": commit, "dirty": None if changed is None else bool(changed)}


def _installed(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _store_attribute(path, name):
    """An attribute of a store file (`device`, `precision`) as text, None when it cannot be read."""
    try:
        import h5py

        with h5py.File(path, "r") as f:
            value = f.attrs.get(name)
    except (OSError, ImportError):
        return None
    return None if value is None else str(value.decode() if isinstance(value, bytes) else value)


def _store_device(path):
    return _store_attribute(path, "device")


def store_precisions(receipts):
    """{encoder: sorted distinct precisions} that the store files of the receipts record."""
    found = {}
    for receipt in receipts:
        files = json.loads(Path(receipt).read_text()).get("store_files", {})  # readable: embedding_devices
        for encoder, path in files.items():
            if (value := _store_attribute(path, "precision")) is not None:
                found.setdefault(encoder, set()).add(value)
    return {encoder: sorted(values) for encoder, values in sorted(found.items())}


def embedding_devices(receipts):
    """The sorted distinct devices of the embedding receipts (see the module docstring)."""
    devices = set()
    for receipt in receipts:
        try:
            note = json.loads(Path(receipt).read_text())
            files, device = note.get("store_files", {}), note["device"]
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
            raise VirNucProError(f"{receipt}: not a readable embedding receipt ({exc})") from None
        found = [d for d in map(_store_device, files.values()) if d]
        devices.update(found or [str(device)])
    return sorted(devices)


def provenance(models, settings, receipts=(), float8_check=None, tree=None):
    """The object of the module docstring: `models` the rows of models.tsv, `settings` setting -> value,
    `receipts` the embedding receipts, `float8_check` the guard's decision file or None."""
    check = None
    if float8_check:
        try:
            decision = json.loads(Path(float8_check).read_text())
            check = {"precision": decision["precision"], "reason": decision["reason"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise VirNucProError(f"{float8_check}: not a readable float8 check decision ({exc})") from None
    return {
        "workflow": workflow_source(tree),
        "software": {"python": platform.python_version(), **{n: _installed(n) for n in SOFTWARE}},
        "embedding": {"devices": embedding_devices(receipts), "shards": len(receipts),
                      "precision": settings.get("embed.precision"), "store_precisions": store_precisions(receipts),
                      "float8_check": check},
        "models": [dict(zip(("model", "file", "sha256", "verified"), row)) for row in models],
        "settings": dict(settings),
    }


def pointer_text(record):
    """The text of a sample folder's `provenance.txt`, for the run's provenance `record`."""
    w = record["workflow"]
    commit = w["commit"] or "none (not run from a git work tree)"
    dirty = " (with uncommitted changes)" if w["dirty"] else ""
    return (f"These results were made by the VirNucPro workflow {w['version']}, commit {commit}{dirty}.\n"
            "The software, devices, precision, model checksums and settings of the run: ../provenance.json\n")
