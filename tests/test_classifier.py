"""The classifier: an original-style pickled module converts to identical scores, unsafe pickles are
refused without running, fragment sizes are enforced, and the prediction table is the original's."""

import hashlib
import os
import pickletools
import stat
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch

from tests.original_classifier import make_original_classifier
from virnucpro.classifier import (
    HEADER,
    MLPClassifier,
    classify,
    convert_original,
    load_classifier,
    save_classifier,
)
from virnucpro.embeddings import read_embeddings, write_embeddings
from virnucpro.errors import VirNucProError


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """An original-style 500_model.pth, random features, and the original's prediction table for them."""
    d = tmp_path_factory.mktemp("original")
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(700, 3328)) * 2).astype(np.float32)
    ids = [f"contig_{i % 37}_x_chunk_{i // 37 + 1}{'FR'[i % 2]}{i % 3 + 1}" for i in range(len(x))]
    make_original_classifier(d / "500_model.pth", 3328, frames=(ids, x), table=d / "prediction_results.txt")
    write_embeddings(d / "features.h5", ids, x, {"model": "test"})
    return d


def test_original_file_is_a_main_module_pickle(original):
    """The fixture really is what the original wrote: a whole module whose class lives in __main__."""
    with pytest.raises(Exception, match="__main__"):
        torch.load(original / "500_model.pth", weights_only=True)


def test_conversion_reproduces_the_original_table(original, tmp_path):
    conv = tmp_path / "500_model.safetensors"
    convert_original(original / "500_model.pth", conv)
    clf = load_classifier(conv)
    assert clf.fragment_size == 500 and clf.input_dim == 3328
    assert clf.source == "500_model.pth"
    assert clf.source_sha256 == hashlib.sha256((original / "500_model.pth").read_bytes()).hexdigest()
    assert not clf.model.training
    assert clf.model.bn1.num_batches_tracked.item() == 5  # running statistics came along
    for model in (conv, original / "500_model.pth"):  # the converted file and the original directly
        out = tmp_path / f"pred_{model.suffix}.tsv"
        classify(original / "features.h5", model, out, fragment_size=500)
        assert out.read_text() == (original / "prediction_results.txt").read_text()


