"""The classifier: an original-style pickled module converts to identical scores, unsafe pickles are
refused without running, fragment sizes are enforced, the prediction table is the original's, and a
frame's scores do not depend on the frames scored beside it."""

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
from tests.stored_features import stored_features
from virnucpro.errors import VirNucProError
from virnucpro.steps.models import make_note
from virnucpro.models import classifier
from virnucpro.models.classifier import PARAMETERS, Classifier, read_classifier
from virnucpro.models.mlp import MLPClassifier, convert_original, load_classifier, write_classifier_file
from virnucpro.steps.classify import HEADER, classify


def save_classifier(model, out, fragment_size, source="test", source_sha256=""):
    write_classifier_file(model, out, fragment_size, source, source_sha256)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """An original-style 500_model.pth, a sample whose features (random) sit in an embedding store, and
    the original's prediction table for those features."""
    d = tmp_path_factory.mktemp("original")
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(700, 3328)) * 2).astype(np.float32)
    ids = [f"contig_{i % 37}_x_chunk_{i // 37 + 1}{'FR'[i % 2]}{i % 3 + 1}" for i in range(len(x))]
    make_original_classifier(d / "500_model.pth", 3328, frames=(ids, x), table=d / "prediction_results.txt")
    return d, ids, stored_features(d / "sample", ids, x, 768)


def scored(path):
    """(ids, labels, (N, 2) float64 scores) of a prediction table."""
    rows = [line.rstrip("\n").split("\t") for line in path.read_text().splitlines(keepends=True)[1:]]
    return [r[0] for r in rows], [r[1] for r in rows], np.array([[float(r[2]), float(r[3])] for r in rows])


def test_original_file_is_a_main_module_pickle(original):
    """The fixture really is what the original wrote: a whole module whose class lives in __main__."""
    d, _, _ = original
    with pytest.raises(Exception, match="__main__"):
        torch.load(d / "500_model.pth", weights_only=True)


def test_conversion_reproduces_the_original_table(original, tmp_path):
    """Converted, the classifier gives the original's calls and scores. The original scores 256 rows at
    a time and the last 188 rows alone; we score every block at 256 rows, so on a BLAS whose rounding
    follows the row count a score may differ in its last float32 digit, never more."""
    d, ids, member = original
    pth = d / "500_model.pth"
    conv = tmp_path / "500_model.safetensors"
    convert_original(pth, conv, sha256(pth))
    clf = load_classifier(conv)
    assert clf.fragment_size == 500 and clf.input_dim == 3328
    assert clf.source == "500_model.pth" and clf.source_sha256 == sha256(pth)
    assert not clf.model.training
    assert clf.model.bn1.num_batches_tracked.item() == 5  # running statistics came along
    want_ids, want_labels, want = scored(d / "prediction_results.txt")
    tables = []
    for model in (conv, pth):  # our converted file, and the original through its conversion
        out = tmp_path / f"pred_{model.suffix}.tsv"
        classify(member, make_note("classifier", model, tmp_path / "models"), 500, out)
        got_ids, got_labels, got = scored(out)
        assert got_ids == want_ids == ids and got_labels == want_labels
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        tables.append(out.read_bytes())
    assert tables[0] == tables[1]
    assert len(list((tmp_path / "models" / "converted").glob("500_model-*.safetensors"))) == 1


def numpy_classifier(model):
    """The classify step's classifier holding the parameters of the torch module `model`."""
    state = model.state_dict()
    return Classifier({name: state[name].numpy() for name in PARAMETERS}, 500, "test", "")


def trained_like(seed):
    """An MLPClassifier with non-trivial BatchNorm statistics and affine parameters, in eval mode."""
    torch.manual_seed(seed)
    model = MLPClassifier(input_dim=3328)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(64, 3328) * 3 + 0.5)
        model.bn1.weight.normal_(1.0, 0.3)
        model.bn1.bias.normal_(0.0, 0.3)
    return model.eval()


