"""The front end: goldens of the original tool, an independent per-codon reference, every input form."""

import bz2
import gzip
import json
import lzma
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from tests.frontend_inputs import min_length_records
from tests.reference_frontend import chunks, front_end
from virnucpro.errors import InputError, VirNucProError
from virnucpro.frames import fragment_layout
from virnucpro.io.seqio import read_sequences
from virnucpro.steps.prepare import cut_and_translate, prepare

# the original tool's outputs on its own code (tests/data/golden/original_virnucpro/README.md)
GOLDEN = Path(__file__).resolve().parent / "data" / "golden" / "original_virnucpro"


def run_prepare(src, out, size, **kw):
    """`prepare` with every output; every sequence cut (`min_length=0`, the original's behaviour) unless
    `min_length` is given."""
    kw.setdefault("min_length", 0)
    paths = {
        "out_dna": out / "frames.fna",
        "out_protein": out / "frames.faa",
        "out_fragments": out / "fragments.fa",
        "manifest": out / "sequences.tsv",
    }
    stats = cut_and_translate(src, size, **paths, **kw)
    return stats, {k: p.read_bytes() for k, p in paths.items()}


def reference_text(records, size):
    frames = front_end(records, size)
    dna = "".join(f">{i}\n{n}\n" for i, n, _ in frames).encode()
    protein = "".join(f">{i}\n{p}\n" for i, _, p in frames).encode()
    return dna, protein


def random_records(rng, n, alphabet="ACGT", max_len=2600):
    records = []
    for i in range(n):
        length = int(rng.integers(1, max_len))
        seq = "".join(rng.choice(list(alphabet), length))
        records.append((f"seq_{i}", seq))
    return records


def write_fasta(path, records, width=60, newline="\n"):
    with open(path, "w", newline="") as fh:
        for rid, seq in records:
            fh.write(f">{rid} description{newline}")
            for i in range(0, len(seq), width):
                fh.write(seq[i : i + width] + newline)


@pytest.mark.parametrize("size", [300, 500])
def test_goldens_byte_for_byte(tmp_path, size):
    _, out = run_prepare(GOLDEN / "input.fa", tmp_path, size)
    assert out["out_dna"] == (GOLDEN / f"identified_nucleotide{size}.fa").read_bytes()
    assert out["out_protein"] == (GOLDEN / f"identified_protein{size}.faa").read_bytes()
    assert out["out_fragments"] == (GOLDEN / f"chunked{size}.fa").read_bytes()


@pytest.mark.parametrize(
    "length,expected",
    [(1001, [500, 500, 335]), (1200, [500, 500, 402]), (1499, [500, 500, 500]),
     (2600, [500] * 5 + [435]), (499, [499]), (500, [500]), (1000, [500, 500])],
)
def test_fragment_layout_quirks(length, expected):
    owner, number, start, frag_len = fragment_layout([length], 500)
    assert frag_len.tolist() == expected
    assert number.tolist() == list(range(1, len(expected) + 1))
    seq = "".join(np.random.default_rng(length).choice(list("ACGT"), length))
    ref = chunks("s", seq, 500)
    assert [seq[a : a + n] for a, n in zip(start, frag_len)] == [c for _, c in ref]


def test_a_length_of_0_has_no_fragment_and_no_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        owner, number, start, frag_len = fragment_layout([0, 5, 0], 300)
    assert (owner.tolist(), number.tolist(), start.tolist(), frag_len.tolist()) == ([1], [1], [0], [5])


def test_fragment_layout_matches_reference_for_all_lengths():
    lengths = np.arange(1, 5000)
    for size in (300, 500):
        owner, _, start, frag_len = fragment_layout(lengths, size)
        for L in (1, 299, 300, 301, 599, 601, 1001, 1499, 2999, 4999):
            sel = owner == L - 1
            ref = [(len(c), i) for i, c in chunks("x", "A" * L, size)]
            assert frag_len[sel].tolist() == [n for n, _ in ref]
            assert all(0 <= a and a + n <= L for a, n in zip(start[sel], frag_len[sel]))


