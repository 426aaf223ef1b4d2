"""Local multi-GPU: concurrent jobs each get their own device; a single assigned device is kept."""

import os
import subprocess
import sys
import time

from virnucpro.gpus import claim_gpu

CLAIM = """
import os, sys, time
from pathlib import Path
from virnucpro.gpus import claim_gpu
device = claim_gpu(poll_seconds=0.05, lock_dir=Path(sys.argv[1]))
print(device, os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
time.sleep(float(sys.argv[2]))
"""


def start(lock_dir, hold, devices):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": devices}
    return subprocess.Popen([sys.executable, "-c", CLAIM, str(lock_dir), str(hold)],
                            stdout=subprocess.PIPE, text=True, env=env)


def test_concurrent_jobs_get_distinct_devices_and_wait_for_a_free_one(tmp_path):
    jobs = [start(tmp_path, 1.5, "0,1,2") for _ in range(3)]
    time.sleep(0.7)
    late = start(tmp_path, 0, "0,1,2")  # all three taken: waits for the first to finish
    outs = [j.communicate(timeout=30)[0].split() for j in jobs]
    assert sorted(o[0] for o in outs) == ["0", "1", "2"]
    assert all(o[0] == o[1] for o in outs)  # CUDA_VISIBLE_DEVICES narrowed to the claimed one
    t = time.monotonic()
    assert late.communicate(timeout=30)[0].split()[0] in {"0", "1", "2"}
    assert time.monotonic() - t < 5


def test_a_device_chosen_by_the_scheduler_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert claim_gpu(lock_dir=tmp_path) == "3"
    assert list(tmp_path.iterdir()) == []  # no lock needed
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert claim_gpu(lock_dir=tmp_path) is None


def test_jobs_on_a_one_gpu_machine_take_turns(tmp_path, monkeypatch):
    """With CUDA_VISIBLE_DEVICES unset and one GPU, the device is still locked for the job's life."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr("virnucpro.gpus.visible_devices", lambda: ["0"])
    assert claim_gpu(lock_dir=tmp_path) == "0"
    assert [p.name for p in tmp_path.iterdir()] == ["gpu-0.lock"]
    probe = subprocess.run(
        [sys.executable, "-c", "import fcntl,sys; f=open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)",
         str(tmp_path / "gpu-0.lock")], capture_output=True, text=True,
    )
    assert probe.returncode != 0 and "BlockingIOError" in probe.stderr
