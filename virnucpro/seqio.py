"""Streaming, validating sequence readers.

`read_sequences(path)` reads FASTA or FASTQ, plain or gzip, recognised from the content (gzip magic
bytes; then the first non-blank character, '>' or '@'), never from the file name. It yields one
`(id, sequence)` pair per record, where `id` is the first word of the header (as Biopython's
`record.id`) and `sequence` is the record's bytes with line breaks and blanks removed, case kept.
Memory holds one record at a time: it grows with the longest record, never with the file.

Every problem raises `InputError` naming the file, the record and the problem: empty input, a record
without id or sequence, characters that are not IUPAC nucleotide codes, duplicate ids, a FASTQ
quality line of the wrong length, an unreadable gzip stream, binary or non-FASTA content.

`read_fasta(path)` is the light reader for the project's own FASTA files (frames written by `prepare`):
same parsing, no nucleotide check, empty files allowed, sequences returned as `str`.
"""

import gzip
import zlib

from virnucpro.errors import InputError

GZIP_MAGIC = b"\x1f\x8b"
NUCLEOTIDE_CODES = b"ACGTUNRYSWKMBDHVacgtunryswkmbdhv"
BLANKS = b" \t\r\n\v\f"


def open_binary(path):
    """Open `path` for binary reading, decompressing gzip when its first bytes say so."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    if magic == GZIP_MAGIC:
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_sequences(path, check_nucleotides=True, allow_empty=False):
    """Yield `(id, sequence_bytes)` for every record of a FASTA/FASTQ file; see the module docstring.

    `allow_empty`: a file with no record yields nothing instead of raising.
    """
    seen = set()
    n = 0
    with open_binary(path) as fh:
        try:
            for rid, seq in _records(fh, path):
                if rid in seen:
                    raise InputError(path, "duplicate sequence id", record=rid)
                seen.add(rid)
                if check_nucleotides:
                    check_nucleotide_codes(path, rid, seq)
                n += 1
                yield rid, seq
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(path, f"unreadable compressed data ({exc})") from None
    if n == 0 and not allow_empty:
        raise InputError(path, "no sequences (empty input)")


def read_fasta(path):
    """Yield `(id, sequence_str)` from a FASTA file written by this project (no nucleotide check).

    An empty file (a sample or shard without frames) yields nothing.
    """
    for rid, seq in read_sequences(path, check_nucleotides=False, allow_empty=True):
        yield rid, seq.decode("ascii")


def check_nucleotide_codes(path, rid, seq):
    bad = seq.translate(None, NUCLEOTIDE_CODES)
    if bad:
        pos = seq.index(bad[:1]) + 1
        raise InputError(
            path, f"character {chr(bad[0])!r} at position {pos} is not a nucleotide code", record=rid
        )


def _records(fh, path):
    first = _first_content_byte(fh, path)
    if first is None:
        return
    if first == b">":
        yield from _fasta_records(fh, path)
    elif first == b"@":
        yield from _fastq_records(fh, path)
    else:
        raise InputError(path, f"not FASTA or FASTQ (starts with {first!r})")


def _first_content_byte(fh, path):
    """Peek at the first non-blank byte without consuming the line it starts."""
    while True:
        byte = fh.peek(1)[:1] if hasattr(fh, "peek") else b""
        if not byte:
            return None
        if byte in b" \t\r\n":
            fh.read(1)
            continue
        return byte


def _parse_header(path, line, number):
    try:
        header = line[1:].rstrip(b"\r\n").decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(path, f"header on line {number} is not text (binary data?)") from None
    words = header.split(None, 1)
    if not words:
        raise InputError(path, f"record on line {number} has no id")
    return words[0]


def _fasta_records(fh, path):
    rid, lines, number = None, [], 0
    for number, line in enumerate(fh, start=1):
        if line[:1] == b">":
            if rid is not None:
                yield rid, _join(path, rid, lines)
            rid, lines = _parse_header(path, line, number), []
        else:
            lines.append(line)
    if rid is not None:
        yield rid, _join(path, rid, lines)


def _join(path, rid, lines):
    seq = b"".join(lines).translate(None, BLANKS)
    if not seq:
        raise InputError(path, "record has no sequence", record=rid)
    return seq


def _fastq_records(fh, path):
    number = 0
    while True:
        header = fh.readline()
        number += 1
        if not header.strip():
            if not header:
                return
            continue
        if header[:1] != b"@":
            raise InputError(path, f"line {number}: FASTQ record does not start with '@'")
        rid = _parse_header(path, header, number)
        seq, plus, qual = fh.readline(), fh.readline(), fh.readline()
        number += 3
        if plus[:1] != b"+":
            raise InputError(path, "FASTQ record has no '+' separator line", record=rid)
        seq, qual = seq.translate(None, BLANKS), qual.rstrip(b"\r\n")
        if not seq:
            raise InputError(path, "record has no sequence", record=rid)
        if len(qual) != len(seq):
            raise InputError(
                path, f"quality length {len(qual)} differs from sequence length {len(seq)}", record=rid
            )
        yield rid, seq
