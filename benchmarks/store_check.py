"""What the store's checksums cost: reading 100 Mbp worth of embeddings back with and without them.

Writes the store files of 100 Mbp of genome-like input (about 134,000 frames, 0.6 frames per 500 bp
fragment as real genomes keep, about 172 ESM-2 tokens each; ESM-2 2560 and DNABERT-S 768 float32 values;
cut into shards of the default size, `shards.tokens_per_shard`) in three layouts, one after the other
in a temporary folder (deleted after each), and times, side by side in one run:

- write: the embedding step's write of the files;
- read: what `classify` does, the store's reader (`StoreIndex`, keys then embeddings in chunks of
  `features.CHUNK` frames in file order) over all frames of both encoders;
- verify: the plan's full check of every file (`verify_store_file`: every chunk and both sha256s).

Layouts: store format 1 (contiguous datasets, no checksums), chunked without Fletcher-32 (what the
chunking alone costs), and store format 2 (chunked, Fletcher-32, sha256 attributes: this version).
The files are read from the page cache (just written), so the times are the checks' CPU cost; reading
from disk adds the same I/O time to every layout. Each timing is the best of `--repeat` runs.

    python benchmarks/store_check.py > benchmarks/results/store_check.txt
"""

import argparse
import hashlib
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from virnucpro.io.store import (  # noqa: E402
    KEY_LENGTH,
    Namespace,
    StoreIndex,
    store_files,
    verify_store_file,
    write_store_file,
)
from virnucpro.defaults import TOKENS_PER_SHARD  # noqa: E402
from virnucpro.io.features import CHUNK  # noqa: E402

WIDTHS = {"esm2": 2560, "dnabert_s": 768}
FRAMES_PER_MBP = 1340  # 0.6 frames per 500 bp fragment, as 3.5 Mbp of phage and gut contigs kept
TOKENS_PER_FRAME = 172  # about 230 K ESM-2 tokens per Mbp


def _layout_writer(chunked, fletcher32):
    """A writer of one store file in a layout other than this version's (format 1, or chunks alone)."""
    import h5py

    def write(root, namespace, name, keys, embeddings, provenance):
        folder = namespace.directory(root)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.h5"
        with h5py.File(path, "w") as f:
            for ds, data in (("keys", np.asarray(keys, dtype=f"S{KEY_LENGTH}")), ("embeddings", embeddings)):
                chunks = (min(256, data.shape[0]), *data.shape[1:]) if chunked else None
                f.create_dataset(ds, data=data, chunks=chunks, fletcher32=fletcher32)
        return path

    return write


LAYOUTS = [
    ("format 1: contiguous, no checksums", _layout_writer(False, False), False),
    ("chunks of 256 rows, no Fletcher-32", _layout_writer(True, False), False),
    ("format 2: chunks + Fletcher-32 + sha256", write_store_file, True),
]


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.machine()


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def read_all(files, keys):
    """The classify step's reads: every key of every file, CHUNK at a time, per encoder."""
    for encoder, paths in files.items():
        index = StoreIndex(paths)
        for lo in range(0, len(keys), CHUNK):
            index.read(keys[lo : lo + CHUNK])


def run_layout(name, writer, checked, keys, data, shards, repeat):
    root = Path(tempfile.mkdtemp(prefix="store_check-"))
    try:
        spaces = {e: Namespace.of(e, model_sha256=e * 4, precision="float32") for e in WIDTHS}
        bounds = np.linspace(0, len(keys), shards + 1).astype(int)
        t = time.perf_counter()
        for e, ns in spaces.items():
            for s, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
                writer(root, ns, f"shard{s}", keys[lo:hi], data[e][lo:hi], {})
        write = time.perf_counter() - t
        files = {e: store_files(root, ns) for e, ns in spaces.items()}
        size = sum(p.stat().st_size for paths in files.values() for p in paths)
        read = best(lambda: read_all(files, keys), repeat)
        verify = best(lambda: [verify_store_file(p) for paths in files.values() for p in paths], repeat) \
            if checked else float("nan")
        return name, size, write, read, verify
    finally:
        shutil.rmtree(root)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mbp", type=float, default=100.0, help="input size the embeddings stand for")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each read, the best reported")
    args = parser.parse_args()
    n = int(args.mbp * FRAMES_PER_MBP)
    tokens_per_shard = TOKENS_PER_SHARD
    shards = math.ceil(n * TOKENS_PER_FRAME / tokens_per_shard)
    rng = np.random.default_rng(0)
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    data = {e: rng.standard_normal((n, w), dtype=np.float32) for e, w in WIDTHS.items()}
    gb = sum(d.nbytes for d in data.values()) / 1e9
    t = time.perf_counter()
    for d in data.values():
        hashlib.sha256(d.data).hexdigest()
    sha = time.perf_counter() - t
    print(f"{args.mbp:g} Mbp worth: {n} frames, {shards} shard(s) of at most {tokens_per_shard:_} ESM-2 tokens "
          f"per encoder, {gb:.2f} GB of float32 (ESM-2 {WIDTHS['esm2']}, DNABERT-S {WIDTHS['dnabert_s']} values)")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores (shared with other work), "
          f"python {platform.python_version()}; files read from the page cache; best of {args.repeat}")
    print(f"sha256 of the embeddings in memory alone: {sha:.2f} s ({gb / sha:.2f} GB/s)")
    print(f"{'layout':42} {'GB on disk':>10} {'write s':>8} {'read s':>8} {'verify s':>9}")
    rows = [run_layout(name, writer, checked, keys, data, shards, args.repeat) for name, writer, checked in LAYOUTS]
    for name, size, write, read, verify in rows:
        print(f"{name:42} {size / 1e9:10.2f} {write:8.2f} {read:8.2f} {verify:9.2f}")
    base = rows[0][3]
    print(f"read with checksums / format 1: {rows[2][3] / base:.2f}x; full verify: {rows[2][4]:.2f} s "
          f"({gb / rows[2][4]:.2f} GB/s)")


if __name__ == "__main__":
    main()
