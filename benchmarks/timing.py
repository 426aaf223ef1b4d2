"""Timing shared by the throughput benchmarks: one warm-up call, then one timed call on the device."""

import time

import torch


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, work, warm, device):
    """Call fn(warm) (when given), then time fn(work) to completion on `device`.

    Returns (seconds, peak GiB allocated above what was resident before the timed call (NaN off CUDA),
    fn's result).
    """
    if warm:
        fn(warm)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    result = fn(work)
    sync(device)
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if device.type == "cuda" else float("nan")
    return seconds, peak, result
