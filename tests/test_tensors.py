"""safetensors files read onto a device in one pass (`io.tensors.load_safetensors`): every tensor gets
the values safetensors' own loader gives, whatever its dtype and wherever its bytes lie (a file from
another writer may put a tensor at an offset its dtype is not aligned to), and a file whose header does
not describe its data is a one-line error. The CUDA path (pinned buffers, several readers) runs on a
GPU only."""

import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from virnucpro.errors import VirNucProError
from virnucpro.io import tensors
from virnucpro.io.tensors import _view, load_safetensors, read_header, save_safetensors

DTYPES = {"U8": torch.uint8, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
          "F8_E4M3": torch.float8_e4m3fn}


def state(seed=0, scale=1):
    gen = torch.Generator().manual_seed(seed)
    return {"a_bytes": torch.randint(0, 255, (3,), dtype=torch.uint8, generator=gen),
            "b_f32": torch.randn(5 * scale, 7, generator=gen), "c_f16": torch.randn(4, generator=gen).half(),
            "d_bf16": torch.randn(2, 3, generator=gen).bfloat16(), "e_i64": torch.arange(3) - 1,
            "f_e4m3": torch.randn(5, generator=gen).to(torch.float8_e4m3fn), "g_empty": torch.zeros(0, 4)}


def unaligned_file(path, tensors_in_order):
    """A safetensors file with the tensors packed in the given order, no padding: a float tensor after
    3 bytes of uint8 starts at an offset its dtype is not aligned to."""
    names = {v: k for k, v in DTYPES.items()}
    header, data = {}, b""
    for name, t in tensors_in_order.items():
        raw = t.contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def host_load(path):
    """load_safetensors' assembly (the header, one buffer, a view per tensor) with the buffer on the host."""
    header, start, size = read_header(path)
    data = torch.frombuffer(bytearray(path.read_bytes()[start:]), dtype=torch.uint8) if size else torch.empty(0, dtype=torch.uint8)
    return {name: _view(data, name, entry, path) for name, entry in header.items()}


def assert_same(got, want):
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape, name
        assert torch.equal(got[name].cpu().view(torch.uint8), want[name].cpu().view(torch.uint8)), name


@pytest.mark.parametrize("writer", ["safetensors", "unaligned"])
def test_every_tensor_is_read_as_safetensors_reads_it(tmp_path, writer):
    if writer == "safetensors":
        path = tmp_path / "m.safetensors"
        save_safetensors(state(), path, {"format": "test"})
    else:
        path = unaligned_file(tmp_path / "m.safetensors", state())
        assert read_header(path)[0]["b_f32"]["data_offsets"][0] % 4 == 3  # constructed: not aligned
    assert_same(host_load(path), load_file(str(path)))
    assert_same(load_safetensors(path, "cpu"), load_file(str(path)))


def test_a_header_that_does_not_describe_the_data_is_one_line(tmp_path):
    path = tmp_path / "m.safetensors"
    save_safetensors(state(), path, {"format": "test"})
    path.write_bytes(path.read_bytes()[:-5])  # truncated
    with pytest.raises(VirNucProError, match=r"m\.safetensors: the header describes \d+ bytes of data, the file holds"):
        read_header(path)
    (tmp_path / "text").write_text("not a model")
    (tmp_path / "list").write_bytes(struct.pack("<Q", 2) + b"[]")
    for name in ("text", "list"):
        with pytest.raises(VirNucProError, match=f"{name}: not a readable safetensors file"):
            read_header(tmp_path / name)


@pytest.mark.gpu
@pytest.mark.parametrize("writer", ["safetensors", "unaligned"])
def test_the_cuda_path_reads_what_safetensors_reads(tmp_path, writer, monkeypatch):
    """Small pieces (64 KB), so that the file is many pieces spread over the READERS threads, each
    reusing its pinned buffer."""
    monkeypatch.setattr(tensors, "CHUNK", 1 << 16)
    big = state(scale=20_000)  # b_f32: 100,000 x 7 float32, 2.8 MB: 43 pieces
    path = tmp_path / "m.safetensors"
    if writer == "safetensors":
        save_safetensors(big, path, {"format": "test"})
    else:
        unaligned_file(path, big)
    got = load_safetensors(path, "cuda")
    assert all(t.device.type == "cuda" for t in got.values())
    assert_same(got, load_file(str(path), device="cpu"))
