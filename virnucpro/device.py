"""Where embeddings run: the `embed.device` setting (auto, cuda, cpu) resolved, one GPU per job.

`planned_device(setting)` is the device type a plan is made for, decided where snakemake runs (auto:
cuda when a GPU is visible, without starting CUDA); `check_device` refuses, at the start of a run, an
auto that would plan for the CPU while the jobs run on a cluster's GPU nodes; `float8_problem` says why
float8 cannot run here; `resolve_device(setting)` is the torch device of a job, its GPU claimed first.

Snakemake runs local jobs side by side (`--resources gpu=N`) but does not tell them which device to
use. `claim_gpu()` gives the calling process one device of its own, before CUDA is initialised:
- If CUDA_VISIBLE_DEVICES names exactly one device, a scheduler (SLURM) or the user chose it: use it.
- Otherwise pick among the visible devices (those CUDA_VISIBLE_DEVICES lists, or all of them: one
  GPU too, so that jobs started side by side on a one-GPU machine take turns) the first whose lock
  file is free, hold an exclusive `flock` on it for the life of the process, and set
  CUDA_VISIBLE_DEVICES to that device alone. The kernel drops the lock when the process ends, killed
  or not, so no stale lock survives a crash. If every device is taken, wait and try again.
"""

import fcntl
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

from virnucpro.errors import VirNucProError

log = logging.getLogger("virnucpro")
LOCK_DIR = Path(tempfile.gettempdir()) / "virnucpro-gpu-locks"
_held = []  # open lock files of this process: closing them would release the devices


def visible_devices():
    """Device names as CUDA_VISIBLE_DEVICES would list them (indices or UUIDs)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


FLOAT8_CAPABILITY = (8, 9)  # e4m3 matrix units: Ada Lovelace, Hopper and newer


def compute_capabilities():
    """(major, minor) of every GPU nvidia-smi lists here, without starting CUDA ([] without nvidia-smi)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    caps = []
    for line in out.split():
        major, _, minor = line.strip().partition(".")
        if major.isdigit() and minor.isdigit():
            caps.append((int(major), int(minor)))
    return caps


def float8_problem(device, local=True):
    """Why `embed.precision: float8` cannot run with `embed.device` `device`, as far as this machine tells
    (one line), or None. `local`: the jobs run here (not on a cluster's nodes, whose GPUs the float8
    check's job tests itself)."""
    need = ".".join(map(str, FLOAT8_CAPABILITY))
    if device == "cpu":
        return "embed.precision float8 runs on CUDA GPUs only, but embed.device is cpu"
    if device == "auto" and local and not visible_devices():
        return ("embed.precision float8 runs on CUDA GPUs only, and no GPU is visible here (embed.device auto "
                "would embed on the CPU)")
    caps = compute_capabilities() if local else []
    if caps and max(caps) < FLOAT8_CAPABILITY:
        return (f"embed.precision float8 needs a GPU of compute capability {need} or newer (e4m3 matrix units); "
                f"the GPUs here have {max(caps)[0]}.{max(caps)[1]}: use float16")
    return None


SETTINGS = ("auto", "cuda", "cpu")  # embed.device


def _checked(device):
    if device not in (None, *SETTINGS):
        raise VirNucProError(f"unknown device '{device}' (choose {', '.join(SETTINGS)})")
    return device or "auto"


def planned_device(device):
    """The device type ("cuda" or "cpu") that an embedding plan is made for: `device` when it names one;
    for "auto", cuda when a GPU is visible here (by CUDA_VISIBLE_DEVICES or nvidia-smi, without starting
    CUDA), else cpu."""
    if _checked(device) != "auto":
        return device
    return "cuda" if visible_devices() else "cpu"


def check_device(device, local_exec):
    """`embed.device: auto` is decided where snakemake runs (by the embedding plan, a local rule). With
    jobs run on other machines (`local_exec` False: the SLURM executor) and no GPU here, the plan would
    be made for the CPU and every GPU job would refuse it."""
    if device == "auto" and not local_exec and planned_device(device) == "cpu":
        raise VirNucProError(
            "config: embed.device: auto is decided on this machine, which has no GPU, while the jobs run on "
            "other machines: set embed.device: cuda (or cpu to embed on their CPUs)"
        )


def resolve_device(device):
    """The torch device of a job for `device` (a setting). For auto and cuda the process first claims one
    GPU of its own (`claim_gpu`), before CUDA is initialised, so that jobs side by side use different GPUs."""
    import torch  # only the jobs that embed need it

    if _checked(device) == "cpu":
        return torch.device("cpu")
    claim_gpu()
    if torch.cuda.is_available():
        return torch.device("cuda")
    if device == "cuda":
        raise VirNucProError("device cuda was asked for (embed.device, or a GPU seen where the embedding plan "
                             "was made) but this job sees no CUDA GPU")
    return torch.device("cpu")


def claim_gpu(poll_seconds=5.0, lock_dir=LOCK_DIR):
    """Reserve one visible GPU for this process; returns its name, or None when there is no GPU."""
    devices = visible_devices()
    if not devices:
        return None
    if len(devices) == 1 and "CUDA_VISIBLE_DEVICES" in os.environ:
        return devices[0]
    lock_dir.mkdir(parents=True, exist_ok=True)
    _open_permissions(lock_dir, 0o1777)
    waited = False
    while True:
        for device in devices:
            handle = _try_lock(lock_dir / f"gpu-{device}.lock")
            if handle is not None:
                _held.append(handle)
                os.environ["CUDA_VISIBLE_DEVICES"] = device
                log.info("using GPU %s (of %s)", device, ",".join(devices))
                return device
        if not waited:
            log.info("all GPUs (%s) are in use by other jobs; waiting", ",".join(devices))
            waited = True
        time.sleep(poll_seconds)


def _try_lock(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    _open_permissions(path, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return os.fdopen(fd, "r+")


def _open_permissions(path, mode):
    """Let other users' jobs share the lock files (best effort: the owner may differ)."""
    try:
        os.chmod(path, mode)
    except PermissionError:
        pass
