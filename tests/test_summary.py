"""Per-fragment calls, the per-sequence table, viral FASTA and plots, from a real `prepare` run."""

import numpy as np
import pytest

from tests.frontend_inputs import min_length_records
from tests.html_tables import Cells
from tests.reference_frontend import chunks
from tests.summaries import run_summarize
from virnucpro.errors import VirNucProError
from virnucpro.io.seqio import read_fasta
from virnucpro.steps.prepare import cut_and_translate

SENSE = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in ("TAA", "TAG", "TGA")]
HEADER = "Sequence_ID\tPrediction\tscore1\tscore2\n"


def coding(rng, n_codons):
    """A sequence whose first forward frame has no stop codon."""
    return "".join(rng.choice(SENSE, n_codons))


@pytest.fixture
def sample(tmp_path):
    rng = np.random.default_rng(11)
    records = [
        ("contig_1", coding(rng, 400).lower() + coding(rng, 100)),  # 1500 bp, 3 fragments, mixed case
        ("seq_chunk_7", coding(rng, 233)),  # an id that itself holds '_chunk_'
        ("all_n", "N" * 800),  # 2 fragments, no codon: no stop-free frame
        ("gcc_rich", "GCC" * 333 + "G"),  # 1000 bp, all six frames stop-free in both fragments
        ("short_read", coding(rng, 50)),  # one short fragment
        ("low_1", coding(rng, 300)),
    ]
    fasta = tmp_path / "input.fa"
    fasta.write_text("".join(f">{i} some description\n{s[:70]}\n{s[70:]}\n" for i, s in records))
    # every sequence cut, as the original (min_length 0): the 150 bp short read gets its one fragment
    cut_and_translate(fasta, 500, tmp_path / "frames.fna", tmp_path / "frames.faa", manifest=tmp_path / "manifest.tsv",
            min_length=0)
    frames = [fid for fid, _ in read_fasta(tmp_path / "frames.faa")]
    scores = {}
    for fid in frames:
        fragment, frame = fid[:-2], fid[-2:]
        if fragment == "gcc_rich_chunk_1":  # a tie across frames: max score2 == max score1 -> viral
            s2 = {"F1": 0.75, "R1": 0.25}.get(frame, 0.4)
        elif fragment == "gcc_rich_chunk_2":  # a near miss: 0.74 < 0.75 -> not viral
            s2 = {"F1": 0.74, "R1": 0.25}.get(frame, 0.4)
        elif fragment == "short_read_chunk_1":  # a single frame at exactly 0.5 / 0.5 -> viral
            s2 = 0.5
        elif fragment.startswith("low_1"):
            s2 = float(rng.uniform(0.0, 0.3))
        else:
            s2 = float(rng.uniform(0.2, 0.95))
        s2 = np.float32(s2)
        scores[fid] = (np.float32(1) - s2, s2)
    rows = [f"{f}\t{'virus' if b > a else 'others'}\t{a}\t{b}\n" for f, (a, b) in scores.items()]
    (tmp_path / "predictions.tsv").write_text(HEADER + "".join(rows))
    return tmp_path, dict(records), frames, scores


def run(d, threshold=0.5, top=3, predictions=None, manifest=None, fasta=None, fragment_size=500):
    return run_summarize(predictions or d / "predictions.tsv", manifest or d / "manifest.tsv", fasta or d / "input.fa",
                         d / "out", fragment_size, threshold=threshold, top_sequences=top)


def table(path):
    lines = path.read_text().splitlines()
    head = lines[0].split("\t")
    return [dict(zip(head, line.split("\t"))) for line in lines[1:]]


def expected_fragments(scores):
    """An independent reading of the original per-fragment rule over the per-frame scores."""
    best = {}
    for fid, (s1, s2) in scores.items():
        fragment = fid[:-2]
        m1, m2 = best.get(fragment, (s1, s2))
        best[fragment] = (max(m1, s1), max(m2, s2))
    return {f: (m2 >= m1, m1, m2) for f, (m1, m2) in best.items()}