def test_output_format(original, tmp_path):
    out = tmp_path / "pred.tsv"
    classify(original / "features.h5", original / "500_model.pth", out, 500)
    lines = out.read_text().splitlines(keepends=True)
    assert lines[0] == HEADER == "Sequence_ID\tPrediction\tscore1\tscore2\n"
    ids, _, _ = read_embeddings(original / "features.h5")
    assert len(lines) == len(ids) + 1
    labels = set()
    for line, frame in zip(lines[1:], ids):
        fid, label, s1, s2 = line.rstrip("\n").split("\t")
        assert fid == frame
        assert s1 == str(np.float32(s1)) and s2 == str(np.float32(s2))  # float32 printed as the original
        assert abs(float(s1) + float(s2) - 1) < 1e-6
        assert label == ("virus" if float(s2) > float(s1) else "others")
        labels.add(label)
    assert labels == {"virus", "others"}  # the test data exercise both labels


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_converted_file_is_as_readable_as_any_new_file(original, tmp_path, umask):
    """safetensors creates its files 0600 whatever the umask: the converted classifier (and a trained
    one, written the same way) gets the mode of a plain new file, like the original beside it."""
    previous = os.umask(umask)
    try:
        convert_original(original / "500_model.pth", tmp_path / "500_model.safetensors")
        save_classifier(MLPClassifier(input_dim=24, hidden_dim=8), tmp_path / "m.safetensors", 300, "test", "")
        (tmp_path / "plain").write_text("")
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == expected
    for name in ("500_model.safetensors", "m.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_refuses_pickle_that_runs_code(tmp_path):
    marker = tmp_path / "executed"
    payload = textwrap.dedent(
        f"""
        import os, torch
        class Exploit:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))
        torch.save({{"hidden_layer.weight": Exploit()}}, "{tmp_path}/500_model.pth")
        """
    )
    subprocess.run([sys.executable, "-c", payload], check=True)
    with pytest.raises(VirNucProError, match=r"refused to load.*(posix|os)\.system"):
        load_classifier(tmp_path / "500_model.pth")
    with pytest.raises(VirNucProError, match="refused"):
        convert_original(tmp_path / "500_model.pth", tmp_path / "out.safetensors")
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()
    # the payload is real: the pickle calls os.system with the command (read statically, never run)
    with zipfile.ZipFile(tmp_path / "500_model.pth") as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    assert any(arg in ("posix system", "nt system") for name, arg in ops if name == "GLOBAL")
    assert ("BINUNICODE", f"touch {marker}") in ops or ("SHORT_BINUNICODE", f"touch {marker}") in ops


def test_refuses_other_pickled_classes(tmp_path):
    torch.save(torch.nn.Linear(4, 2), tmp_path / "500_model.pth")
    with pytest.raises(VirNucProError, match="not the VirNucPro MLPClassifier"):
        load_classifier(tmp_path / "500_model.pth")


def test_fragment_size_mismatch(original, tmp_path):
    with pytest.raises(VirNucProError, match=r"500 bp fragments, but fragment_size is 300"):
        classify(original / "features.h5", original / "500_model.pth", tmp_path / "p.tsv", fragment_size=300)
    assert not (tmp_path / "p.tsv").exists()
    conv = tmp_path / "c.safetensors"
    convert_original(original / "500_model.pth", conv)
    with pytest.raises(VirNucProError, match=r"500 bp fragments, but fragment_size is 300"):
        classify(original / "features.h5", conv, tmp_path / "p.tsv", fragment_size=300)


def test_conversion_needs_the_original_name(original, tmp_path):
    renamed = tmp_path / "model.pth"
    renamed.write_bytes((original / "500_model.pth").read_bytes())
    with pytest.raises(VirNucProError, match="cannot tell the fragment size"):
        convert_original(renamed, tmp_path / "out.safetensors")
    with pytest.raises(VirNucProError, match="fragment size is unknown"):
        classify(original / "features.h5", renamed, tmp_path / "p.tsv", fragment_size=500)
    assert not (tmp_path / "out.safetensors").exists()


def test_feature_width_must_match(tmp_path):
    torch.manual_seed(0)
    save_classifier(MLPClassifier(input_dim=24, hidden_dim=8), tmp_path / "m.safetensors", 300, "test", "")
    write_embeddings(tmp_path / "f.h5", ["s_chunk_1F1"], np.zeros((1, 20), np.float32), {})
    with pytest.raises(VirNucProError, match="20 values per frame.*expects 24"):
        classify(tmp_path / "f.h5", tmp_path / "m.safetensors", tmp_path / "p.tsv", 300)


def test_converted_metadata_is_checked(tmp_path):
    from safetensors.torch import load_file, save_file

    save_classifier(MLPClassifier(input_dim=24, hidden_dim=8), tmp_path / "m.safetensors", 300, "test", "abc")
    state = load_file(tmp_path / "m.safetensors")
    save_file(state, tmp_path / "bare.safetensors", metadata={"format": "something else"})
    with pytest.raises(VirNucProError, match="not a converted VirNucPro classifier"):
        load_classifier(tmp_path / "bare.safetensors")


def test_empty_feature_file(tmp_path):
    save_classifier(MLPClassifier(input_dim=24, hidden_dim=8), tmp_path / "m.safetensors", 500, "test", "")
    write_embeddings(tmp_path / "f.h5", [], np.zeros((0, 24), np.float32), {})
    classify(tmp_path / "f.h5", tmp_path / "m.safetensors", tmp_path / "p.tsv", 500)
    assert (tmp_path / "p.tsv").read_text() == HEADER

