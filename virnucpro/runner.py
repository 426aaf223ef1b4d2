"""Packed inference runner shared by the protein (ESM-2) and DNA (DNABERT-S) embedders.

`embed_packed` plans length-sorted token-budget batches, tokenises and packs the next batches on a
background thread (pinned host memory on CUDA) while the device computes, copies both ways without
blocking, splits a batch in two when the device runs out of memory, and returns one float32 row per
input sequence, in input order. Every sequence is embedded exactly once; a non-finite embedding stops
the run with the sequence's id; any other device fault (a lost GPU, a driver or ECC error) stops it with
one line (a `VirNucProError`), before anything is written.
"""

import logging
import queue
import threading
import time
import warnings
from collections import deque

import numpy as np
import torch

from virnucpro.errors import VirNucProError
from virnucpro.gpus import claim_gpu
from virnucpro.packing import pack, plan_batches

log = logging.getLogger("virnucpro")

PREFETCH_BATCHES = 4
LOG_EVERY_S = 5.0
_DONE = object()


def resolve_device(device):
    """The torch device for `device` in {"auto", "cpu", "cuda"}.

    For "auto" and "cuda" the process first claims one GPU of its own (`virnucpro.gpus.claim_gpu`),
    before CUDA is initialised, so that jobs running side by side use different GPUs.
    """
    if device == "cpu":
        return torch.device("cpu")
    if device not in (None, "auto", "cuda"):
        raise VirNucProError(f"unknown device '{device}' (choose auto, cpu or cuda)")
    claim_gpu()
    if torch.cuda.is_available():
        return torch.device("cuda")
    if device == "cuda":
        raise VirNucProError("--device cuda was asked for but no CUDA GPU is available")
    return torch.device("cpu")


def _producer(batches, sequences, tokenize, pin, out_q, stop):
    """Tokenise, pack and (on CUDA) pin each planned batch; hand them over through `out_q`."""

    def put(item):
        while not stop.is_set():
            try:
                out_q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    try:
        for index in batches:
            if stop.is_set():
                return
            batch = pack(tokenize([sequences[i] for i in index]), index)
            put(batch.pin_memory() if pin else batch)
        put(_DONE)
    except BaseException as exc:  # handed to the consumer, which re-raises it
        put(exc)


class _Progress:
    def __init__(self, label, n_seqs, n_tokens):
        self.label, self.n_seqs, self.n_tokens = label, n_seqs, n_tokens
        self.seqs = self.tokens = 0
        self.start = self.last = time.monotonic()

    def add(self, seqs, tokens, final=False):
        self.seqs += seqs
        self.tokens += tokens
        now = time.monotonic()
        if not final and now - self.last < LOG_EVERY_S:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        tok_rate = self.tokens / elapsed
        eta = (self.n_tokens - self.tokens) / tok_rate if tok_rate > 0 else float("inf")
        log.info(
            "%s: %d/%d sequences, %.0f sequences/s, %.0f tokens/s, %s %s",
            self.label,
            self.seqs,
            self.n_seqs,
            self.seqs / elapsed,
            tok_rate,
            "done in" if final else "ETA",
            _fmt_seconds(elapsed if final else eta),
        )


def _fmt_seconds(s):
    if not np.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