@pytest.mark.parametrize("size", [300, 500, 1000])  # any fragment size, not only the classifiers'
def test_matches_per_codon_reference_on_random_iupac_input(tmp_path, size):
    rng = np.random.default_rng(size)
    records = random_records(rng, 150, alphabet="ACGTACGTACGTacgtNRYKM")
    # coding-like records so that many frames are kept
    sense = [c for c in ("GCT", "AAA", "TGG", "CAT", "GGC", "TTC", "ATG", "CCG")]
    records += [(f"orf_{i}", "".join(rng.choice(sense, int(rng.integers(1, 700))))) for i in range(60)]
    write_fasta(tmp_path / "in.fa", records, width=70)
    stats, out = run_prepare(tmp_path / "in.fa", tmp_path, size, group_bases=10_000)
    dna, protein = reference_text(records, size)
    assert out["out_dna"] == dna
    assert out["out_protein"] == protein
    assert stats.frames == dna.count(b">") > 100


def test_input_forms_give_identical_output(tmp_path):
    rng = np.random.default_rng(1)
    records = random_records(rng, 40, alphabet="ACGTacgtN")
    plain = tmp_path / "plain.fa"
    write_fasta(plain, records)
    forms = {"plain": plain}
    write_fasta(tmp_path / "crlf.fa", records, width=50, newline="\r\n")
    forms["crlf"] = tmp_path / "crlf.fa"
    write_fasta(tmp_path / "oneline.txt", records, width=10**6)
    forms["oneline"] = tmp_path / "oneline.txt"
    gz = tmp_path / "named_plain.fa"  # gzip recognised from content, not name
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    forms["gzip"] = gz
    fq = tmp_path / "reads.fastq.gz"
    with gzip.open(fq, "wt") as fh:
        for rid, seq in records:
            fh.write(f"@{rid} extra\n{seq}\n+\n{'I' * len(seq)}\n")
    forms["fastq_gz"] = fq
    for name, module in (("bzip2", bz2), ("xz", lzma)):
        forms[name] = tmp_path / f"reads.{name}"
        forms[name].write_bytes(module.compress(plain.read_bytes()))
    results = {}
    for name, path in forms.items():
        (tmp_path / name).mkdir()
        results[name] = run_prepare(path, tmp_path / name, 300)[1]
    for name, res in results.items():
        assert res == results["plain"], name


def test_manifest_lists_every_sequence(tmp_path):
    records = [("coding", "ATG" * 200), ("stops_everywhere", "TAAT" * 100), ("tiny", "AC"),
               ("n_only", "N" * 50)]
    write_fasta(tmp_path / "in.fa", records)
    stats, out = run_prepare(tmp_path / "in.fa", tmp_path, 300)
    rows = [line.split("\t") for line in out["manifest"].decode().splitlines()]
    assert rows[0] == ["sequence_id", "length", "fragments", "kept_frames"]
    table = {r[0]: list(map(int, r[1:])) for r in rows[1:]}
    assert list(table) == [r[0] for r in records]
    assert table["coding"][:2] == [600, 2] and table["coding"][2] > 0
    assert table["stops_everywhere"][2] == 0
    assert table["tiny"] == [2, 1, 0] and table["n_only"] == [50, 1, 0]
    assert sum(v[2] for v in table.values()) == stats.frames == out["out_dna"].count(b">")


