"""Packed batches: sequences concatenated into one token row, delimited by `cu_seqlens`.

A packed batch of B sequences holds `input_ids` (T,) int64, the tokens of all sequences one after the
other, and `cu_seqlens` (B + 1,) int32, the offsets where each sequence starts (`cu_seqlens[0] == 0`,
`cu_seqlens[B] == T`); sequence i occupies `[cu_seqlens[i], cu_seqlens[i + 1])`. No padding is used.
"""

from dataclasses import dataclass

import numpy as np
import torch


def plan_batches(lengths, max_tokens):
    """Group sequences into batches of at most `max_tokens` tokens.

    `lengths` (N,) are tokens per sequence, special tokens included. Sequences are sorted by length
    (stable, so ties keep input order) and cut greedily: a batch takes the next sequences while their
    total stays <= `max_tokens`; a sequence longer than the budget forms a batch of its own.
    Returns a list of int64 arrays of input-order indices, shortest sequences first.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    if lengths.size and lengths.min() < 1:
        raise ValueError("every sequence needs at least one token")
    order = np.argsort(lengths, kind="stable")
    cum = np.concatenate([[0], np.cumsum(lengths[order])])  # (N + 1,)
    batches, start, n = [], 0, len(order)
    while start < n:
        # the greedy end: the furthest `end` with cum[end] - cum[start] <= max_tokens, at least one sequence
        end = int(np.searchsorted(cum, cum[start] + max_tokens, side="right")) - 1
        end = max(end, start + 1)
        batches.append(order[start:end])
        start = end
    return batches


@dataclass
class PackedBatch:
    """One packed batch. `index` (B,) maps batch rows to input order."""

    index: np.ndarray  # (B,) int64
    input_ids: torch.Tensor  # (T,) int64
    cu_seqlens: torch.Tensor  # (B + 1,) int32
    max_seqlen: int

    @property
    def num_tokens(self):
        return int(self.input_ids.shape[0])

    def pin_memory(self):
        return PackedBatch(self.index, self.input_ids.pin_memory(), self.cu_seqlens.pin_memory(), self.max_seqlen)

    def to(self, device, non_blocking=True):
        return PackedBatch(
            self.index,
            self.input_ids.to(device, non_blocking=non_blocking),
            self.cu_seqlens.to(device, non_blocking=non_blocking),
            self.max_seqlen,
        )

    def split(self):
        """Two halves of this (host) batch, as packed batches; for retrying after running out of memory."""
        b = len(self.index)
        if b < 2:
            raise ValueError("a batch of one sequence cannot be split")
        cu = self.cu_seqlens.cpu().numpy()
        halves = []
        for lo, hi in ((0, b // 2), (b // 2, b)):
            tokens = self.input_ids[cu[lo] : cu[hi]]
            seg = torch.from_numpy((cu[lo : hi + 1] - cu[lo]).astype(np.int32))
            halves.append(PackedBatch(self.index[lo:hi], tokens, seg, int(np.diff(cu[lo : hi + 1]).max())))
        return halves


def pack(token_arrays, index):
    """Pack `token_arrays` (one 1-D integer array per sequence, in batch order) into a PackedBatch.

    `index` (B,) gives each array's position in the input; it is kept alongside, not used for ordering.
    """
    if len(token_arrays) != len(index):
        raise ValueError("token_arrays and index differ in length")
    if not token_arrays:
        raise ValueError("cannot pack an empty batch")
    lens = np.fromiter((len(t) for t in token_arrays), dtype=np.int64, count=len(token_arrays))
    cu = np.zeros(len(lens) + 1, dtype=np.int32)
    np.cumsum(lens, out=cu[1:])
    ids = np.concatenate(token_arrays).astype(np.int64, copy=False)
    return PackedBatch(
        index=np.asarray(index, dtype=np.int64),
        input_ids=torch.from_numpy(ids),
        cu_seqlens=torch.from_numpy(cu),
        max_seqlen=int(lens.max()),
    )


def segment_ids(cu_seqlens, total):
    """(total,) int64: the sequence each packed token belongs to."""
    positions = torch.arange(total, device=cu_seqlens.device)
    return torch.searchsorted(cu_seqlens[1:].to(torch.int64), positions, right=True)


def segment_mean(hidden, cu_seqlens, skip_first, skip_last):
    """Mean of each sequence's tokens, leaving out its first `skip_first` and last `skip_last` tokens.

    hidden (T, D) any float dtype; cu_seqlens (B + 1,) int32 on the same device. Returns (B, D) float32.
    One gather and one segmented sum over the kept tokens, accumulated in float32, without host sync;
    a sequence with no kept token gives NaN (as the mean of nothing does in the original).
    """
    total = hidden.shape[0]
    b = cu_seqlens.shape[0] - 1
    skip = skip_first + skip_last
    cu = cu_seqlens.to(torch.int64)
    counts = (cu[1:] - cu[:-1] - skip).clamp_min(0)  # (B,)
    kept_cu = torch.zeros(b + 1, dtype=torch.int64, device=hidden.device)
    torch.cumsum(counts, 0, out=kept_cu[1:])
    # every sequence has at least `skip` tokens in practice, so T - B * skip tokens are kept
    n_kept = total - b * skip
    k = torch.arange(n_kept, device=hidden.device)
    seg = torch.searchsorted(kept_cu[1:], k, right=True)  # (n_kept,)
    src = k - kept_cu[seg] + cu[seg] + skip_first  # position of kept token k in the packed row
    sums = torch.segment_reduce(hidden[src].float(), "sum", lengths=counts, axis=0)  # (B, D)
    return sums / counts.unsqueeze(1).to(torch.float32)