def test_every_sequence_once_with_status_and_call(sample):
    d, records, frames, scores = sample
    out = run(d)
    rows = table(out["sequence_summary"])
    assert [r["sequence_id"] for r in rows] == list(records)  # every input sequence once, in input order
    by_id = {r["sequence_id"]: r for r in rows}
    frags = expected_fragments(scores)
    for sid, seq in records.items():
        r = by_id[sid]
        mine = {f: v for f, v in frags.items() if f.rpartition("_chunk_")[0] == sid}
        assert int(r["length"]) == len(seq)
        assert int(r["fragments"]) == -(-len(seq) // 500)
        assert int(r["fragments_with_frames"]) == len(mine)
        viral = sum(v for v, _, _ in mine.values())
        assert int(r["viral_fragments"]) == viral
        if mine:
            assert r["status"] == "classified"
            assert float(r["viral_fraction"]) == pytest.approx(viral / len(mine), abs=1e-6)
            assert r["max_virus_score"] == f"{max(m2 for _, _, m2 in mine.values()):.6f}"
            mean = np.mean([float(m2) for _, _, m2 in mine.values()])
            assert float(r["mean_virus_score"]) == pytest.approx(mean, rel=1e-5)
            assert r["call"] == ("viral" if viral / len(mine) >= 0.5 else "not_viral")
        else:
            assert (r["status"], r["call"], r["viral_fraction"]) == ("no_stop_free_frame", "no_call", "NA")
    assert by_id["all_n"]["fragments"] == "2" and by_id["all_n"]["fragments_with_frames"] == "0"
    assert by_id["gcc_rich"]["viral_fragments"] == "1"  # the tie counts as viral, the near miss does not
    assert by_id["gcc_rich"]["call"] == "viral"  # 1 of 2 fragments: fraction 0.5 >= threshold 0.5
    assert by_id["low_1"]["call"] == "not_viral"
    assert table(run(d, threshold=0.6)["sequence_summary"])[3]["call"] == "not_viral"
    assert (by_id["gcc_rich"]["confidence"], by_id["gcc_rich"]["fragments_to_flip"]) == ("0.500000", "1")
    assert (by_id["all_n"]["confidence"], by_id["all_n"]["fragments_to_flip"]) == ("NA", "NA")


def test_fragment_calls_are_the_original_rule(sample):
    d, records, frames, scores = sample
    rows = table(run(d)["fragment_calls"])
    frags = expected_fragments(scores)
    order = list(dict.fromkeys(f[:-2] for f in frames))  # fragments in input order
    assert [r["Modified_ID"] for r in rows] == order
    for r in rows:
        viral, m1, m2 = frags[r["Modified_ID"]]
        assert r["Is_Virus"] == str(viral)
        assert (r["max_score1"], r["max_score2"]) == (f"{m1:.6f}", f"{m2:.6f}")
    calls = {r["Modified_ID"]: r["Is_Virus"] for r in rows}
    assert calls["gcc_rich_chunk_1"] == "True" and calls["gcc_rich_chunk_2"] == "False"
    assert calls["short_read_chunk_1"] == "True"  # 0.5 >= 0.5
    assert "seq_chunk_7_chunk_1" in calls and not any(f.startswith("all_n") for f in calls)


def test_viral_fasta_holds_the_viral_sequences_in_original_case(sample):
    d, records, _, _ = sample
    out = run(d)
    viral_ids = [r["sequence_id"] for r in table(out["sequence_summary"]) if r["call"] == "viral"]
    assert "contig_1" in viral_ids and "low_1" not in viral_ids
    text = out["viral_fasta"].read_text()
    got = dict(read_fasta(out["viral_fasta"]))
    assert list(got) == viral_ids
    for sid in viral_ids:
        assert got[sid] == records[sid]  # case kept (contig_1 is partly lower case)
    assert max(len(line) for line in text.splitlines() if not line.startswith(">")) == 60


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plots_written(sample):
    d, _, _, _ = sample
    out = run(d, top=3)
    png_size(out["histogram"])
    _, three = png_size(out["along"])
    _, one = png_size(run(d, top=1)["along"])
    assert three > 2 * one  # one panel per plotted sequence
    _, none = png_size(run(d, top=0)["along"])
    assert none > 0


def test_frame_of_unknown_sequence(sample):
    d, _, _, _ = sample
    with open(d / "predictions.tsv", "a") as fh:
        fh.write("stranger_chunk_1F1\tvirus\t0.1\t0.9\n")
    with pytest.raises(VirNucProError, match="'stranger_chunk_1F1' belongs to no sequence"):
        run(d)
    assert not (d / "out").exists() or not any((d / "out").rglob("*.tsv"))


def test_frame_count_must_match_manifest(sample):
    d, _, frames, _ = sample
    lines = (d / "predictions.tsv").read_text().splitlines(keepends=True)
    dropped = [line for line in lines if not line.startswith(frames[0] + "\t")]
    (d / "short.tsv").write_text("".join(dropped))
    with pytest.raises(VirNucProError, match=r"'contig_1' has \d+ classified frame\(s\), but .* lists \d+ kept"):
        run(d, predictions=d / "short.tsv")


def test_fragment_beyond_the_sequence(sample):
    d, _, _, _ = sample
    text = (d / "predictions.tsv").read_text().replace("short_read_chunk_1", "short_read_chunk_2")
    (d / "bad.tsv").write_text(text)
    with pytest.raises(VirNucProError, match="names fragment 2, but .* 1 fragment"):
        run(d, predictions=d / "bad.tsv")


def test_fragment_size_must_fit_the_manifest(sample):
    d, _, _, _ = sample
    with pytest.raises(VirNucProError, match="another fragment size"):
        run(d, fragment_size=300)


def test_fasta_must_match_the_manifest(sample):
    d, records, _, _ = sample
    (d / "other.fa").write_text("".join(f">{i}\n{s}\n" for i, s in reversed(list(records.items()))))
    with pytest.raises(VirNucProError, match="manifest expects 'contig_1'"):
        run(d, fasta=d / "other.fa")


def test_sample_without_frames(tmp_path):
    (tmp_path / "in.fa").write_text(">n1\nNNNNNNNNNN\n>n2\nNNN\n")
    cut_and_translate(tmp_path / "in.fa", 300, tmp_path / "f.fna", tmp_path / "f.faa", manifest=tmp_path / "manifest.tsv",
            min_length=0)
    (tmp_path / "predictions.tsv").write_text(HEADER)
    out = run(tmp_path, fasta=tmp_path / "in.fa", fragment_size=300)
    rows = table(out["sequence_summary"])
    assert [(r["sequence_id"], r["status"], r["call"]) for r in rows] == [
        ("n1", "no_stop_free_frame", "no_call"), ("n2", "no_stop_free_frame", "no_call")]
    assert out["viral_fasta"].read_text() == ""
    assert table(out["fragment_calls"]) == []
    png_size(out["histogram"])
    png_size(out["along"])


@pytest.mark.parametrize("form", ["fasta", "fastq.gz"])
def test_viral_fasta_keeps_each_full_header(tmp_path, form):
    import gzip

    rng = np.random.default_rng(4)
    records = [("v1", "v1 Escherichia phage T4, complete genome\tlen=900", coding(rng, 300)),
               ("h1", "h1 host", coding(rng, 300)), ("v2", "v2", coding(rng, 150))]
    if form == "fasta":
        fasta, text = tmp_path / "in.fa", "".join(f">{h}\n{s}\n" for _, h, s in records)
        fasta.write_text(text)
    else:  # quality lines that begin with '@'
        fasta = tmp_path / "in.fq.gz"
        text = "\n".join(f"@{h}\n{s}\n+\n{'@' * len(s)}" for _, h, s in records) + "\n"
        fasta.write_bytes(gzip.compress(text.encode()))
    cut_and_translate(fasta, 500, tmp_path / "f.fna", tmp_path / "f.faa", manifest=tmp_path / "manifest.tsv", min_length=0)
    rows = [f"{fid}\tvirus\t0.1\t0.9\n" if not fid.startswith("h1") else f"{fid}\tothers\t0.9\t0.1\n"
            for fid, _ in read_fasta(tmp_path / "f.faa")]
    (tmp_path / "predictions.tsv").write_text(HEADER + "".join(rows))
    out = run(tmp_path, fasta=fasta)
    text = out["viral_fasta"].read_text()
    assert [line for line in text.splitlines() if line.startswith(">")] == [
        ">v1 Escherichia phage T4, complete genome\tlen=900", ">v2"]
    assert dict(read_fasta(out["viral_fasta"])) == {"v1": records[0][2], "v2": records[2][2]}


def test_scores_have_the_same_number_of_decimals_in_every_table(sample):
    d, _, _, _ = sample
    out = run(d)
    for name, columns in (("fragment_calls", ["max_score1", "max_score2"]),
                          ("sequence_summary", ["viral_fraction", "max_virus_score", "mean_virus_score", "confidence"])):
        for r in table(out[name]):
            for c in columns:
                assert r[c] == "NA" or (len(r[c].split(".")[1]) == 6 and float(r[c]) <= 1), (name, c, r[c])


def test_views_are_written_with_the_tables(sample):
    from tests.summaries import summary_outputs
    from virnucpro.steps.summarize import summarize

    d, records, _, _ = sample
    out = run_summarize(d / "predictions.tsv", d / "manifest.tsv", d / "input.fa", d / "views", 500, "sample_x",
                        top_sequences=1, max_table_rows=2)
    page = out["sequences_view"].read_text()
    assert "sample_x: sequence summary" in page and f"The first 2 of {len(records)} rows." in page
    assert "sample_x: viral regions" in out["regions_view"].read_text()
    partial = {k: v for k, v in summary_outputs(d / "v2").items() if k != "regions_view"}
    with pytest.raises(VirNucProError, match="summarize writes fragment_calls, .*; given fragment_calls"):
        summarize(d / "predictions.tsv", d / "manifest.tsv", d / "input.fa", partial, 500)
    assert not (d / "v2").exists() or not any((d / "v2").iterdir())


def test_views_show_the_rows_of_the_tables(sample):
    """The HTML pages hold every row of the TSV tables, field for field (sequences ranked, regions in order)."""
    d, records, _, _ = sample
    out = run_summarize(d / "predictions.tsv", d / "manifest.tsv", d / "input.fa", d / "views", 500,
                        top_sequences=1, min_viral_fragments=1)
    tsv = {n: [line.split("\t") for line in out[n].read_text().splitlines()]
           for n in ("sequence_summary", "viral_regions")}
    shown = Cells(out["sequences_view"].read_text()).rows
    assert shown[0] == tsv["sequence_summary"][0] and sorted(shown[1:]) == sorted(tsv["sequence_summary"][1:])
    assert len(shown) == len(records) + 1
    assert Cells(out["regions_view"].read_text()).rows == tsv["viral_regions"] and len(tsv["viral_regions"]) > 1


def short_sample(tmp_path, monkeypatch, min_length):
    """tests/frontend_inputs.py's records around 300 bp through `prepare` with `min_length`, every frame
    scored viral; then `summarize` with every output. Returns the output paths and the plot titles."""
    from matplotlib.figure import Figure

    records = min_length_records(np.random.default_rng(21))
    fasta = tmp_path / "in.fa"
    fasta.write_text("".join(f">{i} desc\n{s}\n" for i, s in records))
    cut_and_translate(fasta, 300, tmp_path / "f.fna", tmp_path / "f.faa", manifest=tmp_path / "m.tsv", min_length=min_length)
    rows = [f"{fid}\tvirus\t0.1\t0.9\n" for fid, _ in read_fasta(tmp_path / "f.faa")]
    (tmp_path / "p.tsv").write_text(HEADER + "".join(rows))
    titles, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (
        titles.extend(ax.get_title(loc="left") for ax in fig.axes), save(fig, *a, **k))[1])
    out = run_summarize(tmp_path / "p.tsv", tmp_path / "m.tsv", fasta, tmp_path / "out", 300, top_sequences=10)
    return records, out, titles


