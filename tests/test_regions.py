"""Viral regions and genome-browser tracks from a real `prepare` run, against a per-fragment reading of
the region rule written here (fragment positions from tests/reference_frontend.py, no shared code)."""

import numpy as np
import pytest

from tests.reference_frontend import chunks
from virnucpro.errors import VirNucProError
from virnucpro.io.seqio import read_fasta
from virnucpro.steps.prepare import cut_and_translate
from tests.summaries import run_summarize

SENSE = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in ("TAA", "TAG", "TGA")]
SIZE = 500
# id: per-fragment pattern: V viral, o not viral, - no stop-free frame (a block of N)
PATTERNS = {
    "contig_2": "VVoVVoooVVV",
    "Contig_A": "-V-VVoVooVoV",
    "contig_10": "oooo",
    "short": "V",
    "pair": "Vo",
    "apart": "VooV",
    "edge": "VVooooVV",
    "NODE_1_length_4000_cov_12.5_" + "x" * 60 + "_end": "ooVVVooo",  # a long id
    "stray": "oooVoooo",  # not called viral: a lone viral fragment is no region
}
ODD = {"odd_1001": (1001, "oVV"), "odd_2600": (2600, "VVVooV")}  # overlapping fragments


def build(tmp_path):
    rng = np.random.default_rng(2)
    records, patterns = [], {}
    for sid, pattern in PATTERNS.items():
        blocks = ["N" * SIZE if c == "-" else "".join(rng.choice(SENSE, SIZE // 3 + 1))[:SIZE] for c in pattern]
        records.append((sid, "".join(blocks)))
        patterns[sid] = pattern
    for sid, (length, pattern) in ODD.items():
        records.append((sid, "".join(rng.choice(SENSE, length // 3 + 1))[:length]))
        patterns[sid] = pattern
    fasta = tmp_path / "in.fa"
    fasta.write_text("".join(f">{i} a description\n{s}\n" for i, s in records))
    cut_and_translate(fasta, SIZE, tmp_path / "f.fna", tmp_path / "f.faa", manifest=tmp_path / "m.tsv")
    rows, scores = [], {}
    for fid, _ in read_fasta(tmp_path / "f.faa"):
        sid, _, k = fid[:-2].rpartition("_chunk_")
        viral = patterns[sid][int(k) - 1] == "V"
        s2 = np.float32(rng.uniform(0.6, 0.99) if viral else rng.uniform(0.01, 0.4))
        s1 = np.float32(1) - s2
        scores[fid[:-2]] = max(scores.get(fid[:-2], s2), s2)
        rows.append(f"{fid}\t{'virus' if s2 > s1 else 'others'}\t{s1}\t{s2}\n")
    (tmp_path / "p.tsv").write_text("Sequence_ID\tPrediction\tscore1\tscore2\n" + "".join(rows))
    return dict(records), patterns, scores


@pytest.fixture
def sample(tmp_path):
    return (tmp_path, *build(tmp_path))


def run(d, max_gap=1, min_viral=2, top=3, threshold=0.5):
    return run_summarize(d / "p.tsv", d / "m.tsv", d / "in.fa", d / f"out_{max_gap}_{min_viral}_{threshold}", SIZE,
                         "s1", threshold=threshold, top_sequences=top, max_gap_fragments=max_gap,
                         min_viral_fragments=min_viral)


def spans(sid, seq):
    """(fragment id, start, end) of the original's fragments: its slicing applied to the positions."""
    return [(fid, r.start, r.stop) for fid, r in chunks(sid, range(len(seq)), SIZE)]


def reference_regions(sid, seq, pattern, scores, max_gap, min_viral):
    """Rows of viral_regions.tsv for one sequence, fragment by fragment."""
    starts = [(start, end) for _, start, end in spans(sid, seq)]
    viral = [k for k, c in enumerate(pattern) if c == "V"]
    runs = []
    for k in viral:
        if runs and k - runs[-1][-1] - 1 <= max_gap:
            runs[-1].append(k)
        else:
            runs.append([k])
    classified = [k for k, c in enumerate(pattern) if c != "-"]
    called = bool(viral) and len(viral) / len(classified) >= 0.5  # the sequence's call, threshold 0.5
    rows = []
    for r in runs:
        if len(r) < min_viral and not called:
            continue
        inside = [scores[f"{sid}_chunk_{k + 1}"] for k in range(r[0], r[-1] + 1) if pattern[k] != "-"]
        start, end = starts[r[0]][0] + 1, starts[r[-1]][1]
        rows.append([sid, str(start), str(end), str(end - start + 1), str(r[-1] - r[0] + 1), str(len(r)),
                     f"{np.mean(np.float64(inside)):.6f}", f"{max(inside):.6f}", str(start == 1 and end == len(seq))])
    return rows


def table(path):
    lines = path.read_text().splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


@pytest.mark.parametrize("max_gap,min_viral", [(1, 2), (0, 1), (2, 3), (1, 1)])
def test_regions_follow_the_rule(sample, max_gap, min_viral):
    d, records, patterns, scores = sample
    header, rows = table(run(d, max_gap, min_viral)["viral_regions"])
    assert header == ["sequence_id", "start", "end", "length", "fragments", "viral_fragments",
                      "mean_virus_score", "max_virus_score", "whole_sequence"]
    expected = [row for sid, seq in records.items()
                for row in reference_regions(sid, seq, patterns[sid], scores, max_gap, min_viral)]
    assert rows == expected


def test_regions_of_the_default_rule(sample):
    d, _, _, _ = sample
    _, rows = table(run(d)["viral_regions"])
    found = {}
    for r in rows:
        found.setdefault(r[0], []).append((int(r[1]), int(r[2]), r[8]))
    assert found["contig_2"] == [(1, 2500, "False"), (4001, 5500, "False")]  # VVoVV ooo VVV
    assert found["Contig_A"] == [(501, 3500, "False"), (4501, 6000, "False")]  # - counts as a gap
    assert found["short"] == [(1, 500, "True")]  # a one-fragment sequence needs only its fragment
    assert found["pair"] == [(1, 500, "False")]  # Vo: called viral (1 of 2), so its lone viral fragment
    assert found["apart"] == [(1, 500, "False"), (1501, 2000, "False")]  # VooV: called viral, two runs
    assert "contig_10" not in found and "stray" not in found
    assert found["edge"] == [(1, 1000, "False"), (3001, 4000, "False")]
    assert found["odd_1001"] == [(334, 1001, "False")]  # fragments at 0, 333, 666 (overlapping)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("max_gap,min_viral", [(1, 2), (0, 3)])
def test_a_sequence_called_viral_has_a_region_and_regions_lie_in_classified_sequences(
        sample, threshold, max_gap, min_viral):
    """Whatever the settings: every sequence called viral has at least one region; every region lies in
    a classified sequence; a sequence without one viral fragment is never called viral (threshold 0)."""
    d, _, patterns, _ = sample
    out = run(d, max_gap, min_viral, threshold=threshold)
    _, summary = table(out["sequence_summary"])
    _, regions = table(out["viral_regions"])
    called = {r[0] for r in summary if r[9] == "viral"}
    assert called <= {r[0] for r in regions}
    assert {r[0] for r in regions} <= {r[0] for r in summary if r[8] == "classified"}
    assert called == {sid for sid, p in patterns.items()
                      if "V" in p and p.count("V") / (len(p) - p.count("-")) >= threshold}


def test_tracks_are_sorted_half_open_with_a_track_line(sample):
    d, records, _, _ = sample
    out = run(d)
    _, regions = table(out["viral_regions"])
    bed = out["region_track"].read_text().splitlines()
    assert bed[0].startswith('track name="s1 viral regions"') and 'itemRgb="On"' in bed[0]
    features = [line.split("\t") for line in bed[1:]]
    assert all(len(f) == 9 for f in features)
    key = [(f[0].encode(), int(f[1])) for f in features]
    assert key == sorted(key)  # byte order of ids, then start
    assert sorted((f[0], int(f[1]) + 1, int(f[2])) for f in features) == sorted(
        (r[0], int(r[1]), int(r[2])) for r in regions)  # 0-based start, same end
    assert all(f[6:8] == f[1:3] and f[8] == "200,0,0" for f in features)
    names = [f[3] for f in features]
    assert len(set(names)) == len(names) and sorted(names) == sorted(f"{r[0]}|viral_region_{r[1]}_{r[2]}" for r in regions)
    assert "contig_2|viral_region_1_2500" in names and "contig_2|viral_region_4001_5500" in names

    graph = out["score_track"].read_text().splitlines()
    assert graph[0].startswith('track type=bedGraph name="s1 virus score"')
    bars = [line.split("\t") for line in graph[1:]]
    key = [(b[0].encode(), int(b[1])) for b in bars]
    assert key == sorted(key)
    fragment_scores = {r[0]: r[3] for r in table(out["fragment_calls"])[1]}
    for sid, seq in records.items():
        mine = [(int(b[1]), int(b[2]), b[3]) for b in bars if b[0] == sid]
        assert all(0 <= s < e <= len(seq) for s, e, _ in mine)
        assert all(e1 <= s2 for (_, e1, _), (s2, _, _) in zip(mine, mine[1:]))  # no overlap
        expected = [(start, fragment_scores[fid]) for fid, start, _ in spans(sid, seq) if fid in fragment_scores]
        assert expected == [(s, v) for s, _, v in mine]
        if mine:  # each fragment's bar ends where the next fragment starts, the last at the sequence end
            assert mine[-1][1] == len(seq) or records[sid][mine[-1][1]:].strip("N") == ""
    assert {b[0] for b in bars} == set(records)


def test_bad_region_settings_name_the_setting(sample):
    d, _, _, _ = sample
    with pytest.raises(VirNucProError, match="regions.max_gap_fragments must be a whole number >= 0, not -1"):
        run(d, max_gap=-1)
    with pytest.raises(VirNucProError, match="regions.min_viral_fragments must be a whole number >= 1, not 0"):
        run(d, min_viral=0)


def test_plots_carry_legend_threshold_sample_and_region_bands(sample, monkeypatch):
    from matplotlib.figure import Figure

    from virnucpro.results.plots import ELLIPSIS, REGION_COLOUR, shorten

    drawn, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (drawn.append(fig), save(fig, *a, **k))[1])
    d, records, _, _ = sample
    run(d, top=len(records))
    histogram, along = drawn
    ax = histogram.axes[0]
    assert ax.get_title(loc="left").startswith("s1: virus scores of ")
    labels = [t.get_text() for t in histogram.legends[0].get_texts()]
    assert any(t.startswith("frame called virus") for t in labels) and any("0.5" in t for t in labels)
    assert "0.5" in [t.get_text() for t in ax.texts]  # the threshold line labelled on the plot

    assert along._suptitle.get_text().startswith("s1: virus score along the")
    assert [t.get_text() for t in along.legends[0].get_texts()] == [
        "fragment called viral", "fragment not called viral", "viral region", "virus score 0.5"]
    _, regions = table(d / "out_1_2_0.5" / "viral_regions.tsv")
    for ax in along.axes:
        title = ax.get_title(loc="left")
        sid = next(i for i in records if title.startswith(shorten(i) + "  ("))
        bands = [p for p in ax.patches if p.get_facecolor()[:3] == pytest.approx(_rgb(REGION_COLOUR))]
        assert len(bands) == sum(r[0] == sid for r in regions), sid
        assert "0.5" in [t.get_text() for t in ax.texts]
    long_id = next(i for i in records if len(i) > 60)
    assert len(shorten(long_id)) == 60 and ELLIPSIS in shorten(long_id)
    assert shorten(long_id).startswith(long_id[:29]) and shorten(long_id).endswith(long_id[-29:])
    assert shorten("contig_2") == "contig_2"


def _rgb(colour):
    from matplotlib.colors import to_rgb

    return to_rgb(colour)


def test_region_fasta_holds_each_region_bases_named_by_sequence_and_coordinates(sample):
    d, records, _, _ = sample
    out = run(d)
    _, regions = table(out["viral_regions"])
    text = out["regions_fasta"].read_text()
    headers = [line[1:] for line in text.splitlines() if line.startswith(">")]
    got = dict(read_fasta(out["regions_fasta"]))
    assert list(got) == [f"{r[0]}|viral_region_{r[1]}_{r[2]}" for r in regions]  # the table's order
    for r in regions:
        assert got[f"{r[0]}|viral_region_{r[1]}_{r[2]}"] == records[r[0]][int(r[1]) - 1:int(r[2])]  # 1-based, inclusive
    count = {sid: sum(r[0] == sid for r in regions) for sid in records}
    seen = {}
    for h, r in zip(headers, regions):
        seen[r[0]] = seen.get(r[0], 0) + 1
        assert h.split(" ")[1:] == ["sample=s1", f"region={seen[r[0]]}/{count[r[0]]}", f"length={r[3]}",
                                    f"mean_virus_score={r[6]}"]
    assert headers[0] == "contig_2|viral_region_1_2500 sample=s1 region=1/2 length=2500 mean_virus_score=" + regions[0][6]
    assert max(len(line) for line in text.splitlines() if not line.startswith(">")) == 60


def test_gff3_is_read_by_gffutils_with_the_table_s_regions(sample):
    import gffutils

    d, records, _, _ = sample
    out = run(d)
    _, regions = table(out["viral_regions"])
    db = gffutils.create_db(str(out["regions_gff"]), ":memory:")  # duplicate IDs would raise
    features = list(db.all_features(order_by=None))
    assert [(f.seqid, f.start, f.end, float(f.score), f.featuretype, f.source, f.strand) for f in features] == [
        (r[0], int(r[1]), int(r[2]), float(r[6]), "viral_sequence", "VirNucPro", ".") for r in regions]
    for f, r in zip(features, regions):
        assert f.id == f.attributes["Name"][0] == f"{r[0]}|viral_region_{r[1]}_{r[2]}"
        assert (f.attributes["fragments"], f.attributes["viral_fragments"], f.attributes["max_virus_score"],
                f.attributes["whole_sequence"]) == ([r[4]], [r[5]], [r[7]], [r[8].lower()])
    lines = out["regions_gff"].read_text().splitlines()
    assert lines[0] == "##gff-version 3"
    with_regions = list(dict.fromkeys(r[0] for r in regions))
    assert lines[1:1 + len(with_regions)] == [f"##sequence-region {s} 1 {len(records[s])}" for s in with_regions]
    assert all(len(line.split("\t")) == 9 for line in lines[1 + len(with_regions):])


def test_gff3_escapes_reserved_characters_and_gffutils_reads_them_back(tmp_path):
    import gffutils

    from virnucpro.results.gff import seqid_text, value_text

    assert seqid_text("NODE_1|x.y:z") == "NODE_1|x.y:z" and seqid_text("a;b=c d/e") == "a%3Bb%3Dc%20d%2Fe"
    assert value_text("a;b=c,d&e%f|g h") == "a%3Bb%3Dc%2Cd%26e%25f|g h"
    rng = np.random.default_rng(8)
    sid = "odd;id=1,x&y"
    (tmp_path / "in.fa").write_text(f">{sid}\n" + "".join(rng.choice(SENSE, 400)) + "\n")
    cut_and_translate(tmp_path / "in.fa", SIZE, tmp_path / "f.fna", tmp_path / "f.faa", manifest=tmp_path / "m.tsv")
    rows = [f"{fid}\tvirus\t0.1\t0.9\n" for fid, _ in read_fasta(tmp_path / "f.faa")]
    (tmp_path / "p.tsv").write_text("Sequence_ID\tPrediction\tscore1\tscore2\n" + "".join(rows))
    out = run(tmp_path)
    (feature,) = gffutils.create_db(str(out["regions_gff"]), ":memory:").all_features()
    assert (feature.seqid, feature.start, feature.end) == ("odd%3Bid%3D1%2Cx%26y", 1, 1200)
    assert feature.attributes["Name"] == [f"{sid}|viral_region_1_1200"]  # unescaped by the parser
