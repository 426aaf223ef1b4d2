"""safetensors files: written reproducibly, their metadata read without torch, read onto a device in one pass.

`save_safetensors` writes a file whose bytes depend only on its tensors and metadata; `is_safetensors`
and `safetensors_metadata` read a file's kind and metadata without torch (the classifier's fragment
size, at parse time).

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

from virnucpro.errors import VirNucProError

CHUNK = 64 << 20  # bytes read and copied at once
READERS = 4


def _dtypes():
    import torch  # the loaders need it; the metadata readers do not

    return {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
            "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
            "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


def load_safetensors(path, device):
    """{name: tensor} of the safetensors file `path` on `device`; see the module docstring."""
    import torch

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
        total = os.path.getsize(path)
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            if n > total - 8:
                raise ValueError(f"a header of {n} bytes in a file of {total}")
            header = json.loads(f.read(n))
        size = total - 8 - n
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise VirNucProError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        header.pop("__metadata__", None)
        end = max((int(e["data_offsets"][1]) for e in header.values()), default=0)
    except (AttributeError, KeyError, TypeError, IndexError, ValueError):
        raise VirNucProError(f"{path}: not a readable safetensors file (its header lists no tensors)") from None
    if end != size:
        raise VirNucProError(f"{path}: the header describes {end} bytes of data, the file holds {size}")
    return header, 8 + n, size


def _fill(data, path, start, device):
    """data[:] = the file's bytes from `start`, read by READERS threads through pinned buffers."""
    import torch

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
    import torch

    try:
        dtype, (lo, hi), shape = _dtypes()[entry["dtype"]], entry["data_offsets"], entry["shape"]
        size = dtype.itemsize
        if lo % size:
            return torch.empty(shape, dtype=dtype, device=data.device).view(-1).view(torch.uint8).copy_(
                data[lo:hi]).view(dtype).view(shape)
        return data[lo:hi].view(dtype).view(shape)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise VirNucProError(f"{path}: tensor '{name}' does not fit its header ({exc})") from None


def is_safetensors(path):
    """True when `path` starts as a safetensors file does (an 8-byte header length, then JSON)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < (1 << 27)


def safetensors_metadata(path):
    """The metadata ({str: str}) in the header of the safetensors file `path`, read without torch; {}
    when it has none."""
    if not is_safetensors(path):
        raise VirNucProError(f"{path}: not a safetensors file")
    try:
        with open(path, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(size))
    except (ValueError, UnicodeDecodeError) as exc:
        raise VirNucProError(f"{path}: unreadable safetensors header ({exc})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def save_safetensors(state, path, metadata):
    """`safetensors.torch.save_file`, with two things made as they should be: the header is written with
    its keys sorted, so that the same state and metadata give the same bytes in every process
    (safetensors writes its metadata in hash-map order, which differs from one process to the next);
    and the file gets the mode any new file gets under the umask (safetensors writes through a
    temporary file created 0600 whatever the umask, safetensors/safetensors#782)."""
    from safetensors.torch import save_file

    save_file(state, str(path), metadata=metadata)
    _sort_header(path)
    mask = os.umask(0o077)  # reading the umask means setting it; the most restrictive value meanwhile
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _sort_header(path):
    """Rewrite a safetensors header with sorted keys, padded with spaces to its old length (data offsets
    count from the end of the header, so the tensors' bytes stay where they are)."""
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > size:  # cannot happen for the ASCII names and values written here
            raise VirNucProError(f"{path}: the sorted safetensors header is longer than the written one")
        f.seek(8)
        f.write(text + b" " * (size - len(text)))
