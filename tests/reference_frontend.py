"""A straightforward per-codon implementation of the original VirNucPro front end.

Written from the original `split_fasta_chunk` / `identify_seq` rules, one fragment, one codon at a
time, with no shared code with `virnucpro.frames`. Tests compare the vectorised front end against it
on generated inputs; `benchmarks/prepare_throughput.py` times it as the baseline.
"""

import math

CODON_TABLE = {
    a + b + c: aa
    for (a, b, c), aa in zip(
        ((x, y, z) for x in "TCAG" for y in "TCAG" for z in "TCAG"),
        "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    )
}


def chunks(seq_id, seq, size):
    """The original's fragments of one sequence: list of (fragment_id, fragment)."""
    n = math.ceil(len(seq) / size)
    repeat = n * size - len(seq)
    lower = int(repeat / n)
    need = repeat - lower * (n - 1)
    steps = [lower + 1] * need + [lower] * (n - 1 - need) + [0]
    out, move = [], 0
    for a, step in zip(range(0, len(seq), size), steps):
        out.append((f"{seq_id}_chunk_{a // size + 1}", seq[a - move : a - move + size]))
        move += step
    return out


def reverse_complement(seq):
    return seq.translate(str.maketrans("ACGT", "TGCA"))[::-1]


def kept_frames(frag_id, fragment):
    """The original's kept frames of one fragment: list of (frame_id, nucleotide, protein)."""
    seq = fragment.upper()
    out = []
    for strand, name in ((seq, "F"), (reverse_complement(seq), "R")):
        for off in range(3):
            protein = "".join(CODON_TABLE.get(strand[i : i + 3], "") for i in range(off, len(strand) - 2, 3))
            if "*" in protein or not protein:
                continue
            out.append((f"{frag_id}{name}{off + 1}", strand[off : off + 3 * len(protein) + 1], protein))
    return out


def front_end(records, size):
    """All kept frames of `records` [(id, sequence)], in output order."""
    return [f for rid, seq in records for cid, c in chunks(rid, seq, size) for f in kept_frames(cid, c)]
