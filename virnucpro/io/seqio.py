"""Streaming, validating sequence readers.

`read_sequences(path)` reads FASTA or FASTQ, plain or compressed with gzip, bzip2 or xz, recognised from
the content (the compression's magic bytes; then the first non-blank character, '>' or '@'), never
from the file name; zstd-compressed input is named as such and refused. It yields one `(id, sequence)`
pair per record, where `id` is the first word of the header (as Biopython's `record.id`) and `sequence`
is the record's bytes with line breaks and blanks removed, case kept. The file is read in pieces of at
most `PIECE` bytes and memory holds one record at a time: a record longer than `max_bp` (default
`MAX_RECORD_BP`, 100 Mbp) or a header longer than `MAX_HEADER` is refused as soon as it grows past the
limit, so memory stays bounded on any input, a file without line breaks included.

Every problem raises `InputError` naming the file, the record and the problem: empty input, a record
without id or sequence, characters that are not IUPAC nucleotide codes, duplicate ids, a FASTQ
quality line of the wrong length, an unreadable compressed stream, a record or header over the limit,
binary or non-FASTA content.

`read_fasta(path)` is the light reader for the project's own FASTA files (frames written by `prepare`):
same parsing, no nucleotide check, empty files allowed, sequences returned as `str`. `read_frames(path)`
reads the project's own two-line records (`>header` and the sequence on one line: the frames `prepare`
writes, the shards the plan writes) at the speed of plain line reading; any other layout is an error.
"""

import bz2
import gzip
import io
import lzma
import zlib

from virnucpro.errors import InputError, VirNucProError

COMPRESSIONS = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}  # magic -> opener
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
NUCLEOTIDE_CODES = b"ACGTUNRYSWKMBDHVacgtunryswkmbdhv"
BLANKS = b" \t\r\n\v\f"
from virnucpro.defaults import MAX_RECORD_BP  # noqa: E402 (re-exported: the readers' default bound)
MAX_HEADER = 1 << 20  # bytes of one header line
PIECE = 1 << 20  # bytes read at once from a line
_READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)


