"""Packed inference runner shared by the protein (ESM-2) and DNA (DNABERT-S) embedders.

`run_packed(tasks, device)` runs one or more `Task`s (an encoder and its sequences) on one device. Each
task's sequences are planned into length-sorted token-budget batches, and every batch is padded to
exactly the task's budget (`PackedBatch.pad_to`), so that its matrix products always have one shape and
a sequence's embedding cannot depend on which other sequences share its batch. The batches of all tasks
are interleaved in proportion to each task's number of batches. A background thread tokenises, packs and
pads the next batches (pinned host memory on CUDA) while the device computes; copies run both ways
without blocking; a batch that runs out of device memory is split in two (the halves are not padded).
Each task gets one float32 row per input sequence, in input order. Every sequence is embedded exactly
once; a non-finite embedding stops the run with the sequence's id; any other device fault (a lost GPU, a
driver or ECC error) stops it with one line (a `VirNucProError`), before anything is written.

Three parts run a schedule: `_Producer` (the packing thread), `_launched` (starts each batch on the device
and splits a batch that runs out of memory) and `_Collector` (checks the rows and puts them in input order).
"""

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from virnucpro.errors import VirNucProError, first_line
from virnucpro.models.generated import is_device_failure, is_oom
from virnucpro.models.packing import pack, plan_batches

log = logging.getLogger("virnucpro")

PREFETCH_BATCHES = 4
LOG_EVERY_S = 5.0
_DONE = object()


@dataclass
class Task:
    """One encoder's share of a packed run.

    ids, sequences: N ids (for messages) and N inputs of `tokenize`;
    tokenize(list) -> list of 1-D int arrays, special tokens included;
    forward(PackedBatch on the device) -> (S, dim) pooled embeddings, one row per packed sequence (padding
    included, which comes last); lengths (N,): tokens per sequence, if already known.
    """

    label: str
    ids: list
    sequences: list
    tokenize: object
    forward: object
    dim: int
    tokens_per_batch: int
    lengths: np.ndarray = None

    def __post_init__(self):
        if len(self.ids) != len(self.sequences):
            raise ValueError("ids and sequences differ in length")
        if self.lengths is None:
            self.lengths = [len(t) for t in self.tokenize(list(self.sequences))] if self.sequences else []
        self.lengths = np.asarray(self.lengths, dtype=np.int64)


def interleave(plans):
    """[(task, batch indices)] of every task's planned batches, merged so that each task advances at the
    same pace: batch k of a task with n batches sits at (k + 0.5) / n (ties: task order)."""
    slots = [((k + 0.5) / len(p), t, k) for t, p in enumerate(plans) for k in range(len(p))]
    return [(t, plans[t][k]) for _, t, k in sorted(slots)]


