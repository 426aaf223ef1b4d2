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
    """One packed batch: the B real sequences first, then any padding sequences (`pad_to`).

    `index` (B,) maps the real sequences to input order; `seqlens` (S,) are the tokens of every sequence,
    padding included (S >= B), kept on the host so that pooling needs no device synchronisation.
    """

    index: np.ndarray  # (B,) int64
    input_ids: torch.Tensor  # (T,) int64
    cu_seqlens: torch.Tensor  # (S + 1,) int32
    max_seqlen: int
    seqlens: np.ndarray  # (S,) int64, host

    @property
    def num_tokens(self):
        return int(self.input_ids.shape[0])

    @property
    def num_real_tokens(self):
        return int(self.seqlens[: len(self.index)].sum())

    def kept(self, skip):
        """How many tokens are left when every sequence loses `skip` of its own."""
        return int(np.maximum(self.seqlens - skip, 0).sum())

    def _with(self, input_ids, cu_seqlens):
        return PackedBatch(self.index, input_ids, cu_seqlens, self.max_seqlen, self.seqlens)

    def pin_memory(self):
        return self._with(self.input_ids.pin_memory(), self.cu_seqlens.pin_memory())

    def to(self, device, non_blocking=True):
        return self._with(self.input_ids.to(device, non_blocking=non_blocking),
                          self.cu_seqlens.to(device, non_blocking=non_blocking))

    def pad_to(self, tokens):
        """This batch grown to exactly `tokens` tokens by padding sequences appended after the real ones,
        each at most `max_seqlen` long and made of the batch's first token; a batch already that long or
        longer is returned as it is. Every forward pass then multiplies matrices of one shape, so a
        sequence's numbers cannot depend on how many tokens its batch happened to hold."""
        extra = tokens - self.num_tokens
        if extra <= 0:
            return self
        width = max(self.max_seqlen, 1)
        pads = np.full(extra // width, width, dtype=np.int64)
        if extra % width:
            pads = np.append(pads, extra % width)
        filler = self.input_ids[:1].expand(extra)
        seqlens = np.concatenate([self.seqlens, pads])
        cu = np.zeros(seqlens.size + 1, dtype=np.int32)
        np.cumsum(seqlens, out=cu[1:])
        return PackedBatch(self.index, torch.cat([self.input_ids, filler]), torch.from_numpy(cu), self.max_seqlen,
                           seqlens)

    def split(self):
        """Two halves of this (host) batch's real sequences, padding dropped; for retrying after running
        out of memory."""
        b = len(self.index)
        if b < 2:
            raise ValueError("a batch of one sequence cannot be split")
        cu = self.cu_seqlens.cpu().numpy()
        halves = []
        for lo, hi in ((0, b // 2), (b // 2, b)):
            tokens = self.input_ids[cu[lo] : cu[hi]]
            seg = torch.from_numpy((cu[lo : hi + 1] - cu[lo]).astype(np.int32))
            lens = self.seqlens[lo:hi]
            halves.append(PackedBatch(self.index[lo:hi], tokens, seg, int(lens.max()), lens.copy()))
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
        seqlens=lens,
    )


def segment_ids(cu_seqlens, total):
    """(total,) int64: the sequence each packed token belongs to."""
    positions = torch.arange(total, device=cu_seqlens.device)
    return torch.searchsorted(cu_seqlens[1:].to(torch.int64), positions, right=True)


def segment_mean(hidden, cu_seqlens, skip_first, skip_last, n_kept=None):
    """Mean of each sequence's tokens, leaving out its first `skip_first` and last `skip_last` tokens.

    hidden (T, D) any float dtype; cu_seqlens (B + 1,) int32 on the same device; n_kept: the number of
    tokens kept over all sequences (`PackedBatch.kept`), computed here when not given (a device
    synchronisation on a GPU). Returns (B, D) float32: one gather and one segmented sum over the kept
    tokens, accumulated in float32; a sequence with no kept token gives NaN (as the mean of nothing does
    in the original).
    """
    b = cu_seqlens.shape[0] - 1
    cu = cu_seqlens.to(torch.int64)
    counts = (cu[1:] - cu[:-1] - skip_first - skip_last).clamp_min(0)  # (B,)
    kept_cu = torch.zeros(b + 1, dtype=torch.int64, device=hidden.device)
    torch.cumsum(counts, 0, out=kept_cu[1:])
    if n_kept is None:
        n_kept = int(kept_cu[-1])
    k = torch.arange(n_kept, device=hidden.device)
    seg = torch.searchsorted(kept_cu[1:], k, right=True)  # (n_kept,)
    src = k - kept_cu[seg] + cu[seg] + skip_first  # position of kept token k in the packed row
    sums = torch.segment_reduce(hidden[src].float(), "sum", lengths=counts, axis=0)  # (B, D)
    return sums / counts.unsqueeze(1).to(torch.float32)