def ids_in(path, column=0, skip=1):
    return {line.split("\t")[column].split("_chunk_")[0] for line in path.read_text().splitlines()[skip:]}


def test_sequences_shorter_than_min_length_get_a_status_and_no_call_anywhere(tmp_path, monkeypatch):
    records, out, titles = short_sample(tmp_path, monkeypatch, None)  # min_length: the fragment size, 300
    rows = table(out["sequence_summary"])
    assert [r["sequence_id"] for r in rows] == [r[0] for r in records]  # one row each, in input order
    got = {r["sequence_id"]: (r["fragments"], r["fragments_with_frames"], r["viral_fraction"], r["status"], r["call"])
           for r in rows}
    assert got["tiny"] == got["just_short"] == ("0", "0", "NA", "shorter_than_min_length", "no_call")
    assert got["stops"] == ("2", "0", "NA", "no_stop_free_frame", "no_call")
    assert got["exact"][3:] == got["long"][3:] == ("classified", "viral")
    called = {"exact", "long"}
    assert set(dict(read_fasta(out["viral_fasta"]))) == called
    assert ids_in(out["viral_regions"]) == ids_in(out["region_track"]) == ids_in(out["score_track"]) == called
    assert ids_in(out["fragment_calls"]) == ids_in(out["original_calls"]) == called
    plotted = [t.split("  (")[0] for t in titles if "  (" in t]
    assert sorted(plotted) == sorted(called)
    regions = [line.split("\t") for line in out["viral_regions"].read_text().splitlines()[1:]]
    assert [(r[0], r[1], r[2], r[8]) for r in regions] == [("exact", "1", "300", "True"), ("long", "1", "901", "True")]
    bars = [line.split("\t")[:3] for line in out["score_track"].read_text().splitlines()[1:]]
    starts = [r.start for _, r in chunks("long", range(901), 300)]  # the original's fragments of 901 bp
    assert bars == [["exact", "0", "300"]] + [["long", str(a), str(b)] for a, b in zip(starts, starts[1:] + [901])]