BAD_INPUTS = {
    "empty": (b"", None, "no sequences"),
    "blank_lines_only": (b"\n\n  \n", None, "no sequences"),
    "header_only": (b">only_header description\n", "only_header", "no sequence"),
    "record_without_sequence": (b">a\nACGT\n>b\n>c\nACGT\n", "b", "no sequence"),
    "bad_character": (b">a\nACGT\n>b\nACGTXACGT\n", "b", "'X' at position 5"),
    "protein_input": (b">p\nMKVLAAGIEEQQ\n", "p", "not a nucleotide code"),
    "duplicate_id": (b">a x\nACGT\n>a y\nACGT\n", "a", "duplicate"),
    "no_id": (b">\nACGT\n", None, "no id"),
    "binary": (bytes(range(256)) * 4, None, "not FASTA or FASTQ"),
    "fastq_quality_length": (b"@r1\nACGT\n+\nII\n", "r1", "quality length 2"),
    "fastq_no_plus": (b"@r1\nACGT\nII\nIIII\n", "r1", "'+'"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_one_line_error_and_no_output(tmp_path, name):
    content, record, problem = BAD_INPUTS[name]
    src = tmp_path / "input.fa"
    src.write_bytes(content)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "virnucpro.cli", "prepare", str(src), "--fragment-size", "500",
         "--out-dna", str(out / "f.fna"), "--out-protein", str(out / "f.faa"),
         "--out-fragments", str(out / "c.fa"), "--manifest", str(out / "m.tsv")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(src) in lines[0] and problem in lines[0]
    if record is not None:
        assert f"record '{record}'" in lines[0]
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_unreadable_gzip(tmp_path, damage):
    data = gzip.compress(b">a\n" + b"ACGT" * 50_000 + b"\n")
    data = data[: len(data) // 2] if damage == "truncated" else data[:20] + b"\0" * 200 + data[220:]
    src = tmp_path / "in.fa.gz"
    src.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(Exception) as info:
        run_prepare(src, out, 500)
    assert str(src) in str(info.value) and "compressed" in str(info.value)
    assert list(out.iterdir()) == []


def test_missing_input_file(tmp_path):
    with pytest.raises(Exception, match="cannot read"):
        list(read_sequences(tmp_path / "absent.fa"))


def _peak_bytes(path, out):
    tracemalloc.start()
    cut_and_translate(path, 500, out / "a.fna", out / "a.faa", manifest=out / "m.tsv", group_bases=1 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_memory_does_not_grow_with_input(tmp_path):
    rng = np.random.default_rng(3)
    contig = rng.choice(np.frombuffer(b"ACGT", np.uint8), 100_000).tobytes()
    for name, copies in (("small", 20), ("large", 160)):
        with open(tmp_path / f"{name}.fa", "wb") as fh:
            for i in range(copies):
                fh.write(b">c%d\n" % i + contig + b"\n")
    small = _peak_bytes(tmp_path / "small.fa", tmp_path)
    large = _peak_bytes(tmp_path / "large.fa", tmp_path)
    # 8x the input must not need noticeably more memory: only the group and one record are held
    assert large < 1.5 * small, (small, large)


def _peak_reading(path, max_bp):
    """Peak bytes held while reading `path` until the reader refuses it."""
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as err:
            for _ in read_sequences(path, max_bp=max_bp):
                pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, str(err.value)


@pytest.mark.parametrize("kind", ["fasta", "fasta.gz", "fastq"])
def test_a_record_without_line_breaks_is_refused_in_bounded_memory(tmp_path, kind):
    """40 MB of one line: refused once past the limit (4 MB), holding about the limit, not the line."""
    path = tmp_path / f"huge.{kind}"
    opener = gzip.open if kind.endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(b"@huge read\n" if kind == "fastq" else b">huge contig\n")
        for _ in range(40):
            fh.write(b"ACGT" * (1 << 18))
    peak, message = _peak_reading(path, max_bp=4_000_000)
    assert "record 'huge'" in message and "longer than 4,000,000 bp" in message
    assert peak < 4_000_000 + 8 * (1 << 20), peak


def test_a_header_without_end_is_refused_in_bounded_memory(tmp_path):
    path = tmp_path / "header.fa"
    with open(path, "wb") as fh:
        fh.write(b">")
        for _ in range(30):
            fh.write(b"x" * (1 << 20))
    peak, message = _peak_reading(path, max_bp=10**9)
    assert "header on line 1 is longer than 1,048,576 bytes" in message
    assert peak < 8 * (1 << 20), peak


def test_records_at_the_limit_pass_and_zstd_is_named(tmp_path):
    path = tmp_path / "ok.fa"
    path.write_text(">a\n" + "ACGT" * 250 + "\n>b\n" + "AC" * 100 + "\n")
    assert [len(s) for _, s in read_sequences(path, max_bp=1000)] == [1000, 200]
    zst = tmp_path / "reads.fa.zst"
    zst.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(20))
    with pytest.raises(InputError, match="zstd-compressed input is not supported"):
        list(read_sequences(zst))


def test_the_workflow_step_records_bad_input_and_writes_empty_outputs(tmp_path):
    (tmp_path / "bad.fa").write_text(">a\nACGT\n>a\nACGT\n")
    out = {k: tmp_path / "out" / n for k, n in (("out_dna", "f.fna"), ("out_protein", "f.faa"),
                                              ("manifest", "m.tsv"), ("status", "status.json"))}
    assert prepare(tmp_path / "bad.fa", 500, **out) is None
    status = json.loads(out["status"].read_text())
    assert status == {"ok": False, "error": f"{tmp_path / 'bad.fa'}: record 'a': duplicate sequence id"}
    assert all(out[k].read_bytes() == b"" for k in ("out_dna", "out_protein", "manifest"))
    stats = prepare(GOLDEN / "input.fa", 500, **out, min_length=0)
    assert json.loads(out["status"].read_text()) == {"ok": True, **stats.__dict__}
    assert out["out_protein"].read_bytes() == (GOLDEN / "identified_protein500.faa").read_bytes()


def manifest_rows(text):
    rows = [line.split("\t") for line in text.decode().splitlines()]
    return {r[0]: list(map(int, r[1:])) for r in rows[1:]}


def test_a_sequence_shorter_than_min_length_gets_no_fragment_and_no_frame(tmp_path):
    records = min_length_records(np.random.default_rng(21))
    write_fasta(tmp_path / "in.fa", records)
    (tmp_path / "default").mkdir()
    stats, out = run_prepare(tmp_path / "in.fa", tmp_path / "default", 300, min_length=None)  # the fragment size
    table = manifest_rows(out["manifest"])
    assert list(table) == [r[0] for r in records]  # every input sequence, in input order
    assert table["tiny"] == [3, 0, 0] and table["just_short"] == [299, 0, 0]
    assert table["exact"][:2] == [300, 1] and table["exact"][2] > 0 and table["stops"] == [600, 2, 0]
    dna, protein = reference_text([r for r in records if len(r[1]) >= 300], 300)
    assert (out["out_dna"], out["out_protein"]) == (dna, protein)  # the others' frames, as the original's
    assert b">tiny_" not in out["out_fragments"] and b">just_short_" not in out["out_fragments"]
    assert (stats.sequences, stats.shorter_than_min_length) == (5, 2)
    assert stats.fragments == sum(v[1] for v in table.values()) == out["out_fragments"].count(b">")

    (tmp_path / "zero").mkdir()
    stats, out = run_prepare(tmp_path / "in.fa", tmp_path / "zero", 300, min_length=0)  # the original exactly
    assert (out["out_dna"], out["out_protein"]) == reference_text(records, 300)
    assert manifest_rows(out["manifest"])["tiny"] == [3, 1, 2]  # F1 (K) and R1 (F)
    assert stats.shorter_than_min_length == 0


def test_min_length_other_than_the_fragment_size_and_bad_values(tmp_path):
    records = min_length_records(np.random.default_rng(21))
    write_fasta(tmp_path / "in.fa", records)
    _, out = run_prepare(tmp_path / "in.fa", tmp_path, 300, min_length=301)
    assert [n for n, (_, f, _) in manifest_rows(out["manifest"]).items() if f == 0] == ["tiny", "just_short", "exact"]
    _, out = run_prepare(tmp_path / "in.fa", tmp_path, 300, min_length=3)
    assert [n for n, (_, f, _) in manifest_rows(out["manifest"]).items() if f == 0] == []
    for bad in (-1, 2.5, "300", True):
        with pytest.raises(VirNucProError, match=f"min_length must be a whole number of bp >= 0 .*not {bad!r}"):
            run_prepare(tmp_path / "in.fa", tmp_path / "absent", 300, min_length=bad)
    assert not (tmp_path / "absent").exists()
