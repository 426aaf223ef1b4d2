"""The input sequences called viral, as FASTA with each record's full original header.

`write_viral_fasta` copies from the sample's input (FASTA or FASTQ, plain or gzip) every record whose
call is `viral`: the header line as it is in the input (id and description, without the leading `>` or
`@` and the line end), the sequence in its original case, 60 bases per line. The input must match the
manifest record for record (id and length); anything else means it changed since `prepare` ran.
"""

import itertools

from virnucpro.errors import VirNucProError
from virnucpro.seqio import open_binary, read_sequences

WIDTH = 60


def read_headers(path):
    """Yield the full header (bytes) of every record, in order, reading the file as `read_sequences` does.

    Only for files that `read_sequences` accepts: it checks the content, this only finds the headers.
    """
    with open_binary(path) as fh:
        lines = iter(fh)
        for line in lines:
            line = line.lstrip(b" \t\r\n")
            if line:
                break
        else:
            return
        if line[:1] == b"@":
            yield from _fastq_headers(line, lines)
        else:
            yield from (h[1:].rstrip(b"\r\n") for h in itertools.chain([line], lines) if h[:1] == b">")


def _fastq_headers(header, lines):
    while header is not None:
        yield header[1:].rstrip(b"\r\n")
        for _ in range(3):  # sequence, '+', quality
            next(lines, b"")
        header = next((line for line in lines if line.strip()), None)


def write_viral_fasta(path, fasta, table):
    """Write the sequences of `table` (the per-sequence table) called viral; returns how many."""
    ids, lengths, viral = table["sequence_id"], table["length"], table["call"] == "viral"
    n = 0
    with open(path, "wb") as out:
        i = -1
        for i, ((rid, seq), header) in enumerate(zip(read_sequences(fasta), read_headers(fasta))):
            if i >= len(ids) or rid != ids[i] or len(seq) != lengths[i]:
                expected = f"'{ids[i]}' ({lengths[i]} bp)" if i < len(ids) else "no more records"
                raise VirNucProError(
                    f"{fasta}: record {i + 1} is '{rid}' ({len(seq)} bp) but the manifest expects {expected}; "
                    "the input changed since `prepare` ran"
                )
            if header.decode("utf-8").split(None, 1)[0] != rid:
                raise VirNucProError(f"{fasta}: record {i + 1} '{rid}': header {header[:80]!r} not understood")
            if viral[i]:
                out.write(b">" + header + b"\n")
                out.writelines(seq[j : j + WIDTH] + b"\n" for j in range(0, len(seq), WIDTH))
                n += 1
        if i + 1 != len(ids):
            raise VirNucProError(f"{fasta}: {i + 1} records, but the manifest lists {len(ids)}")
    return n
