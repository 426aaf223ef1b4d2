"""Local multi-GPU: concurrent jobs each get their own device; a single assigned device is kept."""

import fcntl
import os
import subprocess
import sys
import threading

import pytest

from virnucpro import device as gpus
from virnucpro.device import claim_gpu

# claims a device, says so on stdout, and holds it until its stdin is closed; logs on stdout too, so
# the order of its lines is the order of events
CLAIM = """
import logging, os, sys
from pathlib import Path
from virnucpro.device import claim_gpu
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
device = claim_gpu(poll_seconds=0.05, lock_dir=Path(sys.argv[1]))
print("claimed", device, os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
sys.stdin.read()
"""


def start(lock_dir, devices):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": devices}
    return subprocess.Popen([sys.executable, "-c", CLAIM, str(lock_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)


def next_line(job, prefix):
    """The job's next line that starts with `prefix` (log lines of other kinds are skipped)."""
    for line in job.stdout:
        if line.startswith(prefix):
            return line.split()
    raise AssertionError(f"the job ended (exit status {job.wait()}) before a line starting {prefix!r}")


def release(job):
    job.stdin.close()
    assert job.wait(timeout=60) == 0


def test_concurrent_jobs_get_distinct_devices_and_wait_for_a_free_one(tmp_path):
    jobs = [start(tmp_path, "0,1,2") for _ in range(3)]
    claims = [next_line(j, "claimed") for j in jobs]  # all three hold a device from here on
    assert sorted(c[1] for c in claims) == ["0", "1", "2"]
    assert all(c[1] == c[2] for c in claims)  # CUDA_VISIBLE_DEVICES narrowed to the claimed one
    late = start(tmp_path, "0,1,2")
    watchdog = threading.Timer(120, lambda: [j.kill() for j in (*jobs, late)])  # a hang fails, late
    watchdog.start()
    try:
        # its first line says it waits: it claims nothing while the three hold their devices
        assert next_line(late, "")[:2] == ["all", "GPUs"]
        release(jobs[1])
        assert next_line(late, "claimed")[1:] == [claims[1][1]] * 2  # the device just freed
    finally:
        watchdog.cancel()
        for job in (*jobs, late):
            if job.poll() is None:
                job.stdin.close()
                job.wait(timeout=60)


@pytest.fixture
def claims_in_this_process(tmp_path, monkeypatch):
    """For a test that claims a device in the pytest process itself: afterwards its locks are released
    (the lock file can be taken again) and CUDA_VISIBLE_DEVICES is as it was."""
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    held = []
    monkeypatch.setattr(gpus, "_held", held)
    yield tmp_path
    for handle in held:
        handle.close()
    if before is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = before
    for lock in tmp_path.glob("gpu-*.lock"):
        with open(lock) as fh:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while a claim still holds it


def test_a_device_chosen_by_the_scheduler_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert claim_gpu(lock_dir=tmp_path) == "3"
    assert list(tmp_path.iterdir()) == []  # no lock needed
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert claim_gpu(lock_dir=tmp_path) is None


def test_jobs_on_a_one_gpu_machine_take_turns(claims_in_this_process, monkeypatch):
    """With CUDA_VISIBLE_DEVICES unset and one GPU, the device is still locked for the job's life."""
    tmp_path = claims_in_this_process
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr("virnucpro.device.visible_devices", lambda: ["0"])
    assert claim_gpu(lock_dir=tmp_path) == "0"
    assert [p.name for p in tmp_path.iterdir()] == ["gpu-0.lock"]
    probe = subprocess.run(
        [sys.executable, "-c", "import fcntl,sys; f=open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)",
         str(tmp_path / "gpu-0.lock")], capture_output=True, text=True,
    )
    assert probe.returncode != 0 and "BlockingIOError" in probe.stderr
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"  # until the fixture restores it


def test_float8_is_refused_where_it_cannot_run(monkeypatch):
    monkeypatch.setattr(gpus, "visible_devices", lambda: [])
    monkeypatch.setattr(gpus, "compute_capabilities", lambda: [])
    assert "embed.device is cpu" in gpus.float8_problem("cpu")
    assert "no GPU is visible here" in gpus.float8_problem("auto")
    assert gpus.float8_problem("auto", local=False) is None  # a cluster's nodes: the job checks its GPU
    assert gpus.float8_problem("cuda") is None
    monkeypatch.setattr(gpus, "visible_devices", lambda: ["0", "1"])
    monkeypatch.setattr(gpus, "compute_capabilities", lambda: [(8, 0), (8, 6)])
    assert "compute capability 8.9 or newer" in gpus.float8_problem("auto")
    assert "have 8.6" in gpus.float8_problem("cuda")
    monkeypatch.setattr(gpus, "compute_capabilities", lambda: [(9, 0)])
    assert gpus.float8_problem("auto") is None