def test_with_min_length_0_short_sequences_are_classified_as_the_original_does(tmp_path, monkeypatch):
    records, out, _ = short_sample(tmp_path, monkeypatch, 0)
    got = {r["sequence_id"]: (r["fragments"], r["status"], r["call"]) for r in table(out["sequence_summary"])}
    assert got["tiny"] == got["just_short"] == ("1", "classified", "viral")
    assert got["stops"] == ("2", "no_stop_free_frame", "no_call")
    called = {"tiny", "just_short", "exact", "long"}
    assert set(dict(read_fasta(out["viral_fasta"]))) == ids_in(out["viral_regions"]) == ids_in(out["region_track"]) == called


def test_a_manifest_no_single_min_length_explains_is_refused(sample):
    d, _, _, _ = sample
    lines = (d / "manifest.tsv").read_text().splitlines(keepends=True)
    lines[6] = lines[6].replace("\t900\t2\t", "\t900\t0\t")  # low_1 (900 bp) uncut, short_read (150 bp) cut
    (d / "uncut.tsv").write_text("".join(lines))
    with pytest.raises(VirNucProError, match="'low_1' of 900 bp has no fragment, but 'short_read' of 150 bp was cut"):
        run(d, manifest=d / "uncut.tsv")


def call_of(viral, scored, threshold):
    """The sequence call rule, written out: viral when at least one fragment is viral and the viral
    share of the scored fragments reaches the threshold."""
    return viral > 0 and viral / scored >= threshold


