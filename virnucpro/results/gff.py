"""The viral regions of a sample as GFF3 (`viral_regions.gff3`), for genome browsers and annotation tools.

Layout (GFF3 1.26): the `##gff-version 3` line, one `##sequence-region {seqid} 1 {length}` line for every
sequence with a region (input order), then one feature per region in the order of the region table:
seqid, source `VirNucPro`, type `viral_sequence` (Sequence Ontology SO:0001041: the part is viral, whether
a whole phage contig or a prophage inside a host contig), start and end (1-based, inclusive, as in
`viral_regions.tsv`), score the region's mean virus score, strand and phase `.`, and the attributes
`ID` and `Name` (the region's name, `virnucpro.results.regions.region_names`: unique in the file),
`fragments`, `viral_fragments`, `max_virus_score`, `whole_sequence` (`true`/`false`).
Characters GFF3 reserves are escaped as `%XX`: in the seqid, all but `[a-zA-Z0-9.:^*$@!+_?|-]`; in
attribute values, tab, newline, `%`, `;`, `=`, `&` and `,` (and every control character).
"""

import re

from virnucpro.io.tables import score_text
from virnucpro.results.regions import region_names

SOURCE, TYPE = "VirNucPro", "viral_sequence"
_SEQID_KEEP = re.compile(r"[^a-zA-Z0-9.:^*$@!+_?|-]")
_VALUE_ESCAPE = re.compile(r"[\x00-\x1f\x7f%;=&,]")


def _percent(match):
    return "".join(f"%{b:02X}" for b in match.group(0).encode("utf-8"))


def seqid_text(text):
    """A sequence id as a GFF3 seqid."""
    return _SEQID_KEEP.sub(_percent, str(text))


def value_text(text):
    """An attribute value with GFF3's reserved characters escaped."""
    return _VALUE_ESCAPE.sub(_percent, str(text))


def write_region_gff(path, seqs, regions):
    """`viral_regions.gff3` from the manifest arrays and `call_regions`'s regions; see the module docstring."""
    r = regions
    names = region_names(seqs, regions)
    ids, lengths = seqs["sequence_id"], seqs["length"]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("##gff-version 3\n")
        for o in dict.fromkeys(r["owner"].tolist()):
            fh.write(f"##sequence-region {seqid_text(ids[o])} 1 {lengths[o]}\n")
        for i, o in enumerate(r["owner"].tolist()):
            name = value_text(names[i])
            attributes = (f"ID={name};Name={name};fragments={r['fragments'][i]};"
                          f"viral_fragments={r['viral_fragments'][i]};max_virus_score={score_text(r['max'][i])};"
                          f"whole_sequence={str(bool(r['whole'][i])).lower()}")
            fh.write(f"{seqid_text(ids[o])}\t{SOURCE}\t{TYPE}\t{r['start'][i]}\t{r['end'][i]}\t"
                     f"{score_text(r['mean'][i])}\t.\t.\t{attributes}\n")
