"""A safetensors file read onto a device in one pass, its tensors views of one buffer.

`load_safetensors(path, device)` returns {name: tensor} as `safetensors.torch.load_file` does, and the
same values. On CUDA it allocates one device buffer for the file's data and fills it from pinned host
buffers, `READERS` threads each reading its `CHUNK`-byte pieces of the file (`os.preadv`) and copying
them on a stream of its own while the next piece is read; every tensor is then a view of that buffer
(the header's dtype, shape and byte range). safetensors' own loader copies tensor by tensor from
pageable, memory-mapped pages, several times slower for a 5.7 GB model. Elsewhere it is
`safetensors.torch.load_file`. A file whose header does not describe its data is a one-line error.
"""

import json
import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from virnucpro.errors import VirNucProError

CHUNK = 64 << 20  # bytes read and copied at once
READERS = 4
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


def load_safetensors(path, device):
    """{name: tensor} of the safetensors file `path` on `device`; see the module docstring."""
    device = torch.device(device)
    if device.type != "cuda":
        from safetensors.torch import load_file

        return load_file(str(path), device=str(device))
    header, start, size = read_header(path)
    data = torch.empty(size, dtype=torch.uint8, device=device)
    _fill(data, path, start, device)
    return {name: _view(data, name, entry, path) for name, entry in header.items()}


def read_header(path):
    """(tensor entries {name: {dtype, shape, data_offsets}}, offset of the data, bytes of data)."""
    try:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        size = os.path.getsize(path) - 8 - n
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise VirNucProError(f"{path}: not a readable safetensors file ({exc})") from None
    header.pop("__metadata__", None)
    end = max((e["data_offsets"][1] for e in header.values()), default=0)
    if end != size:
        raise VirNucProError(f"{path}: the header describes {end} bytes of data, the file holds {size}")
    return header, 8 + n, size


def _fill(data, path, start, device):
    """data[:] = the file's bytes from `start`, read by READERS threads through pinned buffers."""
    local, fd = threading.local(), os.open(path, os.O_RDONLY)

    def piece(offset):
        if not hasattr(local, "buffer"):
            local.buffer = torch.empty(CHUNK, dtype=torch.uint8, pin_memory=True)
            local.stream, local.copied = torch.cuda.Stream(device), None
        if local.copied is not None:
            local.copied.synchronize()  # the buffer's last copy is done: it may be overwritten
        n = min(CHUNK, data.numel() - offset)
        if os.preadv(fd, [memoryview(local.buffer.numpy())[:n]], start + offset) != n:
            raise VirNucProError(f"{path}: shorter than its header says")
        with torch.cuda.stream(local.stream):
            data[offset : offset + n].copy_(local.buffer[:n], non_blocking=True)
            local.copied = torch.cuda.Event()
            local.copied.record(local.stream)
        return local.copied

    try:
        with ThreadPoolExecutor(READERS) as pool:
            for copied in list(pool.map(piece, range(0, data.numel(), CHUNK))):
                copied.synchronize()
    finally:
        os.close(fd)


def _view(data, name, entry, path):
    """The tensor `entry` describes: a view of `data`, or a copy where its bytes are not aligned for its dtype."""
    try:
        dtype, (lo, hi), shape = DTYPES[entry["dtype"]], entry["data_offsets"], entry["shape"]
        size = dtype.itemsize
        if lo % size:
            return torch.empty(shape, dtype=dtype, device=data.device).view(-1).view(torch.uint8).copy_(
                data[lo:hi]).view(dtype).view(shape)
        return data[lo:hi].view(dtype).view(shape)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise VirNucProError(f"{path}: tensor '{name}' does not fit its header ({exc})") from None
