"""Model checks that must come before any job: the classifier's fragment size against `fragment_size`
and a hand-placed classifier against its published git blob id (parse time); hand-placed ESM-2 and
DNABERT-S files against what their downloads are verified by (the models step's notes, which the
embedding plan and the GPU jobs need); `embed.device: auto` under the SLURM profile on a machine
without a GPU (before any job); and how each model file was verified, in its note and `models.tsv`."""

import re
import shutil

import pytest
import torch

from tests.original_classifier import make_original_classifier
from tests.tiny_dnabert import build_tiny_dnabert
from tests.tiny_esm2 import build_tiny_esm2, save_fair_esm_checkpoint
from tests.workflow_runs import REPO, make_workdir, one_error_line, snakemake, tiny_workdir
from virnucpro.config import check_classifier, classifier_fragment_size
from virnucpro.device import check_device
from virnucpro.errors import VirNucProError
from virnucpro.io.checksums import read_record
from virnucpro.steps.models import make_note
from virnucpro.models.mlp import MLPClassifier, write_classifier_file
from virnucpro.steps import models as fetch
from virnucpro.steps.overview import model_rows

ESM2_NAME = "esm2_t2_1M_UR50D"  # a fair-esm name, as the models step downloads it
# one small sample (test_reliability_inputs' default): the run stops on the models, not on it
SHEET = {"s": REPO / "tests" / "data" / "bad" / "shell_metachar_ids.fa"}


def trained_classifier(path, fragment_size, input_dim=160):
    """A classifier in our safetensors format, as `snakemake train` writes it, for `fragment_size`."""
    torch.manual_seed(0)
    write_classifier_file(MLPClassifier(input_dim=input_dim), path, fragment_size, "test", "0" * 64)
    return path


def publish(monkeypatch, path):
    """Make the published blob id of `path`'s name that of the tiny file at `path` (the published table
    lives in fetch.CLASSIFIER_BLOB_IDS alone)."""
    ids = dict(fetch.CLASSIFIER_BLOB_IDS, **{path.name: fetch.git_blob_id(path.read_bytes())})
    monkeypatch.setattr(fetch, "CLASSIFIER_BLOB_IDS", ids)


# ------------------------------------------------------------------------------ fragment size


def test_fragment_size_is_read_from_the_name_or_the_metadata(tmp_path):
    assert classifier_fragment_size(tmp_path / "300_model.pth") == (300, "its file name")  # not there yet
    trained = trained_classifier(tmp_path / "500_model.safetensors", 300)  # the metadata wins over a name
    assert classifier_fragment_size(trained) == (300, "its metadata")
    assert classifier_fragment_size(tmp_path / "my_model.pth")[0] is None


def test_fragment_size_mismatch_is_one_line_naming_setting_file_and_sizes(tmp_path):
    trained = tmp_path / "results" / "train" / "300_model.safetensors"
    with pytest.raises(VirNucProError) as err:
        check_classifier(tmp_path / "500_model.pth", 300, tmp_path / "models", trained)
    assert str(err.value) == (
        f"config: fragment_size is 300, but models.classifier {tmp_path / '500_model.pth'} is a classifier for "
        f"500 bp fragments (its file name): set fragment_size to 500, or models.classifier to a 300 bp "
        f"classifier (300_model.pth, or {trained}, which `snakemake train` makes)"
    )
    check_classifier(trained, 300, tmp_path / "models", trained)  # not made yet: for 300 bp by construction
    with pytest.raises(VirNucProError, match=r"my.pth: cannot tell which fragment size it is for"):
        check_classifier(tmp_path / "my.pth", 500, tmp_path / "models", trained)


def _pth_for_500(tmp_path, tiny_models):
    return {"fragment_size": 300}, tiny_models["models.classifier"], "500 bp fragments (its file name)"


def _trained_for_300(tmp_path, tiny_models):
    path = trained_classifier(tmp_path / "clf.safetensors", 300)
    return {"models.classifier": str(path)}, str(path), "300 bp fragments (its metadata)"


