"""The embedding step: one shard of the plan, both encoders, each model loaded once, into the store.

`embed(plan_dir, shard, notes, receipt)` reads the shard's proteins (`shards/{shard}.faa`) and
nucleotide slices (`shards/{shard}.fna`) from the plan directory, claims the device the plan was made for
(`device.resolve_device`: a GPU of its own), loads the models the notes name (`virnucpro.io.notes`): ESM-2
from its converted float16 file straight onto the device (`esm2.load_converted`) and DNABERT-S from its
snapshot (each warmed up on a tiny batch, so that its kernels are built while it loads), runs both
encoders' batches interleaved through one packed runner, writes one store file per
encoder (`{store}/{namespace}/{shard}.h5`) and finally the receipt, a JSON note of what was done (frames,
tokens, seconds per stage, the GPU, start and end times, store files). The models must still be the ones
the plan's namespaces name. Nothing is written before every embedding is computed and checked; the
receipt comes last, so a killed job has no receipt and runs again.

Concurrent runs on one store: the whole job holds the shard's lock in the store,
`{store}/{esm2 namespace}/.lock-{shard}` (`virnucpro.io.locks`: waited for while another run holds it,
taken over when its holder died). A shard is named by its content, so two runs planning the same work
name the same shard and take the same lock. Once the lock is held, an encoder whose store file of the
shard is complete (exactly the shard's keys, and it passes its full check) is not embedded again:
another run finished it after this run's plan was made. The receipt names those files in
`already_stored`; when every encoder's file is there, no model is loaded and no device claimed.
"""

import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from virnucpro.defaults import DNABERT_TOKENS_PER_BATCH, ESM2_TOKENS_PER_BATCH
from virnucpro.errors import VirNucProError
from virnucpro.device import resolve_device, visible_devices
from virnucpro.io.atomic import atomic_outputs
from virnucpro.io.notes import check_note, source_sha256
from virnucpro.io.seqio import read_frames
from virnucpro.layout import KERNELS, PLAN_FILE, SHARDS
from virnucpro.io.locks import hold_lock
from virnucpro.io.store import Namespace, StoreFileError, read_keys, verify_store_file, write_store_file
from virnucpro.models import dnabert, esm2
from virnucpro.models.generated import use_kernel_cache
from virnucpro.models.namespaces import DNABERT_PRECISION, namespaces
from virnucpro.models.packing import pack
from virnucpro.models.runner import Task, run_packed

log = logging.getLogger("virnucpro")


def read_shard(path):
    """[(key, label, sequence)] of a shard file the plan wrote (`>{key} {member}:{frame id}`, one line of
    sequence); the label names the frame in messages."""
    records = []
    for header, seq in read_frames(path):
        key, _, label = header.partition(" ")
        records.append((key, label or key, seq))
    return records


def read_plan(plan_dir):
    path = Path(plan_dir) / PLAN_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VirNucProError(f"{path}: not a readable embedding plan ({exc})") from None


def _device(plan):
    """The device of this job: the plan's device type, with a GPU claimed for this process. A plan that
    `auto` made for the CPU (no GPU where snakemake ran) refuses a job that has a GPU: on a cluster whose
    login node has none, every shard would silently run on the CPU."""
    planned = plan["device"]
    if planned == "cpu" and plan.get("device_setting") == "auto" and visible_devices():
        raise VirNucProError(
            "the embedding plan was made for the CPU (embed.device is auto and the machine that ran "
            "snakemake sees no GPU), but this job has one: set embed.device to cuda (or to cpu)"
        )
    device = resolve_device(planned)
    if device.type != planned:
        raise VirNucProError(f"the embedding plan was made for {planned}, but this job runs on {device.type}")
    return device


def _check_namespaces(plan, notes, device_type):
    """The models must be the ones whose namespaces the plan checked the store against."""
    now = namespaces(notes["esm2"], notes["dnabert_s"], device_type, float8=_float8(plan))
    for encoder, namespace in now.items():
        planned = Namespace.from_json(plan["namespaces"][encoder])
        if planned != namespace:
            raise VirNucProError(
                f"the {encoder} model or its precision changed since the embedding plan was made "
                f"(namespace {planned.id}, now {namespace.id}); run the workflow again to plan anew"
            )
    return now


def _float8(plan):
    """Whether the plan embeds ESM-2 in float8 (the float8 guard let it)."""
    return plan.get("esm2_precision") == "float8"


