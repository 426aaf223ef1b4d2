"""`prediction_results.txt` and `prediction_results_highestscore.csv` equal, byte for byte, the files the
original VirNucPro `prediction.py` writes from the same classifier probabilities.

`original_prediction_files` below is the end of the original's `make_predictdata` (Li-Jing-1997/VirNucPro,
prediction.py), written out here: `torch.max` over the softmax rows for the label, `str` of each
float32 value, then pandas reading the table back, `groupby("Modified_ID").apply(determine_virus)`.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from virnucpro.io.seqio import read_fasta
from virnucpro.models.classifier import prediction_lines
from virnucpro.steps.prepare import cut_and_translate
from tests.summaries import run_summarize

SENSE = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in ("TAA", "TAG", "TGA")]


def determine_virus(group):  # the original's, verbatim
    max_score1 = group["score1"].max()
    max_score2 = group["score2"].max()
    return pd.Series({"Is_Virus": max_score2 >= max_score1})


def original_prediction_files(seqids, probabilities, folder):
    """The original's two result files from frame ids and an (N, 2) float32 array of probabilities."""
    label_map = {1: "virus", 0: "others"}
    _, predicted = torch.max(torch.from_numpy(probabilities), 1)
    predictions = [label_map[pred.item()] for pred in predicted]
    rows = list(probabilities)  # as `all_probabilities.extend(probabilities.cpu().numpy())`
    output_file = folder / "prediction_results.txt"
    with open(output_file, "w") as f:
        f.write("Sequence_ID\tPrediction\tscore1\tscore2\n")
        for seqid, prediction, probability in zip(seqids, predictions, rows):
            prob_str = "\t".join(map(str, probability))
            f.write(f"{seqid}\t{prediction}\t{prob_str}\n")
    df = pd.read_csv(output_file, sep="\t")
    df["Modified_ID"] = df["Sequence_ID"].str[:-2]
    df = df.groupby("Modified_ID", group_keys=False).apply(determine_virus).reset_index()
    df.to_csv(folder / "prediction_results_highestscore.csv", sep="\t", index=False)
    return output_file, folder / "prediction_results_highestscore.csv"


def probabilities_for(frames, rng):
    """Softmax rows of random logits, with an exact tie, saturated scores, tiny values in exponent form,
    and near ties across two frames of one fragment: max score1 one float32 step above max score2 (not
    viral) or equal to it (viral). Returns the probabilities and {fragment: expected call} of those."""
    logits = torch.from_numpy(rng.normal(0, 4, (len(frames), 2)).astype(np.float32))
    p = torch.softmax(logits, dim=1).numpy()
    p[0] = [0.5, 0.5]  # a tie: label `others` (the first maximum)
    p[1] = torch.softmax(torch.tensor([[40.0, -40.0]]), dim=1).numpy()[0]  # 1.0 and ~1.8e-35
    p[2] = torch.softmax(torch.tensor([[-9.0, 9.0]]), dim=1).numpy()[0]  # ~1.5e-08 and 1.0
    by_fragment = {}
    for i, f in enumerate(frames):
        by_fragment.setdefault(f[:-2], []).append(i)
    near = {}
    for n, (fragment, ix) in enumerate([(f, ix) for f, ix in by_fragment.items() if len(ix) >= 2][:6]):
        x = np.float32(rng.uniform(0.55, 0.95))
        above = np.nextafter(x, np.float32(1)) if n % 2 else x
        p[ix] = 0.5  # the other frames raise neither maximum
        p[ix[0]], p[ix[1]] = [np.float32(1) - x, x], [above, np.float32(1) - above]
        near[fragment] = "False" if n % 2 else "True"
    return p.astype(np.float32), near


@pytest.fixture
def scored(tmp_path):
    """A real `prepare` run over ids that sort differently as strings, scored with `probabilities_for`."""
    rng = np.random.default_rng(5)
    ids = ["contig_2", "contig_10", "Contig_b", "a", "a_1", "seq_chunk_7", "x.y-z"]
    records = [(i, "".join(rng.choice(SENSE, int(rng.integers(40, 1800))))) for i in ids]
    records[1] = ("contig_10", "".join(rng.choice(SENSE, 1700)))  # 11 fragments: chunk_10 sorts before chunk_2
    records.append(("gcc_rich", "GCC" * 1100))  # 7 fragments, six stop-free frames each
    fasta = tmp_path / "input.fa"
    fasta.write_text("".join(f">{i} desc\n{s}\n" for i, s in records))
    cut_and_translate(fasta, 500, tmp_path / "f.fna", tmp_path / "f.faa", manifest=tmp_path / "manifest.tsv")
    frames = [fid for fid, _ in read_fasta(tmp_path / "f.faa")]
    probabilities, near = probabilities_for(frames, rng)
    (tmp_path / "predictions.tsv").write_text(
        "Sequence_ID\tPrediction\tscore1\tscore2\n" + "".join(prediction_lines(frames, probabilities))
    )
    return tmp_path, frames, probabilities, near


def test_original_files_equal_what_the_original_writes(scored):
    d, frames, probabilities, near = scored
    (d / "original").mkdir()
    ref_txt, ref_csv = original_prediction_files(frames, probabilities, d / "original")
    out = d / "out"
    run_summarize(d / "predictions.tsv", d / "manifest.tsv", d / "input.fa", out, 500, top_sequences=1)
    assert (out / "prediction_results.txt").read_bytes() == ref_txt.read_bytes()
    assert (out / "prediction_results.txt").read_bytes() == (d / "predictions.tsv").read_bytes()  # a drop-in copy
    assert (out / "prediction_results_highestscore.csv").read_bytes() == ref_csv.read_bytes()
    text = ref_csv.read_text()
    assert text.index("contig_10_chunk_10\t") < text.index("contig_10_chunk_2\t")  # string order, as pandas
    assert "e-" in ref_txt.read_text() and "\tothers\t0.5\t0.5\n" in ref_txt.read_text()
    calls = dict(line.split("\t") for line in text.splitlines()[1:])
    assert len(near) == 6 and {f: calls[f] for f in near} == near  # one float32 step decides


def test_original_files_of_a_sample_without_frames(tmp_path):
    (tmp_path / "in.fa").write_text(">n1\nNNNNNNNNNN\n")
    cut_and_translate(tmp_path / "in.fa", 300, tmp_path / "f.fna", tmp_path / "f.faa", manifest=tmp_path / "m.tsv")
    (tmp_path / "p.tsv").write_text("Sequence_ID\tPrediction\tscore1\tscore2\n")
    out = run_summarize(tmp_path / "p.tsv", tmp_path / "m.tsv", tmp_path / "in.fa", tmp_path / "out", 300)
    assert out["original_predictions"].read_text() == "Sequence_ID\tPrediction\tscore1\tscore2\n"
    assert out["original_calls"].read_text() == "Modified_ID\tIs_Virus\n"
