"""VirNucPro fragments and stop-free six-frame translations, vectorised with numpy.

Contract (the original `split_fasta_chunk` + `identify_seq`, quirks included):
- A sequence of length L gives n = ceil(L/S) fragments. With r = n*S - L, lo = int(r/n) and
  need = r - lo*(n-1), fragment k (0-based) starts at k*S - move_k, where move_k sums the first k
  steps of the list [lo+1]*need + [lo]*(n-1-need) + [0]; it is at most S long (clipped at L).
  Ids are `{seq_id}_chunk_{k+1}`. A length of 0 gives no fragment (how `prepare` leaves a sequence
  shorter than its minimum length uncut).
- Each fragment is upper-cased and translated in frames F1..F3 (offsets 0..2) and R1..R3 (offsets 0..2
  on the reverse complement; only A/C/G/T are complemented, other codes stay as they are). A codon
  holding anything but A/C/G/T is dropped; a frame with a stop codon, or with no codon left, is not
  kept. A kept frame's nucleotide slice is `strand[off : off + 3*len(protein) + 1]`, clipped at the
  fragment end, exactly as the original slices it.
Frames are returned fragment by fragment, each in the order F1, F2, F3, R1, R2, R3.
"""

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

BASES = b"TCAG"
AMINO = b"FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"

_CODE = np.full(256, 4, dtype=np.uint8)  # A/C/G/T -> 0..3, everything else -> 4
for _i, _b in enumerate(b"ACGT"):
    _CODE[_b] = _i
_CODE_BYTES = _CODE.tobytes()  # the same table for bytes.translate
_RC_CODE = np.array([3, 2, 1, 0, 4], dtype=np.uint8)  # complement of a base code
_COMPLEMENT_BYTES = bytes.maketrans(b"ACGT", b"TGCA")
# codon index in base 5: c0*25 + c1*5 + c2; any digit 4 marks a codon that is dropped (byte 0)
_CODON_AA = np.zeros(125, dtype=np.uint8)
for _i, _c0 in enumerate(BASES):
    for _j, _c1 in enumerate(BASES):
        for _k, _c2 in enumerate(BASES):
            _CODON_AA[_CODE[_c0] * 25 + _CODE[_c1] * 5 + _CODE[_c2]] = AMINO[_i * 16 + _j * 4 + _k]
STOP = ord("*")
FRAME_NAMES = ("F1", "F2", "F3", "R1", "R2", "R3")


def fragment_layout(lengths, size):
    """Original fragment starts and lengths for sequences of `lengths` (int array).

    Returns `(owner, number, start, length)`: for every fragment, the index of its sequence, its
    1-based number within it, its start in that sequence and its length.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n = -(-lengths // size)
    repeat = n * size - lengths
    lower = (repeat / np.maximum(n, 1)).astype(np.int64)  # int(repeat / num_chunks), as the original
    need = repeat - lower * (n - 1)
    owner = np.repeat(np.arange(len(lengths)), n)
    first = np.cumsum(n) - n
    k = np.arange(owner.size, dtype=np.int64) - first[owner]
    move = (lower[owner] + 1) * np.minimum(k, need[owner]) + lower[owner] * np.maximum(
        0, k - need[owner]
    )
    start = k * size - move
    return owner, k + 1, start, np.minimum(size, lengths[owner] - start)


@dataclass
class FrameBatch:
    """Kept frames of a run of fragments, in output order.

    `fragment`: index into the fragments given; `frame`: 0..5 (F1..R3); `protein` and `nucleotide`:
    the kept sequences as bytes.
    """

    fragment: np.ndarray
    frame: np.ndarray
    protein: list
    nucleotide: list


def encode(text, size):
    """Base codes of upper-case `text` bytes and of its complement, each padded on both sides.

    Codes are A/C/G/T -> 0..3 and anything else -> 4. Both arrays are `len(text) + 2 * size` long, with
    `size` codes of 4 before and after the text, so windows of `size` codes that reach past a fragment
    stay in bounds; position p of the text is index `size + p`.
    """
    pad = bytes([4]) * size
    fwd = np.frombuffer(pad + text.translate(_CODE_BYTES) + pad, dtype=np.uint8)
    return fwd, _RC_CODE[fwd]


def six_frames(text, codes, starts, lengths, size):
    """Kept frames of fragments `text[starts[i] : starts[i] + lengths[i]]`.

    `text`: upper-case bytes; `codes`: `encode(text, size)`; `starts`, `lengths`: int arrays,
    lengths <= size.
    """
    fwd_codes, comp_codes = codes
    fwd = sliding_window_view(fwd_codes, size)[size + starts]  # (F, S) one fragment per row
    # reverse complement: a window ending at the fragment's last base (index size + end - size), read
    # backwards
    rev = sliding_window_view(comp_codes, size)[starts + lengths][:, ::-1]
    short = np.flatnonzero(lengths < size)
    for i, n in zip(short.tolist(), lengths[short].tolist()):
        fwd[i, n:] = 4
        rev[i, n:] = 4
    found = []
    for s, strand in enumerate((fwd, rev)):
        aa = _translate3(strand)  # (F, 3, m): amino acid of codon j in frame offset o, 0 = dropped
        has_stop = (aa == STOP).any(axis=2)  # (F, 3)
        n_aa = np.count_nonzero(aa, axis=2)  # (F, 3)
        for off in range(3):
            keep = np.flatnonzero((n_aa[:, off] > 0) & ~has_stop[:, off])
            if keep.size:
                found.append((keep, 3 * s + off, aa[keep, off], n_aa[keep, off]))
    return _assemble(found, text, starts, lengths)


def _translate3(strand):
    """Amino acids of the three frames of every row of base codes `strand` (F, S) -> (F, 3, m)."""
    f, size = strand.shape
    m = -(-size // 3)
    index = np.full((f, 3 * m), 124, dtype=np.uint8)  # 124 = codon of three non-bases: dropped
    body = index[:, : size - 2]  # codon starting at every position
    np.multiply(strand[:, :-2], 25, out=body)
    body += strand[:, 1:-1] * np.uint8(5)
    body += strand[:, 2:]
    by_frame = np.ascontiguousarray(index.reshape(f, m, 3).transpose(0, 2, 1))  # (F, 3, m)
    return _CODON_AA[by_frame]


def _assemble(found, text, starts, lengths):
    frag, frame, prot, nuc = [], [], [], []
    for keep, fr, aa, n_aa in found:
        flat = aa[aa != 0].tobytes()
        ends = np.cumsum(n_aa)
        prot.extend(flat[i:j] for i, j in zip((ends - n_aa).tolist(), ends.tolist()))
        off = fr % 3
        a, n = starts[keep], lengths[keep]
        stop = np.minimum(off + 3 * n_aa + 1, n)
        if fr < 3:
            nuc.extend(text[i:j] for i, j in zip((a + off).tolist(), (a + stop).tolist()))
        else:  # slice [off, stop) of the reverse complement = reverse complement of this forward slice
            lo, hi = (a + n - stop).tolist(), (a + n - off).tolist()
            nuc.extend(text[i:j].translate(_COMPLEMENT_BYTES)[::-1] for i, j in zip(lo, hi))
        frag.append(keep)
        frame.append(np.full(keep.size, fr, dtype=np.int8))
    if not frag:
        return FrameBatch(np.zeros(0, np.int64), np.zeros(0, np.int8), [], [])
    frag, frame = np.concatenate(frag), np.concatenate(frame)
    order = np.lexsort((frame, frag))
    return FrameBatch(frag[order], frame[order], [prot[i] for i in order], [nuc[i] for i in order])
