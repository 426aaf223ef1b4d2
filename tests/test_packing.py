"""Packer, padding, segment pooling and the packed runner (no model needed)."""

import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from virnucpro.errors import VirNucProError
from virnucpro.models.packing import PackedBatch, pack, plan_batches, segment_mean
from tests.packed_runs import embed_packed
from virnucpro.models.runner import Task, interleave, run_packed

# ------------------------------------------------------------------------------------ plan_batches


@pytest.mark.parametrize("seed", range(5))
def test_plan_batches_is_a_greedy_partition_within_budget(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 300, size=500)
    lengths[rng.integers(0, 500, size=3)] = 1500  # longer than the budget
    budget = 1024
    batches = plan_batches(lengths, budget)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))  # every sequence exactly once
    # length-sorted across the whole plan, ties in input order
    assert np.array_equal(flat, np.argsort(lengths, kind="stable"))
    for i, b in enumerate(batches):
        total = lengths[b].sum()
        if len(b) == 1 and lengths[b[0]] > budget:
            continue  # an over-budget sequence goes alone
        assert total <= budget
        if i + 1 < len(batches):  # greedy: the next sequence would not have fitted
            assert total + lengths[batches[i + 1][0]] > budget


def test_plan_batches_edge_cases():
    assert plan_batches([], 100) == []
    assert [b.tolist() for b in plan_batches([5, 200, 5], 100)] == [[0, 2], [1]]
    assert [b.tolist() for b in plan_batches([50, 50, 50], 100)] == [[0, 1], [2]]
    assert [b.tolist() for b in plan_batches([7], 3)] == [[0]]
    with pytest.raises(ValueError):
        plan_batches([0, 3], 10)


# ------------------------------------------------------------------------------------ pack / split


def test_pack_layout_and_split():
    arrays = [np.array([0, 5, 6, 2]), np.array([0, 7, 2]), np.array([0, 2]), np.array([0, 9, 9, 9, 9, 2])]
    b = pack(arrays, [10, 3, 7, 1])
    assert b.input_ids.dtype == torch.int64 and b.cu_seqlens.dtype == torch.int32
    assert b.input_ids.tolist() == [0, 5, 6, 2, 0, 7, 2, 0, 2, 0, 9, 9, 9, 9, 2]
    assert b.cu_seqlens.tolist() == [0, 4, 7, 9, 15]
    assert b.max_seqlen == 6 and b.index.tolist() == [10, 3, 7, 1]
    left, right = b.split()
    assert left.index.tolist() == [10, 3] and left.input_ids.tolist() == [0, 5, 6, 2, 0, 7, 2]
    assert left.cu_seqlens.tolist() == [0, 4, 7] and left.max_seqlen == 4
    assert right.index.tolist() == [7, 1] and right.cu_seqlens.tolist() == [0, 2, 8]
    assert right.input_ids.tolist() == [0, 2, 0, 9, 9, 9, 9, 2] and right.max_seqlen == 6
    moved = b.to("cpu")
    assert isinstance(moved, PackedBatch) and torch.equal(moved.input_ids, b.input_ids)


def test_pad_to_appends_sequences_no_longer_than_the_longest():
    b = pack([np.array([0, 5, 6, 2]), np.array([0, 7, 2])], [4, 9])
    padded = b.pad_to(16)
    assert padded.num_tokens == 16 and padded.num_real_tokens == 7
    assert padded.index.tolist() == [4, 9]  # only the real sequences have an input position
    assert padded.input_ids[:7].tolist() == b.input_ids.tolist() and set(padded.input_ids[7:].tolist()) == {0}
    assert padded.cu_seqlens.tolist() == [0, 4, 7, 11, 15, 16]  # 4 + 4 + 1 padding tokens
    assert padded.seqlens.tolist() == [4, 3, 4, 4, 1] and padded.max_seqlen == 4
    assert padded.kept(2) == 2 + 1 + 2 + 2 and b.pad_to(7) is b and b.pad_to(3) is b
    left, right = padded.split()  # halves of the real sequences only
    assert left.num_tokens == 4 and right.num_tokens == 3


