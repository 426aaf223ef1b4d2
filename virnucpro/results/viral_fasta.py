"""The input sequences called viral, as FASTA with each record's full original header.

`write_viral_fasta` copies from the sample's input (FASTA or FASTQ, plain or gzip) every record whose
call is `viral`: the header line as it is in the input (id and description, without the leading `>` or
`@` and the line end), the sequence in its original case, 60 bases per line. The input must match the
manifest record for record (id and length); anything else means it changed since `prepare` ran.
"""

from virnucpro.errors import VirNucProError
from virnucpro.io.seqio import MAX_RECORD_BP, read_sequences

WIDTH = 60


def write_viral_fasta(path, fasta, table, max_bp=MAX_RECORD_BP):
    """Write the sequences of `table` (the per-sequence table) called viral; returns how many."""
    ids, lengths, viral = table["sequence_id"], table["length"], table["call"] == "viral"
    n = 0
    with open(path, "wb") as out:
        i = -1
        for i, (rid, seq, header) in enumerate(read_sequences(fasta, max_bp=max_bp, headers=True)):
            if i >= len(ids) or rid != ids[i] or len(seq) != lengths[i]:
                expected = f"'{ids[i]}' ({lengths[i]} bp)" if i < len(ids) else "no more records"
                raise VirNucProError(
                    f"{fasta}: record {i + 1} is '{rid}' ({len(seq)} bp) but the manifest expects {expected}; "
                    "the input changed since `prepare` ran"
                )
            if viral[i]:
                out.write(b">" + header + b"\n")
                out.writelines(seq[j : j + WIDTH] + b"\n" for j in range(0, len(seq), WIDTH))
                n += 1
        if i + 1 != len(ids):
            raise VirNucProError(f"{fasta}: {i + 1} records, but the manifest lists {len(ids)}")
    return n
