"""The input sequences called viral, and the viral regions' sequences, as FASTA, from one pass over the input.

`write_viral_fasta` copies from the sample's input (FASTA or FASTQ, plain or gzip) every record whose
call is `viral`: the header line as it is in the input (id and description, without the leading `>` or
`@` and the line end), the sequence in its original case, 60 bases per line. Given a second path, it
also writes every viral region's bases (`viral_regions.fna`): the slice `start..end` (1-based,
inclusive) of its sequence in original case, under the header
`{sequence_id}|viral_region_{start}_{end} sample={sample} region={k}/{n} length={bp} mean_virus_score={score}`
(the region's name, `virnucpro.results.regions.region_names`, then: the k-th of the n regions of its
sequence; `sample=` only when a sample is named), in the order of the region table.
The input must match the manifest record for record (id and length); anything else means it changed
since `prepare` ran.
"""

from contextlib import nullcontext

from virnucpro.errors import VirNucProError
from virnucpro.io.seqio import MAX_RECORD_BP, read_sequences
from virnucpro.io.tables import score_text

WIDTH = 60


def _checked_records(fasta, ids, lengths, max_bp):
    """(index, sequence, header) of every input record, checked against the manifest's ids and lengths."""
    i = -1
    for i, (rid, seq, header) in enumerate(read_sequences(fasta, max_bp=max_bp, headers=True)):
        if i >= len(ids) or rid != ids[i] or len(seq) != lengths[i]:
            expected = f"'{ids[i]}' ({lengths[i]} bp)" if i < len(ids) else "no more records"
            raise VirNucProError(
                f"{fasta}: record {i + 1} is '{rid}' ({len(seq)} bp) but the manifest expects {expected}; "
                "the input changed since `prepare` ran"
            )
        yield i, seq, header
    if i + 1 != len(ids):
        raise VirNucProError(f"{fasta}: {i + 1} records, but the manifest lists {len(ids)}")


def _write_record(out, header, seq):
    out.write(b">" + header + b"\n")
    out.writelines(seq[j : j + WIDTH] + b"\n" for j in range(0, len(seq), WIDTH))


def region_headers(regions, names, sample=""):
    """The FASTA header of every region (module docstring), in the order of `regions`."""
    from virnucpro.results.regions import region_numbers

    k, n = region_numbers(regions)
    named = f" sample={sample}" if sample else ""
    return [
        f"{name}{named} region={a}/{b} length={e - s + 1} mean_virus_score={score_text(m)}"
        for name, a, b, s, e, m in zip(names, k.tolist(), n.tolist(), regions["start"].tolist(),
                                       regions["end"].tolist(), regions["mean"])
    ]


def write_viral_fasta(path, fasta, table, max_bp=MAX_RECORD_BP, regions_path=None, regions=None, headers=()):
    """Write the sequences of `table` (the per-sequence table) called viral and, when `regions_path` is
    given, the bases of every region of `regions` (`call_regions`, sorted by owner) under `headers`
    (`region_headers`); returns how many sequences are called viral."""
    ids, lengths, viral = table["sequence_id"], table["length"], table["call"] == "viral"
    owner = [] if regions_path is None else regions["owner"].tolist()
    spans = [] if regions_path is None else list(zip(regions["start"].tolist(), regions["end"].tolist()))
    n, at = 0, 0
    with open(path, "wb") as out, (open(regions_path, "wb") if regions_path else nullcontext()) as cut:
        for i, seq, header in _checked_records(fasta, ids, lengths, max_bp):
            if viral[i]:
                _write_record(out, header, seq)
                n += 1
            while at < len(owner) and owner[at] == i:
                start, end = spans[at]
                _write_record(cut, headers[at].encode("utf-8"), seq[start - 1 : end])
                at += 1
    return n