def test_segment_mean_skips_padding_shorter_than_its_skip():
    b = pack([np.array([0, 5, 6, 2]), np.array([0, 7, 2])], [0, 1]).pad_to(9)  # padding of 2
    hidden = torch.arange(9, dtype=torch.float32)[:, None].repeat(1, 2)
    got = segment_mean(hidden, b.cu_seqlens, 1, 1, b.kept(2))
    assert got[:2, 0].tolist() == [1.5, 5.0] and torch.isnan(got[2]).all()


# ------------------------------------------------------------------------------------ segment_mean


@pytest.mark.parametrize("skip", [(1, 1), (0, 0), (2, 0)])
def test_segment_mean_matches_a_loop(skip):
    rng = np.random.default_rng(1)
    lens = rng.integers(3, 40, size=17)
    cu = torch.from_numpy(np.concatenate([[0], np.cumsum(lens)]).astype(np.int32))
    hidden = torch.randn(int(lens.sum()), 8, dtype=torch.float64).to(torch.bfloat16)
    got = segment_mean(hidden, cu, *skip)
    assert got.dtype == torch.float32 and got.shape == (len(lens), 8)
    first, last = skip
    want = torch.stack(
        [hidden[cu[i] + first : cu[i + 1] - last].double().mean(0) for i in range(len(lens))]
    ).float()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_segment_mean_of_nothing_is_nan():
    cu = torch.tensor([0, 2, 5], dtype=torch.int32)  # first sequence: <cls> <eos> only
    got = segment_mean(torch.ones(5, 3), cu, 1, 1)
    assert torch.isnan(got[0]).all() and torch.equal(got[1], torch.ones(3))


# ------------------------------------------------------------------------------------ runner


def _toy_tokenize(seqs):
    return [np.array([1] + [ord(c) for c in s] + [2], dtype=np.int64) for s in seqs]


def _toy_forward(batch):
    """Per-sequence features that depend only on that sequence's own tokens."""
    t = batch.input_ids.to(torch.float64)
    feats = torch.stack([t, t**2, torch.sin(t)], dim=1)
    return segment_mean(feats, batch.cu_seqlens, 1, 1)


def _toy_expected(seqs):
    out = []
    for s in seqs:
        t = np.array([ord(c) for c in s], dtype=np.float64)
        out.append([t.mean(), (t**2).mean(), np.sin(t).mean()])
    return np.array(out, dtype=np.float32)