def _esm2_task(records, note, device, tokens_per_batch, seconds, float8=False, label="esm2"):
    """The ESM-2 task of `records`, its model loaded from the note's float16 file, or its float8 one."""
    started = time.monotonic()
    if device.type == "cuda":  # where kernels are built
        use_kernel_cache(Path(note["file"]).parent.parent / KERNELS)  # the converted file's models folder
    ids, seqs = [r[1] for r in records], [r[2] for r in records]
    tok = esm2.tokenizer()
    lengths = tok.lengths(ids, seqs)  # validates every residue before the model loads
    converted = Path(note["float8_file"] if float8 else note["file"])
    model = esm2.load_converted(converted, source_sha256(note), device)
    _warm_up(model, tok([ESM2_WARM_UP]), device)
    stage = "load_esm2_float8" if float8 else "load_esm2"
    seconds[stage] = round(time.monotonic() - started, 2)
    precision = "float8 (e4m3 q, k, fc1, fc2)" if model.float8 else str(model.dtype).removeprefix("torch.")
    log.info("ESM-2 %s: %d layers, dim %d, %s on %s, attention %s%s, ready in %.1f s", converted.name,
             model.num_layers, model.embed_dim, precision, device, model.attention_backend,
             ", compiled" if model.compiled else "", seconds[stage])
    return Task(label, ids, seqs, tok, model.embed, model.embed_dim, tokens_per_batch, lengths), model


def _dnabert_task(records, note, device, tokens_per_batch, seconds):
    started = time.monotonic()
    model_dir = note["file"]
    model, tokenizer, _ = dnabert.load_dnabert(model_dir, device, dnabert.DTYPE[device.type])
    _warm_up(model, tokenizer([DNABERT_WARM_UP]), device)
    ids = [r[1] for r in records]
    tokens = tokenizer([r[2] for r in records])  # once, up front: the lengths plan the batches
    seconds["load_dnabert_s"] = round(time.monotonic() - started, 2)
    log.info("DNABERT-S %s: %d layers, dim %d, %s on %s, attention %s, ready in %.1f s", model_dir,
             model.config.num_hidden_layers, model.config.hidden_size, DNABERT_PRECISION[device.type], device,
             model.attention_backend, seconds["load_dnabert_s"])
    lengths = [len(t) for t in tokens]
    return Task("dnabert_s", ids, tokens, _identity, model.embed, model.config.hidden_size, tokens_per_batch,
                lengths), model


WARM_UP_TOKENS = 1024  # a multiple of 16, as every budget-padded batch is: Triton specialises on it
ESM2_WARM_UP = "M" + "KTAYIAKQRQISFVKSHFSRQ" * 12  # 253 residues: four blocks of attention rows
DNABERT_WARM_UP = "ACGTTGCAAGCTAGGCTTAC" * 25


