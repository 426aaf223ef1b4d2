"""Token-balanced shards: contiguous, complete, balanced, identical ids in both files."""

import numpy as np
import pytest

from virnucpro.errors import VirNucProError
from virnucpro.shard import shard_bounds, shard_frames


def write_frames(path, n, rng):
    lengths = rng.integers(10, 170, n)
    ids = [f"s{i}_chunk_1F1" for i in range(n)]
    prot = ["M" * int(k) for k in lengths]
    (path / "f.faa").write_text("".join(f">{i}\n{p}\n" for i, p in zip(ids, prot)))
    (path / "f.fna").write_text("".join(f">{i}\n{'A' * (3 * len(p) + 1)}\n" for i, p in zip(ids, prot)))
    return lengths + 2


def test_bounds_balance_tokens_not_records():
    tokens = np.r_[np.full(100, 1000), np.full(1000, 10)]  # heavy frames first
    bounds = shard_bounds(tokens, 27_500)
    sums = [tokens[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])]
    assert len(sums) == 4 and max(sums) - min(sums) <= 1000
    assert bounds[0] == 0 and bounds[-1] == tokens.size


def test_no_tokens_no_shard():
    assert shard_bounds([], 100) == [0]


def test_shards_restore_input_and_pair_files(tmp_path):
    tokens = write_frames(tmp_path, 500, np.random.default_rng(0))
    n = shard_frames(tmp_path / "f.fna", tmp_path / "f.faa", tmp_path / "shards", 10_000)
    assert n == int(np.ceil(tokens.sum() / 10_000))
    faa = sorted((tmp_path / "shards").glob("*.faa"))
    fna = sorted((tmp_path / "shards").glob("*.fna"))
    assert [p.stem for p in faa] == [p.stem for p in fna] == [f"{k:04d}" for k in range(n)]
    assert b"".join(p.read_bytes() for p in faa) == (tmp_path / "f.faa").read_bytes()
    assert b"".join(p.read_bytes() for p in fna) == (tmp_path / "f.fna").read_bytes()
    for a, b in zip(faa, fna):
        assert a.read_text().split("\n")[::2] == b.read_text().split("\n")[::2]


def test_rerun_replaces_shards_and_empty_input_gives_none(tmp_path):
    write_frames(tmp_path, 50, np.random.default_rng(1))
    shard_frames(tmp_path / "f.fna", tmp_path / "f.faa", tmp_path / "shards", 100)
    (tmp_path / "f.fna").write_text("")
    (tmp_path / "f.faa").write_text("")
    assert shard_frames(tmp_path / "f.fna", tmp_path / "f.faa", tmp_path / "shards", 100) == 0
    assert list((tmp_path / "shards").iterdir()) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_mismatched_frame_files(tmp_path):
    write_frames(tmp_path, 5, np.random.default_rng(2))
    (tmp_path / "f.fna").write_text(">other\nACGT\n")
    with pytest.raises(VirNucProError, match="same frames"):
        shard_frames(tmp_path / "f.fna", tmp_path / "f.faa", tmp_path / "shards", 100)
    assert not (tmp_path / "shards").exists()