def _toy_data(n, seed=0):
    rng = np.random.default_rng(seed)
    seqs = ["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), rng.integers(1, 60))) for _ in range(n)]
    return [f"seq{i}" for i in range(n)], seqs


@pytest.mark.parametrize("budget", [16, 100, 10_000])
def test_runner_returns_rows_in_input_order(budget):
    ids, seqs = _toy_data(300)
    got = embed_packed(ids, seqs, _toy_tokenize, _toy_forward, 3, torch.device("cpu"), budget, "toy")
    assert got.dtype == np.float32 and got.shape == (300, 3)
    np.testing.assert_allclose(got, _toy_expected(seqs), rtol=1e-6, atol=1e-6)


def test_runner_with_given_lengths_and_empty_input():
    ids, seqs = _toy_data(50)
    lengths = np.array([len(s) + 2 for s in seqs])
    got = embed_packed(ids, seqs, _toy_tokenize, _toy_forward, 3, "cpu", 200, "toy", lengths=lengths)
    np.testing.assert_allclose(got, _toy_expected(seqs), rtol=1e-6, atol=1e-6)
    empty = embed_packed([], [], _toy_tokenize, _toy_forward, 3, "cpu", 200, "toy")
    assert empty.shape == (0, 3) and empty.dtype == np.float32


def test_runner_splits_batches_that_run_out_of_memory(caplog):
    ids, seqs = _toy_data(200, seed=3)
    seen = []

    def forward(batch):
        if batch.num_tokens > 120:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        seen.extend(batch.index.tolist())
        return _toy_forward(batch)

    with caplog.at_level(logging.WARNING, logger="virnucpro"):
        got = embed_packed(ids, seqs, _toy_tokenize, forward, 3, "cpu", 1000, "toy")
    np.testing.assert_allclose(got, _toy_expected(seqs), rtol=1e-6, atol=1e-6)
    assert sorted(seen) == list(range(200))  # each sequence computed exactly once
    assert "splitting it in two" in caplog.text


def test_runner_runs_the_halves_of_a_split_batch_before_the_next_batch():
    ids, seqs = _toy_data(40, seed=7)
    runs = []

    def forward(batch):
        runs.append(batch.index.tolist())
        if len(runs) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return _toy_forward(batch)

    got = embed_packed(ids, seqs, _toy_tokenize, forward, 3, "cpu", 200, "toy")
    np.testing.assert_allclose(got, _toy_expected(seqs), rtol=1e-6, atol=1e-6)
    first = runs[0]
    assert runs[1] + runs[2] == first and len(runs[1]) == len(first) // 2


def test_runner_gives_up_when_one_sequence_does_not_fit():
    ids, seqs = _toy_data(20, seed=4)
    seqs[7] = "W" * 500

    def forward(batch):
        if batch.num_tokens > 300:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return _toy_forward(batch)

    with pytest.raises(VirNucProError, match="'seq7'.*does not fit"):
        embed_packed(ids, seqs, _toy_tokenize, forward, 3, "cpu", 10_000, "toy")


def test_runner_stops_on_a_non_finite_embedding():
    ids, seqs = _toy_data(100, seed=5)
    seqs[42] = "AC!DE"  # '!' (33) becomes NaN in this forward

    def forward(batch):
        out = _toy_forward(batch)
        bad = torch.zeros(out.shape[0], dtype=torch.bool)
        cu = batch.cu_seqlens.tolist()
        for i in range(len(batch.index)):
            bad[i] = bool((batch.input_ids[cu[i] : cu[i + 1]] == 33).any())
        out[bad] = float("nan")
        return out

    with pytest.raises(VirNucProError, match="'seq42'"):
        embed_packed(ids, seqs, _toy_tokenize, forward, 3, "cpu", 64, "toy")


def test_runner_reraises_tokenizer_errors():
    ids, seqs = _toy_data(30, seed=6)

    def tokenize(batch):
        if any("W" in s for s in batch):
            raise ValueError("tokenizer broke")
        return _toy_tokenize(batch)

    lengths = np.array([len(s) + 2 for s in seqs])
    with pytest.raises(ValueError, match="tokenizer broke"):
        embed_packed(ids, seqs, tokenize, _toy_forward, 3, "cpu", 64, "toy", lengths=lengths)


# ------------------------------------------------------------------------------------ attention


@pytest.mark.parametrize("alibi", [False, True])
def test_cpu_attention_backends_match_a_naive_softmax(alibi):
    from virnucpro.models.attention import varlen_attention

    torch.manual_seed(0)
    lens = [1, 5, 17, 2, 30]
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lens)]), dtype=torch.int32)
    h, d = 4, 8
    q, k, v = (torch.randn(sum(lens), h, d, dtype=torch.float64) for _ in range(3))
    slopes = torch.tensor([2.0**-1, 2.0**-2, 2.0**-3, 2.0**-0.5]) if alibi else None
    scale = d**-0.5
    want = torch.empty_like(q)
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        scores = torch.einsum("ihd,jhd->hij", q[s:e], k[s:e]) * scale  # (H, L, L)
        if alibi:
            pos = torch.arange(e - s)
            scores = scores - slopes.double()[:, None, None] * (pos[None, :] - pos[:, None]).abs()
        want[s:e] = torch.einsum("hij,jhd->ihd", scores.softmax(-1), v[s:e])
    for backend in ("reference", "padded_sdpa"):
        got = varlen_attention(q, k, v, cu, max(lens), scale, alibi_slopes=slopes, backend=backend)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_fallback_only_on_a_build_failure(caplog):
    """Generated code that could not be built is logged and replaced; out of memory, a device fault or
    a bug in the forward pass is raised again, unchanged."""
    from torch._inductor.exc import InductorError

    from virnucpro.models.generated import fall_back

    for exc in (torch.cuda.OutOfMemoryError("CUDA out of memory"), RuntimeError("CUDA error: an illegal memory access"),
                ValueError("shapes do not match"), RuntimeError("inductor: out of memory while autotuning")):
        with pytest.raises(type(exc)) as raised:
            fall_back(exc, "torch.compile", "ESM-2")
        assert raised.value is exc
    try:
        try:
            raise InductorError(RuntimeError("no C compiler\nmore"), None)
        except InductorError as inner:
            raise RuntimeError("compiling failed") from inner
    except RuntimeError as wrapped:
        with caplog.at_level("WARNING", logger="virnucpro"):
            fall_back(wrapped, "torch.compile", "DNABERT-S")
    assert "torch.compile failed (compiling failed); running DNABERT-S on plain torch ops" in caplog.text