def open_binary(path):
    """Open `path` for binary reading, decompressing gzip, bzip2 or xz when its first bytes say so."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    if magic.startswith(ZSTD_MAGIC):
        raise InputError(path, "zstd-compressed input is not supported: decompress it (zstd -d) or use gzip")
    for start, opener in COMPRESSIONS.items():
        if magic.startswith(start):
            return io.BufferedReader(opener(path, "rb"), buffer_size=PIECE)
    return open(path, "rb")


def read_sequences(path, check_nucleotides=True, allow_empty=False, max_bp=MAX_RECORD_BP, headers=False):
    """Yield `(id, sequence_bytes)` for every record of a FASTA/FASTQ file; see the module docstring.

    `allow_empty`: a file with no record yields nothing instead of raising; `headers`: yield
    `(id, sequence_bytes, header_bytes)`, the header line as it is, without its '>' or '@' and line end.
    """
    seen = set()
    n = 0
    with open_binary(path) as fh:
        try:
            for rid, seq, header in _records(fh, path, max_bp):
                if rid in seen:
                    raise InputError(path, "duplicate sequence id", record=rid)
                seen.add(rid)
                if check_nucleotides:
                    check_nucleotide_codes(path, rid, seq)
                n += 1
                yield (rid, seq, header) if headers else (rid, seq)
        except _READ_ERRORS as exc:
            raise InputError(path, f"unreadable compressed data ({exc})") from None
    if n == 0 and not allow_empty:
        raise InputError(path, "no sequences (empty input)")


def read_fasta(path):
    """Yield `(id, sequence_str)` from a FASTA file written by this project (no nucleotide check, no
    length limit: its records are frames or fragments). An empty file (a sample or shard without frames)
    yields nothing.
    """
    for rid, seq in read_sequences(path, check_nucleotides=False, allow_empty=True, max_bp=None):
        yield rid, seq.decode("ascii")


def read_frames(path):
    """Yield `(header, sequence)` (both `str`, without '>' and line ends) of a file of two-line records, as
    `prepare` and the plan write them; a file that holds anything else is a one-line error."""
    with open(path) as fh:
        lines = iter(fh)
        for number, header in enumerate(lines, start=1):
            seq = next(lines, "")
            if header[:1] != ">" or seq[:1] in ("", ">", "\n") or not seq.endswith("\n"):
                raise VirNucProError(f"{path}: record {number} is not '>id' and one line of sequence (not a file "
                                     "of frames written by this workflow?)")
            yield header[1:-1], seq[:-1]


def check_nucleotide_codes(path, rid, seq):
    bad = seq.translate(None, NUCLEOTIDE_CODES)
    if bad:
        pos = seq.index(bad[:1]) + 1
        raise InputError(
            path, f"character {chr(bad[0])!r} at position {pos} is not a nucleotide code", record=rid
        )


def _records(fh, path, max_bp):
    first = _first_content_byte(fh, path)
    if first is None:
        return
    if first == b">":
        yield from _fasta_records(fh, path, max_bp)
    elif first == b"@":
        yield from _fastq_records(fh, path, max_bp)
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
    """(id, the header line without its '>' or '@' and line end)."""
    raw = line[1:].rstrip(b"\r\n")
    try:
        words = raw.decode("utf-8").split(None, 1)
    except UnicodeDecodeError:
        raise InputError(path, f"header on line {number} is not text (binary data?)") from None
    if not words:
        raise InputError(path, f"record on line {number} has no id")
    return words[0], raw


class _Record:
    """The sequence of one record, gathered piece by piece, refused once longer than the limit."""

    def __init__(self, path, header, max_bp):
        (self.rid, self.header), self.path, self.max_bp, self.seq = header, path, max_bp, bytearray()

    def add(self, piece):
        self.seq += piece.translate(None, BLANKS)
        if self.max_bp is not None and len(self.seq) > self.max_bp:
            raise _too_long(self.path, self.rid, self.max_bp)

    def done(self):
        """(id, sequence, header) of the complete record."""
        if not self.seq:
            raise InputError(self.path, "record has no sequence", record=self.rid)
        return self.rid, bytes(self.seq), self.header


def _too_long(path, rid, max_bp):
    return InputError(
        path, f"record is longer than {max_bp:,} bp, the longest accepted (split it, or raise max_record_bp in "
        "config.yaml; a prepare job needs about 5 bytes of memory per base)", record=rid,
    )


def _bounded_line(fh, line, limit, too_long):
    """The line that starts with `line` (bytes already read), read on in pieces of at most PIECE bytes.
    With a `limit`, `too_long()` (an exception) is raised as soon as the line holds more than `limit`
    bytes besides its line end (CR LF), no more than `limit` + 3 bytes of it having been read."""
    pieces, size = [line], len(line)
    while not pieces[-1].endswith(b"\n") and (limit is None or size <= limit + 2):
        piece = fh.readline(PIECE if limit is None else min(PIECE, limit + 3 - size))
        if not piece:
            break
        pieces.append(piece)
        size += len(piece)
    line = b"".join(pieces) if len(pieces) > 1 else line
    tail = line[-2:]
    if limit is not None and size - (len(tail) - len(tail.rstrip(b"\r\n"))) > limit:
        raise too_long()
    return line


def _header(fh, path, line, number):
    """(id, header) of a header line that starts with `line` (the rest is read in pieces, up to MAX_HEADER)."""
    return _parse_header(path, _bounded_line(fh, line, MAX_HEADER, lambda: _long_header(path, number)), number)


def _long_header(path, number):
    return InputError(path, f"header on line {number} is longer than {MAX_HEADER:,} bytes (binary data?)")


def _take_line(fh, data, pos, path, number):
    """(the header line that starts at `data[pos]`, the buffer, the position after that line), reading
    on as far as that line goes (then the buffer is the next block)."""
    end = data.find(b"\n", pos)
    line = data[pos:] if end < 0 else data[pos : end + 1]
    line = _bounded_line(fh, line, MAX_HEADER, lambda: _long_header(path, number))
    return (line, fh.read(PIECE), 0) if end < 0 else (line, data, end + 1)


def _fasta_records(fh, path, max_bp):
    """Records from blocks of PIECE bytes: a header is a '>' at the start of a line. A block is read
    through a position, never sliced into a copy of its rest, so that many short records cost linear time."""
    record, number, data, pos, at_start = None, 1, fh.read(PIECE), 0, True
    while data:
        if pos >= len(data):
            data, pos = fh.read(PIECE), 0
            continue
        if at_start and data[pos : pos + 1] == b">":
            header, data, pos = _take_line(fh, data, pos, path, number)
            if record is not None:
                yield record.done()
            record = _Record(path, _parse_header(path, header, number), max_bp)
            number += 1
            continue
        cut = data.find(b"\n>", pos)
        end = len(data) if cut < 0 else cut + 1
        body = data[pos:end]
        record.add(body)
        number += body.count(b"\n")
        at_start = cut >= 0 or data.endswith(b"\n")
        pos = end
    if record is not None:
        yield record.done()


def _line(fh, path, max_bp, rid):
    """One whole line of a FASTQ record, read in pieces; refused as soon as it holds more than `max_bp`
    bytes besides its line end."""
    return _bounded_line(fh, b"", max_bp, lambda: _too_long(path, rid, max_bp))


def _fastq_records(fh, path, max_bp):
    number = 0
    while True:
        header = fh.readline(PIECE)
        number += 1
        if not header.strip():
            if not header:
                return
            continue
        if header[:1] != b"@":
            raise InputError(path, f"line {number}: FASTQ record does not start with '@'")
        rid, raw = _header(fh, path, header, number)
        seq = _line(fh, path, max_bp, rid)
        plus = _bounded_line(fh, b"", MAX_HEADER, lambda: _long_header(path, number + 2))
        qual = _line(fh, path, max_bp, rid)
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
        yield rid, seq, raw