def test_numpy_scores_agree_with_the_torch_forward():
    """The classify step's NumPy arithmetic against the torch module's eval forward and softmax, in float32:
    the sums of 3328 products round differently in the two, by a few float32 steps of a score near 1."""
    model = trained_like(2)
    x = (np.random.default_rng(6).normal(size=(700, 3328)) * 2).astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
        model.output_layer.bias[1] -= (logits[:, 1] - logits[:, 0]).median()  # as many virus calls as others
        want = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
    got = numpy_classifier(model).scores(x)
    assert got.dtype == np.float32 and got.shape == (700, 2)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert 0.05 < (got[:, 1] > got[:, 0]).mean() < 0.95  # both calls occur


def test_a_frame_scores_the_same_beside_any_other_frames(monkeypatch):
    """Blocks of one shape: the same rows in another order, or alone, get the same bits. Constructed
    condition: the products round differently for each row count (as a BLAS may for small ones), so a
    block not padded to BLOCK rows gives other bits on every machine."""
    real = classifier.affine
    monkeypatch.setattr(classifier, "affine", lambda x, w, b: real(x, w, b) * np.float32(1 + len(x) * 2.0**-20))
    clf = numpy_classifier(trained_like(1))
    x = np.random.default_rng(4).normal(size=(300, 3328)).astype(np.float32)
    whole = clf.scores(x)
    order = np.random.default_rng(5).permutation(300)
    assert np.array_equal(clf.scores(x[order]), whole[order])
    for i in (0, 7, 299):
        assert np.array_equal(clf.scores(x[i : i + 1]), whole[i : i + 1])


def test_scores_do_not_depend_on_the_blas_threads(tmp_path):
    """A job's threads set OPENBLAS_NUM_THREADS (Snakemake does): 1 and 2 threads, constructed here in fresh
    processes, give the same bits."""
    write_classifier_file(trained_like(3), tmp_path / "m.safetensors", 500, "test", "0" * 64)
    np.save(tmp_path / "x.npy", np.random.default_rng(7).normal(size=(600, 3328)).astype(np.float32))
    code = textwrap.dedent("""
        import sys, numpy as np
        from virnucpro.models.classifier import from_file
        np.save(sys.argv[2], from_file(sys.argv[1]).scores(np.load(sys.argv[3])))
    """)
    for threads in ("1", "2"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.safetensors"), str(tmp_path / f"s{threads}.npy"),
                        str(tmp_path / "x.npy")], check=True, env=env)
    assert np.load(tmp_path / "s1.npy").tobytes() == np.load(tmp_path / "s2.npy").tobytes()