def _is_oom(exc):
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def compiled(fn):
    """`torch.compile(fn)`, without the 14 DeprecationWarnings that torch's first `torch.compile` prints.

    `torch.compile` imports Inductor, which imports `torch/utils/mkldnn.py`; that module's TorchScript
    classes carry 14 `@torch.jit.script_method` decorators, and each warns that TorchScript is deprecated
    (torch 2.13). The warning is about torch's own module, not about `fn` or anything we could change,
    so exactly that message from `torch.jit._script` is ignored, only while Inductor is imported.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"`torch\.jit\.script_method` is",
            category=DeprecationWarning,
            module=r"torch\.jit\._script",
        )
        return torch.compile(fn)


def fall_back(exc, what, model):
    """Called with an exception raised by generated code (`what`: torch.compile, the Triton kernels): an
    out-of-memory error is re-raised (the runner splits the batch); anything else is a build failure (no
    C compiler, Triton missing, an unsupported GPU), logged once, and the caller then runs `model` on
    plain torch ops."""
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
        raise exc
    log.warning("%s failed (%s); running %s on plain torch ops", what, _first_line(exc), model)


_DEVICE_FAILURE_MARKS = ("CUDA error", "CUDA driver error", "CUBLAS_STATUS", "CUDNN_STATUS", "device-side assert",
                        "NCCL error", "no CUDA-capable device", "CUDA-capable device(s) is/are busy")


def _is_device_failure(exc):
    """True for a device fault other than running out of memory: a lost or reset GPU, an ECC or driver
    error, a failed kernel. The CUDA context is unusable afterwards, so the job must end."""
    accelerator_error = getattr(torch, "AcceleratorError", ())
    if isinstance(exc, accelerator_error) or isinstance(exc, getattr(torch.cuda, "CudaError", ())):
        return not _is_oom(exc)
    return isinstance(exc, RuntimeError) and not _is_oom(exc) and any(m in str(exc) for m in _DEVICE_FAILURE_MARKS)


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def embed_packed(
    ids,
    sequences,
    tokenize,
    forward,
    dim,
    device,
    tokens_per_batch,
    label,
    lengths=None,
):
    """Embed `sequences` in packed batches; returns (N, dim) float32 in input order.

    ids, sequences: N ids (for messages) and N strings.
    tokenize(list[str]) -> list[np.ndarray]: token ids per sequence, special tokens included.
    forward(PackedBatch on `device`) -> (B, dim) pooled embeddings, one row per batch sequence.
    lengths (N,): tokens per sequence if already known (saves tokenising twice).
    """
    n = len(sequences)
    if len(ids) != n:
        raise ValueError("ids and sequences differ in length")
    device = torch.device(device)
    out = np.empty((n, dim), dtype=np.float32)
    if n == 0:
        return out
    if lengths is None:
        lengths = np.fromiter((len(t) for t in tokenize(list(sequences))), dtype=np.int64, count=n)
    lengths = np.asarray(lengths, dtype=np.int64)
    batches = plan_batches(lengths, tokens_per_batch)
    cuda = device.type == "cuda"
    log.info(
        "%s: %d sequences, %d tokens, %d batches of at most %d tokens on %s",
        label, n, int(lengths.sum()), len(batches), tokens_per_batch, device,
    )

    filled = np.zeros(n, dtype=np.int8)
    progress = _Progress(label, n, int(lengths.sum()))
    work_q = queue.Queue(maxsize=PREFETCH_BATCHES)
    stop = threading.Event()
    producer = threading.Thread(
        target=_producer, args=(batches, sequences, tokenize, cuda, work_q, stop), daemon=True
    )
    producer.start()

    def finish(host_batch, result, event):
        """Wait for one batch's result, check it and store it in input order."""
        if event is not None:
            event.synchronize()
        rows = result.numpy() if isinstance(result, torch.Tensor) else np.asarray(result)
        index = host_batch.index
        if rows.shape != (len(index), dim):
            raise RuntimeError(f"{label}: forward returned {rows.shape}, expected {(len(index), dim)}")
        bad = ~np.isfinite(rows).all(axis=1)
        if bad.any():
            raise VirNucProError(
                f"{label}: non-finite embedding (NaN or Inf) for sequence '{ids[index[np.argmax(bad)]]}'"
            )
        if filled[index].any():
            twice = ids[index[np.argmax(filled[index])]]
            raise RuntimeError(f"{label}: internal error: sequence '{twice}' embedded twice")
        filled[index] += 1
        out[index] = rows
        progress.add(len(index), host_batch.num_tokens)

    pending = None  # (host batch, host result, event) of the batch launched before the current one
    retry = deque()  # halves of batches that ran out of memory, run before the next planned batch
    host = None
    try:
        with torch.inference_mode():
            while True:
                if retry:
                    host = retry.popleft()
                else:
                    host = work_q.get()
                    if host is _DONE:
                        break
                    if isinstance(host, BaseException):
                        raise host
                try:
                    result = forward(host.to(device, non_blocking=True))
                    result = result.to(torch.float32)
                    if cuda:
                        host_result = torch.empty(result.shape, dtype=torch.float32, pin_memory=True)
                        host_result.copy_(result, non_blocking=True)
                        event = torch.cuda.Event()
                        event.record()
                    else:
                        host_result, event = result, None
                except BaseException as exc:
                    if not _is_oom(exc):
                        raise
                    del exc
                    if cuda:
                        torch.cuda.empty_cache()
                    if len(host.index) < 2:
                        raise VirNucProError(
                            f"{label}: sequence '{ids[host.index[0]]}' ({host.num_tokens} tokens) does not fit "
                            "in device memory on its own"
                        ) from None
                    log.warning(
                        "%s: out of device memory on a batch of %d sequences (%d tokens); splitting it in two",
                        label, len(host.index), host.num_tokens,
                    )
                    retry.extendleft(reversed(host.split()))
                    continue
                # the device now works on this batch: collect the previous one meanwhile
                if pending is not None:
                    finish(*pending)
                pending = (host, host_result, event)
            if pending is not None:
                finish(*pending)
    except Exception as exc:
        if not _is_device_failure(exc):
            raise
        where = ""
        if host is not None and host is not _DONE and not isinstance(host, BaseException):
            where = f" on a batch of {len(host.index)} sequences from '{ids[host.index[0]]}'"
        raise VirNucProError(
            f"{label}: device failure{where} ({_first_line(exc)}); nothing was written, "
            "rerun to resume from this shard"
        ) from None
    finally:
        stop.set()
        producer.join(timeout=10)

    if not (filled == 1).all():
        missing = np.flatnonzero(filled != 1)
        raise RuntimeError(f"{label}: internal error: {len(missing)} sequences not embedded exactly once")
    progress.add(0, 0, final=True)
    return out