@pytest.mark.parametrize("case", [_pth_for_500, _trained_for_300], ids=["pth_name", "trained_safetensors"])
def test_fragment_size_mismatch_stops_the_run_before_any_job(tmp_path, tiny_models, case):
    change, path, sizes = case(tmp_path, tiny_models)
    work = tiny_workdir(tmp_path / "work", tiny_models, sheet=SHEET, **change)
    proc = snakemake(work, "--cores", "2", check=False)
    assert proc.returncode != 0
    size = change.get("fragment_size", 500)
    line = one_error_line(proc.stderr, f"configuration error: config: fragment_size is {size}, but models.classifier "
                                       f"{path} is a classifier for {sizes}")
    assert line.startswith("configuration error: ")
    assert not (work / "results").exists() and not (work / "models").exists()


# ------------------------------------------------------------------------ classifiers placed by hand


def test_hand_placed_classifier_with_another_blob_id_stops_the_run_before_any_job(tmp_path, tiny_models):
    models = tmp_path / "work" / "models"
    models.mkdir(parents=True)
    placed = make_original_classifier(models / "500_model.pth", input_dim=160)
    blob = fetch.git_blob_id(placed.read_bytes())
    work = tiny_workdir(tmp_path / "work", {**tiny_models, "models.classifier": "500_model.pth"}, sheet=SHEET)
    proc = snakemake(work, "--cores", "2", check=False)
    assert proc.returncode != 0
    one_error_line(proc.stderr, f"configuration error: config: models.classifier: {placed} is not the "
                                f"published 500_model.pth (git blob id {blob}, published "
                                f"{fetch.CLASSIFIER_BLOB_IDS['500_model.pth']})")
    assert not (work / "results").exists()
    assert sorted(p.name for p in models.iterdir()) == ["500_model.pth"]  # nothing noted, converted or recorded


