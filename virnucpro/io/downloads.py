"""Fetching a file over HTTP(S) and checking what arrived, for the models step's downloads.

`fetch(url, dest)` streams a URL into a file (progress lines for large files); a network failure raises
`Unreachable`, which the models step turns into one line naming every URL to fetch by hand
(`offline_error`). `failed_check` is the one-line error of a download that arrived but failed its
verification. The checks: `git_blob_id` (as `git hash-object`), `torch_zip_problem` (a complete PyTorch
zip archive, every member's CRC-32) and `json_of`.
"""

import hashlib
import http.client
import json
import logging
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from virnucpro.errors import VirNucProError

log = logging.getLogger("virnucpro")

TIMEOUT_S = 60
CHUNK = 1 << 20
REPORT_ABOVE = 50_000_000  # bytes: progress lines for downloads larger than this


class Unreachable(Exception):
    """A download that failed for network reasons (turned into the one-line offline message)."""


def fetch(url, dest):
    """Stream `url` into the file `dest`; returns the byte count. Network failures raise Unreachable."""
    started, done, next_report = time.monotonic(), 0, 0.1
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if total > REPORT_ABOVE and done / total >= next_report:
                    rate = done / max(time.monotonic() - started, 1e-9) / 1e6
                    log.info("%s: %.0f%% of %.1f MB (%.1f MB/s)", url, 100 * done / total, total / 1e6, rate)
                    next_report += 0.1
    except urllib.error.HTTPError as exc:
        raise Unreachable(f"{url}: {exc}") from None
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        raise Unreachable(f"{url}: {getattr(exc, 'reason', None) or exc}") from None
    if total and done != total:
        raise Unreachable(f"{url}: transfer ended after {done} of {total} bytes")
    return done


def offline_error(exc, pairs):
    """The one-line error of a download that could not reach `pairs` ([(URL, destination)])."""
    todo = "; ".join(f"{url} to {dest}" for url, dest in pairs)
    return VirNucProError(
        f"cannot download ({exc}). Without internet here, fetch {todo} on another machine, "
        "or point the models settings in config.yaml at copies already on disk"
    )


def failed_check(url, dest, problem):
    return VirNucProError(f"{url}: downloaded file failed verification ({problem}); nothing was written to {dest}")


def git_blob_id(data):
    """The git object id of a file with content `data` (bytes), as `git hash-object` prints it."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def torch_zip_problem(path):
    """Why `path` is not a complete PyTorch zip checkpoint, or None."""
    try:
        with zipfile.ZipFile(path) as z:
            if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist()):
                return "no data.pkl: not a PyTorch checkpoint"
            broken = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"not a complete zip archive: {exc}"
    return f"member {broken} fails its CRC-32 check" if broken else None


def json_of(path):
    """(the JSON content of `path`, None) or (None, the problem)."""
    try:
        return json.loads(Path(path).read_text()), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"not JSON ({exc})"