def test_output_format(original, tmp_path):
    d, ids, member = original
    out = tmp_path / "pred.tsv"
    classify(member, make_note("classifier", d / "500_model.pth", tmp_path / "models"), 500, out)
    lines = out.read_text().splitlines(keepends=True)
    assert lines[0] == HEADER == "Sequence_ID\tPrediction\tscore1\tscore2\n"
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
def test_converted_file_is_as_readable_as_any_new_file(original, tmp_path, umask, tiny_models):
    """safetensors creates its files 0600 whatever the umask: the converted classifier and ESM-2 (and a
    trained classifier, written the same way) get the mode of a plain new file, like the originals."""
    from virnucpro.steps.models import ensure_converted

    d, _, _ = original
    previous = os.umask(umask)
    try:
        converted = [ensure_converted("classifier", d / "500_model.pth", tmp_path)[0],
                     ensure_converted("esm2", tiny_models["models.esm2"], tmp_path)[0]]
        save_classifier(MLPClassifier(input_dim=24, hidden_dim=8), tmp_path / "m.safetensors", 300, "test", "")
        (tmp_path / "plain").write_text("")
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == expected
    for path in (*converted, tmp_path / "m.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == expected, path.name


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
        convert_original(tmp_path / "500_model.pth", tmp_path / "out.safetensors", "0" * 64)
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
    d, _, sample = original
    with pytest.raises(VirNucProError, match=r"500 bp fragments, but fragment_size is 300"):
        classify(sample, make_note("classifier", d / "500_model.pth", tmp_path / "models"), 300, tmp_path / "p.tsv")
    assert not (tmp_path / "p.tsv").exists()
    conv = tmp_path / "c.safetensors"
    convert_original(d / "500_model.pth", conv, sha256(d / "500_model.pth"))
    with pytest.raises(VirNucProError, match=r"500 bp fragments, but fragment_size is 300"):
        classify(sample, make_note("classifier", conv, tmp_path / "models"), 300, tmp_path / "p.tsv")


def test_conversion_needs_the_original_name(original, tmp_path):
    d, _, sample = original
    renamed = tmp_path / "model.pth"
    renamed.write_bytes((d / "500_model.pth").read_bytes())
    with pytest.raises(VirNucProError, match="cannot tell the fragment size"):
        convert_original(renamed, tmp_path / "out.safetensors", sha256(renamed))
    with pytest.raises(VirNucProError, match="cannot tell the fragment size"):
        classify(sample, make_note("classifier", renamed, tmp_path / "models"), 500, tmp_path / "p.tsv")
    assert not (tmp_path / "out.safetensors").exists() and not (tmp_path / "p.tsv").exists()


def test_feature_width_must_match(tmp_path):
    torch.manual_seed(0)
    save_classifier(MLPClassifier(input_dim=24, hidden_dim=8), tmp_path / "m.safetensors", 300)
    sample = stored_features(tmp_path / "s", ["s_chunk_1F1"], np.zeros((1, 20)), 8)
    with pytest.raises(VirNucProError, match="20 values per frame.*expects 24"):
        classify(sample, make_note("classifier", tmp_path / "m.safetensors", tmp_path / "models"), 300, tmp_path / "p.tsv")


def test_converted_metadata_is_checked(tmp_path):
    from safetensors.torch import load_file, save_file

    save_classifier(MLPClassifier(input_dim=24, hidden_dim=8), tmp_path / "m.safetensors", 300, "test", "abc")
    state = load_file(tmp_path / "m.safetensors")
    save_file(state, tmp_path / "bare.safetensors", metadata={"format": "something else"})
    for read in (load_classifier, read_classifier):
        with pytest.raises(VirNucProError, match="not a converted VirNucPro classifier"):
            read(tmp_path / "bare.safetensors")


def test_sample_without_frames(tmp_path):
    save_classifier(MLPClassifier(input_dim=24, hidden_dim=8), tmp_path / "m.safetensors", 500)
    sample = stored_features(tmp_path / "s", [], np.zeros((0, 24)), 8)
    classify(sample, make_note("classifier", tmp_path / "m.safetensors", tmp_path / "models"), 500, tmp_path / "p.tsv")
    assert (tmp_path / "p.tsv").read_text() == HEADER



def test_a_classifier_file_has_the_same_bytes_in_every_process(tmp_path):
    """The same weights and metadata written by fresh interpreters (each with its own hash seed) give one
    sha256: safetensors' metadata order would otherwise differ from process to process."""
    code = textwrap.dedent("""
        import sys, torch
        from virnucpro.models.mlp import MLPClassifier, write_classifier_file
        torch.manual_seed(0)
        write_classifier_file(MLPClassifier(input_dim=24, hidden_dim=8), sys.argv[1], 500, "test", "0" * 64)
    """)
    digests = set()
    for i in range(4):
        out = tmp_path / f"m{i}.safetensors"
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, env={**os.environ, "PYTHONHASHSEED": str(i)})
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1


def test_a_state_dict_that_does_not_fit_is_a_one_line_error(tmp_path):
    state = MLPClassifier(input_dim=24, hidden_dim=8).state_dict()
    del state["bn1.running_mean"]
    torch.save(state, tmp_path / "500_model.pth")
    with pytest.raises(VirNucProError, match=r"500_model.pth: state dict does not fit the VirNucPro classifier "
                                             r"\(Error\(s\) in loading state_dict") as err:
        load_classifier(tmp_path / "500_model.pth")
    assert "\n" not in str(err.value)