def test_hand_placed_classifier_with_the_published_blob_id_is_verified(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    placed = make_original_classifier(models / "500_model.pth", input_dim=160)
    publish(monkeypatch, placed)
    check_classifier(placed, 500, models, tmp_path / "trained.safetensors")
    note = make_note("classifier", placed, models)
    how = f"git blob id {fetch.CLASSIFIER_BLOB_IDS['500_model.pth']} of the original repository; placed by hand"
    assert note["verified"] == {"500_model.pth": how}
    assert read_record(placed)["verified"] == how
    (source, converted) = model_rows([note])
    assert source[1:] == (str(placed.resolve()), note["checksums"]["500_model.pth"], how)
    assert converted[3].startswith("converted from 500_model.pth (sha256 ")
    placed.write_bytes(placed.read_bytes() + b"\0")  # changed after it was verified: refused
    with pytest.raises(VirNucProError, match=r"500_model.pth: sha256 \w+ differs from the checksum recorded when it "
                                             r"was verified"):
        make_note("classifier", placed, models)


def test_a_model_the_config_names_elsewhere_is_unverified(tmp_path, tiny_models):
    notes = [make_note("esm2", tiny_models["models.esm2"], tmp_path / "models"),
             make_note("classifier", tiny_models["models.classifier"], tmp_path / "models")]
    assert notes[0]["verified"] == {"esm2_tiny_UR50D.pt": "unverified"}
    assert notes[1]["verified"] == {"500_model.pth": "unverified"}
    rows = model_rows(notes)
    assert [(r[0], r[3]) for r in rows if not r[0].endswith("converted")] == [
        ("ESM-2 (protein embeddings)", "unverified"), ("VirNucPro classifier", "unverified")]


# ---------------------------------------------------------------- ESM-2 and DNABERT-S placed by hand


@pytest.fixture
def placed_esm2(tmp_path):
    models = tmp_path / "models"
    return models, save_fair_esm_checkpoint(build_tiny_esm2(num_layers=1, embed_dim=32, heads=4), models,
                                            name=ESM2_NAME)


def corrupt_a_member(path):
    data = bytearray(path.read_bytes())
    data[data.index(b"data/0") + 200] ^= 0xFF  # inside the tensor data of the first storage
    path.write_bytes(bytes(data))


def test_hand_placed_esm2_is_verified_by_the_crc_of_every_member(placed_esm2):
    models, path = placed_esm2
    note = make_note("esm2", path, models)
    how = "complete PyTorch zip archive, CRC-32 of every member; placed by hand"
    assert note["verified"] == {f"{ESM2_NAME}.pt": how} and read_record(path)["verified"] == how


def test_hand_placed_esm2_failing_its_crc_is_refused_with_one_line(placed_esm2):
    models, path = placed_esm2
    corrupt_a_member(path)
    with pytest.raises(VirNucProError) as err:
        make_note("esm2", path, models)
    assert str(err.value).startswith(f"{path}: placed where the models step downloads the published file, but "
                                     f"member {ESM2_NAME}/data/0 fails its CRC-32 check: delete it")
    assert read_record(path)["verified"] is None and not (models / "converted").exists()


def test_hand_placed_dnabert_s_is_checked_as_its_download(tmp_path):
    folder, _, _ = build_tiny_dnabert(tmp_path / "models" / "DNABERT-S", formats=("bin",))
    with pytest.raises(VirNucProError, match=r"DNABERT-S/config.json: placed where the models step downloads the "
                                             r"published file, but config.json differs from DNABERT-S: "):
        make_note("dnabert_s", folder, tmp_path / "models")
    elsewhere = shutil.copytree(folder, tmp_path / "mine" / "DNABERT-S")
    assert set(make_note("dnabert_s", elsewhere, tmp_path / "models")["verified"].values()) == {"unverified"}


@pytest.mark.slow
def test_a_hand_placed_esm2_that_fails_stops_the_run_before_the_plan_and_any_embed_job(tmp_path, tiny_models):
    work = tmp_path / "work"
    models = work / "models"
    models.mkdir(parents=True)
    placed = shutil.copy(tiny_models["models.esm2"], models / f"{ESM2_NAME}.pt")
    corrupt_a_member(placed)
    work = tiny_workdir(work, {**tiny_models, "models.esm2": f"{ESM2_NAME}.pt"}, sheet=SHEET)
    proc = snakemake(work, "--cores", "2", check=False)  # the default profile keeps going
    assert proc.returncode != 0
    (log,) = (models / "logs").glob("note_model_esm2-*.log")
    one_error_line(log.read_text(),
                   f"{placed.resolve()}: placed where the models step downloads", "fails its CRC-32 check")
    started = re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):$", proc.stdout + proc.stderr, re.M)
    assert "note_model" in started and "prepare" in started  # the front end kept going, on the CPU
    assert "plan" not in started and "embed" not in started
    assert not (work / "results" / "embedding" / "samples" / "plan").exists()


# -------------------------------------------------------------------------------- device under SLURM


def test_auto_device_needs_a_gpu_here_when_jobs_run_elsewhere(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU here
    with pytest.raises(VirNucProError, match=r"^config: embed.device: auto is decided on this machine, which has no "
                                             r"GPU, while the jobs run on other machines: set embed.device: cuda"):
        check_device("auto", local_exec=False)
    check_device("auto", local_exec=True)  # a local run on the CPU
    check_device("cpu", local_exec=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    check_device("auto", local_exec=False)


def test_slurm_profile_with_auto_device_and_no_gpu_stops_before_any_job(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the submitting machine has no GPU
    work = make_workdir(tmp_path, **{"embed.device": "auto"})
    proc = snakemake(work, "--profile", str(REPO / "profiles" / "slurm"), check=False)
    assert proc.returncode != 0
    line = one_error_line(proc.stderr, "set embed.device: cuda")
    assert line.startswith("configuration error: config: embed.device: auto is decided on this machine")
    assert "submitted" not in proc.stdout + proc.stderr
    assert not (work / "results").exists() and not (work / "resources").exists()