class _Producer:
    """The scheduled batches, tokenised, packed, padded and (on CUDA) pinned by a background thread, at most
    `PREFETCH_BATCHES` ahead; iterating yields (task index, host batch) and re-raises the thread's error.
    Used as a context manager: leaving it stops and joins the thread."""

    def __init__(self, schedule, tasks, pin):
        self.schedule, self.tasks, self.pin = schedule, tasks, pin
        self.queue, self.stop = queue.Queue(maxsize=PREFETCH_BATCHES), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=10)

    def __iter__(self):
        while (item := self.queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item

    def _put(self, item):
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _run(self):
        try:
            for t, index in self.schedule:
                if self.stop.is_set():
                    return
                task = self.tasks[t]
                batch = pack(task.tokenize([task.sequences[i] for i in index]), index).pad_to(task.tokens_per_batch)
                self._put((t, batch.pin_memory() if self.pin else batch))
            self._put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(exc)


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


class _Collector:
    """Each task's rows in input order, checked as they arrive: shape, finiteness, exactly once."""

    def __init__(self, tasks):
        self.tasks = tasks
        self.out = [np.empty((len(t.ids), t.dim), dtype=np.float32) for t in tasks]
        self.filled = [np.zeros(len(t.ids), dtype=np.int8) for t in tasks]
        self.progress = [_Progress(t.label, len(t.ids), int(t.lengths.sum())) for t in tasks]

    def finish(self, t, host_batch, result, event):
        """Wait for one batch's result and store its real rows (padding rows are dropped)."""
        if event is not None:
            event.synchronize()
        task, index = self.tasks[t], host_batch.index
        rows = result.numpy() if isinstance(result, torch.Tensor) else np.asarray(result)
        if rows.ndim != 2 or rows.shape[0] < len(index) or rows.shape[1] != task.dim:
            raise RuntimeError(f"{task.label}: forward returned {rows.shape}, expected ({len(index)}+, {task.dim})")
        rows = rows[: len(index)]
        bad = ~np.isfinite(rows).all(axis=1)
        if bad.any():
            raise VirNucProError(
                f"{task.label}: non-finite embedding (NaN or Inf) for sequence '{task.ids[index[np.argmax(bad)]]}'"
            )
        filled = self.filled[t]
        if filled[index].any():
            raise RuntimeError(f"{task.label}: internal error: sequence '{task.ids[index[np.argmax(filled[index])]]}' "
                               "embedded twice")
        filled[index] += 1
        self.out[t][index] = rows
        self.progress[t].add(len(index), host_batch.num_real_tokens)

    def check_complete(self):
        for task, filled, progress in zip(self.tasks, self.filled, self.progress):
            if not (filled == 1).all():
                raise RuntimeError(f"{task.label}: internal error: {int((filled != 1).sum())} sequences "
                                   "not embedded exactly once")
            progress.add(0, 0, final=True)


def _launch(task, host, device):
    """Start one batch on the device: (host result buffer, event), or None when it ran out of memory."""
    try:
        result = task.forward(host.to(device, non_blocking=True)).to(torch.float32)
        if device.type != "cuda":
            return result, None
        host_result = torch.empty(result.shape, dtype=torch.float32, pin_memory=True)
        host_result.copy_(result, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return host_result, event
    except BaseException as exc:
        if not is_oom(exc):
            raise
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return None


def _halves(task, host):
    """The two halves to retry after `host` ran out of memory; a single sequence is a one-line error."""
    if len(host.index) < 2:
        raise VirNucProError(
            f"{task.label}: sequence '{task.ids[host.index[0]]}' ({host.num_real_tokens} tokens) does not fit "
            "in device memory on its own"
        )
    log.warning("%s: out of device memory on a batch of %d sequences (%d tokens); splitting it in two",
                task.label, len(host.index), host.num_tokens)
    return host.split()


def _launched(batches, tasks, device, current):
    """Start each of `batches` ((task index, host batch)) on the device and yield (task index, host batch,
    result, event) once it is under way. A batch that runs out of memory is split in halves, which run
    next, before any later batch. `current` (a one-element list) holds the batch being run, for messages."""
    batches, retry = iter(batches), deque()
    while True:
        item = retry.popleft() if retry else next(batches, None)
        if item is None:
            return
        t, host = current[0] = item
        launched = _launch(tasks[t], host, device)
        if launched is None:
            retry.extendleft(reversed([(t, half) for half in _halves(tasks[t], host)]))
            continue
        yield (t, host, *launched)


def _collect(launched, collector):
    """Hand each launched batch to `collector` once the next one is under way, so that the device works
    on batch k + 1 while the rows of batch k come back."""
    pending = None
    for item in launched:
        if pending is not None:
            collector.finish(*pending)
        pending = item
    if pending is not None:
        collector.finish(*pending)


def _device_failure(tasks, current, exc):
    """The one-line error for a device fault `exc` while `current[0]` (task index, host batch) ran."""
    where = ""
    if current[0] is not None:
        t, host = current[0]
        where = f" on a batch of {len(host.index)} sequences from '{tasks[t].ids[host.index[0]]}'"
    return VirNucProError(
        f"{tasks[current[0][0]].label if current[0] else 'embedding'}: device failure{where} "
        f"({first_line(exc)}); nothing was written, rerun to resume from this shard"
    )


def run_packed(tasks, device):
    """Embed every task's sequences on `device`; returns one (N, dim) float32 array per task, input order."""
    tasks, device = list(tasks), torch.device(device)
    collector = _Collector(tasks)
    plans = [plan_batches(t.lengths, t.tokens_per_batch) for t in tasks]
    for task, plan in zip(tasks, plans):
        log.info("%s: %d sequences, %d tokens, %d batches of %d tokens on %s", task.label, len(task.ids),
                 int(task.lengths.sum()), len(plan), task.tokens_per_batch, device)
    schedule = interleave(plans)
    if not schedule:
        return collector.out
    current = [None]
    with _Producer(schedule, tasks, pin=device.type == "cuda") as batches:
        try:
            with torch.inference_mode():
                _collect(_launched(batches, tasks, device, current), collector)
        except Exception as exc:
            if not is_device_failure(exc):
                raise
            raise _device_failure(tasks, current, exc) from None
    collector.check_complete()
    return collector.out