def flips(viral, scored, threshold):
    """The fewest fragment calls whose change changes the sequence call, by trying each count in turn."""
    called = call_of(viral, scored, threshold)
    step = -1 if called else 1
    return next(k for k in range(1, scored + 1) if call_of(viral + step * k, scored, threshold) != called)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_confidence_and_fragments_to_flip_state_the_evidence_of_each_call(sample, threshold):
    d, records, _, scores = sample
    frags = expected_fragments(scores)
    for r in table(run(d, threshold=threshold)["sequence_summary"]):
        mine = [v for f, (v, _, _) in frags.items() if f.rpartition("_chunk_")[0] == r["sequence_id"]]
        if not mine:
            assert (r["confidence"], r["fragments_to_flip"]) == ("NA", "NA")
            continue
        viral, scored = sum(mine), len(mine)
        assert int(r["fragments_with_frames"]) == scored  # the fragments scored
        agree = viral if r["call"] == "viral" else scored - viral
        assert r["confidence"] == f"{agree / scored:.6f}"
        assert int(r["fragments_to_flip"]) == flips(viral, scored, threshold), r


def test_fragments_to_flip_at_thresholds_that_floats_round():
    """Thresholds whose product with the fragment count lands on or next to a whole number: 0.55 * 100 is
    55.00000000000001 in floats, yet 55 / 100 >= 0.55, so 55 viral fragments of 100 make a viral call."""
    from virnucpro.results.sample import _fragments_to_flip

    cases = [(v, n, t) for n in (1, 2, 3, 5, 7, 10, 49, 100) for v in range(n + 1)
             for t in (0.0, 0.1, 0.2, 0.3, 1 / 3, 0.5, 0.55, 0.6, 0.7, 0.9, 1.0)]
    viral, scored, thr = (np.array(x) for x in zip(*cases))
    for t in np.unique(thr):
        pick = thr == t
        called = np.array([call_of(v, n, t) for v, n in zip(viral[pick], scored[pick])])
        got = _fragments_to_flip(viral[pick], scored[pick], called, float(t))
        assert got.tolist() == [flips(v, n, t) for v, n in zip(viral[pick], scored[pick])], t
    above = float(np.nextafter(1 / 3, 1))  # 3 * above rounds to 1.0, yet 1 / 3 < above: 2 of 3 are needed
    assert _fragments_to_flip(np.array([1, 2]), np.array([3, 3]), np.array([False, True]), above).tolist() == [1, 1]
    assert call_of(55, 100, 0.55) and _fragments_to_flip(np.array([55]), np.array([100]), True, 0.55)[0] == 1
