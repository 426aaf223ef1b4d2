"""Retraining with the original recipe: learns two synthetic classes, is reproducible, stops early."""

import logging

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.stored_features import stored_features
from virnucpro.errors import VirNucProError
from virnucpro.steps.models import make_note
from virnucpro.models.classifier import read_classifier
from virnucpro.steps.classify import classify
from virnucpro.steps.train import auroc, binary_metrics, train


@pytest.fixture(autouse=True)
def one_thread():
    """Small matrices: one thread keeps these tests fast when other jobs share the CPU cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_class(folder, n, shift, label, seed, dim=3328):
    """A training set (its member plan, over stored features; labelled) whose first 300 feature values
    are shifted by `shift`: the classes differ in distribution."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[:, :300] += shift
    ids = [f"{label}_{i}_chunk_1F1" for i in range(n)]
    return stored_features(folder, ids, x, dna_dim=min(768, dim // 2), seed=seed), label


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    return d, [make_class(d / "viral", 250, 0.3, 1, seed=1), make_class(d / "host_a", 150, -0.3, 0, seed=2),
               make_class(d / "host_b", 100, -0.3, 0, seed=3)]


def read_metrics(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "metric\tvalue"
    return dict(line.split("\t") for line in lines[1:])


def test_learns_two_classes_and_is_reproducible(data):
    d, features = data
    first = train(features, d / "a.safetensors", d / "a.tsv", fragment_size=300, max_epochs=20)
    metrics = read_metrics(d / "a.tsv")
    assert float(metrics["auroc"]) >= 0.9 and first["auroc"] >= 0.9
    assert {"accuracy", "precision", "recall", "f1", "auroc"} <= metrics.keys()
    assert int(metrics["heldout_frames"]) == 50 and int(metrics["train_frames"]) == 450

    clf = read_classifier(d / "a.safetensors")  # our converted format, usable by classify
    assert clf.fragment_size == 300 and clf.input_dim == 3328
    classify(features[0][0], make_note("classifier", d / "a.safetensors"), fragment_size=300, out=d / "pred.tsv")
    calls = [line.split("\t")[1] for line in (d / "pred.tsv").read_text().splitlines()[1:]]
    assert calls.count("virus") > 0.8 * len(calls)

    second = train(features, d / "b.safetensors", d / "b.tsv", fragment_size=300, max_epochs=20)
    assert second == first
    assert (d / "a.tsv").read_text() == (d / "b.tsv").read_text()
    a, b = load_file(d / "a.safetensors"), load_file(d / "b.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)

    train(features, d / "c.safetensors", d / "c.tsv", fragment_size=300, seed=7, max_epochs=3)
    c = load_file(d / "c.safetensors")
    assert not (a["hidden_layer.weight"] == c["hidden_layer.weight"]).all()  # the seed matters


def test_early_stopping_restores_the_best_epoch(tmp_path, caplog):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 64)).astype(np.float32)  # a weak signal: the held-out loss soon stops improving
    x[:200, :8] += 0.15
    viral = (stored_features(tmp_path / "v", [f"v{i}" for i in range(200)], x[:200], 32, seed=1), 1)
    other = (stored_features(tmp_path / "o", [f"o{i}" for i in range(200)], x[200:], 32, seed=2), 0)
    caplog.set_level(logging.INFO, logger="virnucpro")
    m = train([viral, other], tmp_path / "m.safetensors", tmp_path / "m.tsv", 500, max_epochs=200,
                         patience=3)
    held = [float(r.getMessage().rsplit(" ", 1)[1]) for r in caplog.records if "held-out loss" in r.getMessage()]
    assert len(held) == m["epochs_run"] < 200
    assert m["epochs_run"] - m["best_epoch"] == 3
    assert held[m["best_epoch"] - 1] == min(held) < held[-1]
    # the file holds the best epoch's weights, not the last epoch's
    assert m["heldout_loss"] == pytest.approx(held[m["best_epoch"] - 1], abs=6e-5)


def test_auroc_rank_formula():
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auroc([0, 1, 1, 0], [0.5, 0.5, 0.9, 0.1]) == pytest.approx(0.875)  # a tie counts one half
    assert auroc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == 1.0
    assert np.isnan(auroc([1, 1], [0.2, 0.3]))
    m = binary_metrics([1, 1, 0, 0, 1], [1, 0, 0, 1, 1], [0.9, 0.4, 0.2, 0.6, 0.8])
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)


def test_bad_training_sets(tmp_path):
    viral = make_class(tmp_path / "v", 30, 0.0, 1, seed=1, dim=16)
    with pytest.raises(VirNucProError, match="both classes"):
        train([viral], tmp_path / "m.safetensors", tmp_path / "m.tsv", 500)
    with pytest.raises(VirNucProError, match="label must be 0"):
        train([(viral[0], 2)], tmp_path / "m.safetensors", tmp_path / "m.tsv", 500)
    other = make_class(tmp_path / "o", 30, 0.0, 0, seed=2, dim=17)
    with pytest.raises(VirNucProError, match="17 values per frame"):
        train([viral, other], tmp_path / "m.safetensors", tmp_path / "m.tsv", 500)
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "m.tsv").exists()
