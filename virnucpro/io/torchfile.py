"""Reading `torch.save` files without running pickled code.

`load_torch_file` checks the first bytes (a zip archive or a legacy pickle), then loads with
`torch.load(weights_only=True)` under an allow-list of globals. A pickle that asks for any other global
is refused with a one-line error naming the global; any other failure is a one-line error naming the
file and what it should have been.
"""

import pickle
import re
import zipfile

import torch

from virnucpro.errors import VirNucProError, first_line

MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive; a legacy pickle (protocol 2+)
_ERRORS = (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError)


def load_torch_file(path, allowed, what):
    """The object `torch.save` wrote to `path`, loaded on the CPU with only the globals `allowed` (as
    `torch.serialization.safe_globals` takes them); `what` names the expected content in errors."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(MAGIC):
        raise VirNucProError(f"{path}: not a {what} (not a torch.save file: it starts with {head!r})")
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=head.startswith(b"PK"))
    except pickle.UnpicklingError as exc:
        refused = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if refused:
            raise VirNucProError(
                f"{path}: refused to load: the pickle asks for {refused.group(1)}, which is outside the "
                f"allow-list (not a {what}, or a tampered one)"
            ) from None
        raise VirNucProError(f"{path}: not a {what} ({_reason(exc)})") from None
    except _ERRORS as exc:
        raise VirNucProError(f"{path}: not a {what} ({_reason(exc)})") from None


def _reason(exc):
    return first_line(exc).split(". ")[0]  # torch's first sentence; the rest is advice for other cases