# ------------------------------------------------------------------------------------ several tasks


def test_interleave_spreads_each_task_over_the_run():
    plans = [[np.array([i]) for i in range(6)], [np.array([10]), np.array([11])]]
    order = [(t, int(b[0])) for t, b in interleave(plans)]
    assert sorted(order) == sorted([(0, i) for i in range(6)] + [(1, 10), (1, 11)])
    assert [b for t, b in order if t == 0] == list(range(6))  # each task keeps its own order
    assert order.index((1, 10)) == 2 and order.index((1, 11)) == 6  # at 1/4 and 3/4 of the run
    assert interleave([[], []]) == []


def test_two_tasks_in_one_run_each_get_their_rows():
    ids, seqs = _toy_data(120, seed=7)
    other_ids, other = _toy_data(40, seed=8)
    tasks = [Task("a", ids, seqs, _toy_tokenize, _toy_forward, 3, 64),
             Task("b", other_ids, other, _toy_tokenize, _toy_forward, 3, 200)]
    got_a, got_b = run_packed(tasks, "cpu")
    np.testing.assert_allclose(got_a, _toy_expected(seqs), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_b, _toy_expected(other), rtol=1e-6, atol=1e-6)
    assert run_packed([Task("none", [], [], _toy_tokenize, _toy_forward, 3, 64)], "cpu")[0].shape == (0, 3)


def _row_count_rounding_forward(batch):
    """A forward whose rows depend on how many rows the batch has, in their last bits, as a BLAS's may
    (small row counts take other code paths): the condition is constructed, so that a batch not padded
    to the budget gives other bits on every machine, not only on one whose BLAS happens to round so."""
    t = batch.input_ids.to(torch.float32)
    x = torch.stack([torch.sin(t * (k + 1)) for k in range(256)], dim=1)  # (T, 256)
    w = torch.linspace(-1, 1, 256 * 64).reshape(64, 256)
    y = F.linear(x, w) * (1 + t.shape[0] * 2.0**-20)  # another factor for each row count
    return segment_mean(y, batch.cu_seqlens, 1, 1)


def test_a_sequence_gets_the_same_bits_in_any_batch():
    """Constructed condition (`_row_count_rounding_forward`): every batch is padded to the budget."""
    ids, seqs = _toy_data(200, seed=9)
    ids, seqs = ["short", *ids], ["ACDEF", *seqs]  # alone: a batch of 7 tokens unless padded
    forward = _row_count_rounding_forward
    whole = embed_packed(ids, seqs, _toy_tokenize, forward, 64, "cpu", 512, "toy")
    alone = embed_packed(ids[:1], seqs[:1], _toy_tokenize, forward, 64, "cpu", 512, "toy")
    mixed = embed_packed(ids[::-1][:50], seqs[::-1][:50], _toy_tokenize, forward, 64, "cpu", 512, "toy")
    assert np.array_equal(alone, whole[:1])
    assert np.array_equal(mixed, whole[::-1][:50])


def test_compiling_prints_no_torchscript_deprecation():
    """torch.compile's first call imports torch/utils/mkldnn.py, whose 14 `@torch.jit.script_method`
    decorators each warn (torch 2.13); `backend.compiled` keeps exactly those out. A fresh interpreter,
    because torch imports that module once per process."""
    code = "from virnucpro.models.generated import compiled\ncompiled(lambda x: x * 2)\n"  # the import happens here
    proc = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