def _warm_up(model, tokens, device):
    """One small batch through the model, so that its kernels are built or loaded from the kernel cache
    (Triton, torch.compile) while the model loads, not while the device waits in the middle of the run.
    Like the run's batches it is padded (to WARM_UP_TOKENS) and its sequence spans several blocks of
    the attention kernel, so the kernels built are the ones the run launches. Its sequences have no
    input position (index -1)."""
    with torch.inference_mode():
        model.embed(pack(tokens, [-1] * len(tokens)).pad_to(WARM_UP_TOKENS).to(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)


DEFAULT_BUDGETS = {"esm2": ESM2_TOKENS_PER_BATCH, "dnabert_s": DNABERT_TOKENS_PER_BATCH}


def budgets(tokens_per_batch, device):
    """{encoder: tokens per packed batch on `device`}: from `tokens_per_batch` ({encoder: a number, or
    {device type: number}}, config's `embed.*_tokens_per_batch`; None or a missing encoder: the default)."""
    chosen = {}
    for encoder, defaults in DEFAULT_BUDGETS.items():
        value = (tokens_per_batch or {}).get(encoder)
        if isinstance(value, dict):
            value = value.get(device.type)
        value = defaults[device.type] if value is None else value
        if value < 1:
            raise VirNucProError(f"{encoder} tokens per batch must be positive, not {value}")
        chosen[encoder] = int(value)
    return chosen


def _identity(tokens):
    return tokens


def embed(plan_dir, shard, notes, receipt, tokens_per_batch=None, lock_options=None):
    """Embed one shard into the store and write its receipt; see the module docstring.

    notes: {"esm2": note, "dnabert_s": note}, each a note or the path of a note file (`virnucpro.io.notes`).
    tokens_per_batch: the token budgets (`budgets`). lock_options: keyword arguments of
    `locks.hold_lock` (stale_after_s, poll_s; tests inject sleep, clock, alive).
    """
    started_at = time.time()
    plan_dir = Path(plan_dir)
    plan = read_plan(plan_dir)
    if shard not in {s["name"] for s in plan["shards"]}:
        raise VirNucProError(f"{plan_dir}: the plan has no shard {shard}")
    frames = {"esm2": plan_dir / SHARDS / f"{shard}.faa", "dnabert_s": plan_dir / SHARDS / f"{shard}.fna"}
    records = {e: read_shard(path) for e, path in frames.items()}
    planned = {e: Namespace.from_json(plan["namespaces"][e]) for e in records}
    lock = planned["esm2"].directory(plan["store"]) / f".lock-{shard}"
    with hold_lock(lock, f"shard {shard}", **(lock_options or {})):
        stored = _already_stored(plan["store"], planned, shard, records)
        todo = {e: r for e, r in records.items() if r and e not in stored}
        if todo:
            note = _embed(plan, shard, todo, notes, tokens_per_batch, frames)
        else:
            note = {"device": None, "gpu": None, "tokens": {}, "seconds": {}, "store_files": {}}
        note = {"shard": shard, **note, "frames": {e: len(r) for e, r in records.items()},
                "already_stored": {e: str(p) for e, p in stored.items()}, "started": started_at,
                "finished": time.time()}
        note["store_files"] = {**note["store_files"], **note["already_stored"]}
        with atomic_outputs(receipt) as (tmp,):
            tmp.write_text(json.dumps(note, indent=1) + "\n")
    if todo:
        log.info("shard %s: %s in %.1f s (embedding %.1f s)", shard,
                 ", ".join(f"{len(r)} {e}" for e, r in todo.items()), sum(note["seconds"].values()),
                 note["seconds"]["embed"])
    if stored:
        log.info("shard %s: %s already in the store (another run embedded them): %s", shard,
                 ", ".join(f"{len(records[e])} {e}" for e in stored), ", ".join(map(str, stored.values())))
    return note


def _already_stored(root, planned, shard, records):
    """{encoder: store file} of the encoders whose frames of this shard the store holds now, in the
    shard's own file `{shard}.h5` (another run planned the same work and finished it): that file must
    hold exactly the shard's keys and pass its full check (`verify_store_file`); one that does not is
    embedded again (and replaced)."""
    held = {}
    for e, recs in records.items():
        path = planned[e].directory(root) / f"{shard}.h5"
        if not recs or not path.is_file():
            continue
        try:
            same = read_keys(path).tolist() == [r[0].encode("ascii") for r in recs]
            verify_store_file(path, planned[e])
        except StoreFileError as exc:
            log.warning("shard %s: store file %s: %s; it is embedded again", shard, path, exc.problem)
            continue
        if same:
            held[e] = path
    return held


def _embed(plan, shard, records, notes, tokens_per_batch, frames):
    """Embed `records` ({encoder: shard records}, none empty) into the store; the receipt's fields."""
    device = _device(plan)
    budget = budgets(tokens_per_batch, device)
    notes = {e: check_note(n) for e, n in notes.items()}
    namespaces = _check_namespaces(plan, notes, device.type)
    seconds, tasks = {}, []
    if "esm2" in records:
        tasks.append(_esm2_task(records["esm2"], notes["esm2"], device, budget["esm2"], seconds,
                                float8=_float8(plan)))
    if "dnabert_s" in records:
        tasks.append(_dnabert_task(records["dnabert_s"], notes["dnabert_s"], device, budget["dnabert_s"],
                                   seconds))
    started = time.monotonic()
    try:
        results = run_packed([task for task, _ in tasks], device)
    except VirNucProError as exc:  # a NaN or a device fault: name the shard
        raise VirNucProError(f"{frames['esm2'].with_suffix('')}: {exc}") from None
    seconds["embed"] = round(time.monotonic() - started, 2)
    started = time.monotonic()
    written = {}
    for (task, model), embeddings in zip(tasks, results):
        keys = [r[0] for r in records[task.label]]
        provenance = _provenance(device, task, model)
        path = write_store_file(plan["store"], namespaces[task.label], shard, keys, embeddings, provenance)
        written[task.label] = str(path)
    seconds["write"] = round(time.monotonic() - started, 2)
    return {"device": str(device), "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "tokens": {task.label: int(task.lengths.sum()) for task, _ in tasks}, "seconds": seconds,
            "store_files": written}


def _provenance(device, task, model):
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": gpu, "torch": torch.__version__, "tokens_per_batch": task.tokens_per_batch,
            "attention": model.attention_backend, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def embed_calibration(frames, notes, device, tokens_per_batch=None):
    """The float8 guard's embeddings of `frames` ([(label, key, nucleotide, protein)]) on `device`: (ESM-2
    in float16, ESM-2 in float8, DNABERT-S), each (N, D) float32; notes: checked model notes, the ESM-2 one
    naming its float8 file."""
    proteins = [(key, label, prot) for label, key, _, prot in frames]
    nucleotides = [(key, label, nuc) for label, key, nuc, _ in frames]
    budget = budgets(tokens_per_batch, device)
    seconds = {}
    tasks = [_esm2_task(proteins, notes["esm2"], device, budget["esm2"], seconds, float8=f, label=label)[0]
             for f, label in ((False, "esm2 float16"), (True, "esm2 float8"))]
    tasks.append(_dnabert_task(nucleotides, notes["dnabert_s"], device, budget["dnabert_s"], seconds)[0])
    if not frames:
        return tuple(np.zeros((0, t.dim), dtype=np.float32) for t in tasks)
    return tuple(run_packed(tasks, device))
