"""Model downloads, without the network: verification on local file:// URLs, and the offline message."""

import hashlib
import json
import urllib.error

import pytest
import torch

from virnucpro.errors import VirNucProError
from virnucpro.io.downloads import git_blob_id
from virnucpro.steps import models


def test_git_blob_id_matches_git():
    # ids printed by `git hash-object` for an empty file and for "hello\n"
    assert git_blob_id(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


@pytest.fixture
def remote(tmp_path):
    d = tmp_path / "remote"
    d.mkdir()
    return d


def serve_classifier(monkeypatch, remote, content, blob_id=None):
    (remote / "500_model.pth").write_bytes(content)
    monkeypatch.setattr(models, "CLASSIFIER_URL", remote.as_uri() + "/{name}")
    ids = dict(models.CLASSIFIER_BLOB_IDS, **{"500_model.pth": blob_id or git_blob_id(content)})
    monkeypatch.setattr(models, "CLASSIFIER_BLOB_IDS", ids)


def test_classifier_verified_by_blob_id(tmp_path, remote, monkeypatch):
    content = b"pretend classifier bytes" * 1000
    serve_classifier(monkeypatch, remote, content)
    out = tmp_path / "models" / "500_model.pth"
    models.download_model("classifier", out)
    assert out.read_bytes() == content
    record = json.loads((out.parent / "500_model.pth.checksum.json").read_text())
    assert record["sha256"] == hashlib.sha256(content).hexdigest() and record["size"] == len(content)
    assert record["mtime_ns"] == out.stat().st_mtime_ns and "git blob id" in record["verified"]


def test_classifier_with_wrong_content_is_not_kept(tmp_path, remote, monkeypatch):
    serve_classifier(monkeypatch, remote, b"tampered", blob_id="fc35d5ef9f1f4564eea7036f34f4f8ec6000d33d")
    out = tmp_path / "models" / "500_model.pth"
    with pytest.raises(VirNucProError, match="git blob id .* expected fc35d5ef"):
        models.download_model("classifier", out)
    assert list(out.parent.iterdir()) == []  # neither the final name nor a temporary one


def test_classifier_served_as_lfs_pointer(tmp_path, remote, monkeypatch):
    content = b"the real weights" * 500
    oid = hashlib.sha256(content).hexdigest()
    pointer = models.LFS_POINTER + f"oid sha256:{oid}\nsize {len(content)}\n".encode()
    serve_classifier(monkeypatch, remote, pointer)
    (remote / "media").mkdir()
    (remote / "media" / "500_model.pth").write_bytes(content)
    monkeypatch.setattr(models, "CLASSIFIER_LFS_URL", (remote / "media").as_uri() + "/{name}")
    out = tmp_path / "500_model.pth"
    models.download_model("classifier", out)
    assert out.read_bytes() == content
    (remote / "media" / "500_model.pth").write_bytes(content[:-1] + b"!")
    with pytest.raises(VirNucProError, match="does not match the pointer"):
        models.download_model("classifier", tmp_path / "again" / "500_model.pth")


def test_offline_message_names_url_and_destination(tmp_path, monkeypatch):
    def no_network(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("virnucpro.io.downloads.urllib.request.urlopen", no_network)
    out = tmp_path / "models" / "300_model.pth"
    with pytest.raises(VirNucProError) as err:
        models.download_model("classifier", out)
    message = str(err.value)
    assert "\n" not in message
    assert "https://raw.githubusercontent.com/Li-Jing-1997/VirNucPro/main/300_model.pth" in message
    assert f"to {out}" in message
    assert not out.exists()

    with pytest.raises(VirNucProError) as err:
        models.download_model("dnabert_s", tmp_path / "models" / "DNABERT-S")
    message = str(err.value)
    assert "\n" not in message
    for name in ("config.json", "tokenizer.json", "pytorch_model.bin"):
        url = f"https://huggingface.co/zhihan1996/DNABERT-S/resolve/{models.DNABERT_S_REVISION}/{name}"
        assert f"{url} to {tmp_path / 'models' / 'DNABERT-S' / name}" in message
    assert not (tmp_path / "models" / "DNABERT-S").exists()

    with pytest.raises(VirNucProError) as err:
        models.download_model("esm2", tmp_path / "models" / "esm2_t36_3B_UR50D.pt")
    assert "https://dl.fbaipublicfiles.com/fair-esm/models/esm2_t36_3B_UR50D.pt to " in str(err.value)
    assert "regression/esm2_t36_3B_UR50D-contact-regression.pt to " in str(err.value)


def test_missing_remote_file_reads_as_unreachable(tmp_path, remote, monkeypatch):
    monkeypatch.setattr(models, "CLASSIFIER_URL", remote.as_uri() + "/{name}")
    with pytest.raises(VirNucProError, match="cannot download .* fetch file://.*500_model.pth to "):
        models.download_model("classifier", tmp_path / "500_model.pth")


def serve_dnabert(monkeypatch, remote, config=None, weights=b"weights" * 100):
    rev = remote / "zhihan1996" / "DNABERT-S" / "resolve" / models.DNABERT_S_REVISION
    rev.mkdir(parents=True)
    config = config or {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "vocab_size": 4096}
    (rev / "config.json").write_text(json.dumps(config))
    (rev / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {}}}))
    (rev / "pytorch_model.bin").write_bytes(weights)
    monkeypatch.setattr(models, "DNABERT_S_URL", remote.as_uri() + "/{repo}/resolve/{revision}/{file}")
    monkeypatch.setattr(models, "DNABERT_S_WEIGHTS_SHA256", hashlib.sha256(b"weights" * 100).hexdigest())


def test_dnabert_s_directory(tmp_path, remote, monkeypatch):
    serve_dnabert(monkeypatch, remote)
    out = tmp_path / "models" / "DNABERT-S"
    models.download_model("dnabert_s", out)
    names = ["config.json", "pytorch_model.bin", "tokenizer.json"]
    assert sorted(p.name for p in out.iterdir()) == sorted(names + [f"{n}.checksum.json" for n in names])
    assert (out / "pytorch_model.bin").read_bytes() == b"weights" * 100
    record = json.loads((out / "pytorch_model.bin.checksum.json").read_text())
    assert record["sha256"] == hashlib.sha256(b"weights" * 100).hexdigest() and "published sha256" in record["verified"]
    assert record["mtime_ns"] == (out / "pytorch_model.bin").stat().st_mtime_ns


@pytest.mark.parametrize("config, weights, message", [
    ({"hidden_size": 1024, "num_hidden_layers": 12, "num_attention_heads": 12, "vocab_size": 4096}, None,
     "config.json differs from DNABERT-S"),
    (None, b"other weights", "sha256 .* expected"),
])
def test_dnabert_s_verification_failures(tmp_path, remote, monkeypatch, config, weights, message):
    serve_dnabert(monkeypatch, remote, config=config, **({"weights": weights} if weights else {}))
    out = tmp_path / "models" / "DNABERT-S"
    with pytest.raises(VirNucProError, match=message):
        models.download_model("dnabert_s", out)
    assert list((tmp_path / "models").iterdir()) == []


def test_esm2_zip_integrity(tmp_path, remote, monkeypatch):
    (remote / "models").mkdir()
    (remote / "regression").mkdir()
    torch.save({"model": {"w": torch.arange(1000.0)}, "cfg": {}}, remote / "models" / "esm2_t6_8M_UR50D.pt")
    torch.save({"model": {}}, remote / "regression" / "esm2_t6_8M_UR50D-contact-regression.pt")
    monkeypatch.setattr(models, "ESM2_URL", remote.as_uri() + "/models/{name}.pt")
    monkeypatch.setattr(models, "ESM2_REGRESSION_URL",
                        remote.as_uri() + "/regression/{name}-contact-regression.pt")
    out = tmp_path / "m" / "esm2_t6_8M_UR50D.pt"
    models.download_model("esm2", out)
    assert out.read_bytes() == (remote / "models" / "esm2_t6_8M_UR50D.pt").read_bytes()
    assert (tmp_path / "m" / "esm2_t6_8M_UR50D-contact-regression.pt").is_file()
    for name in ("esm2_t6_8M_UR50D.pt", "esm2_t6_8M_UR50D-contact-regression.pt"):
        record = json.loads((tmp_path / "m" / f"{name}.checksum.json").read_text())
        assert record["sha256"] == hashlib.sha256((tmp_path / "m" / name).read_bytes()).hexdigest()
        assert "CRC-32 of every member" in record["verified"]

    data = bytearray((remote / "models" / "esm2_t6_8M_UR50D.pt").read_bytes())
    at = data.index(b"data/0") + 200  # inside the tensor data of the first storage
    data[at] ^= 0xFF
    (remote / "models" / "esm2_t6_8M_UR50D.pt").write_bytes(bytes(data))
    with pytest.raises(VirNucProError, match="CRC-32"):
        models.download_model("esm2", tmp_path / "n" / "esm2_t6_8M_UR50D.pt")
    (remote / "models" / "esm2_t6_8M_UR50D.pt").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(VirNucProError, match="not a complete zip archive"):
        models.download_model("esm2", tmp_path / "n" / "esm2_t6_8M_UR50D.pt")
    assert list((tmp_path / "n").iterdir()) == []  # the folder is made, nothing is left in it


def test_unknown_kind_and_names(tmp_path):
    with pytest.raises(VirNucProError, match="unknown model kind"):
        models.download_model("bert", tmp_path / "x")
    with pytest.raises(VirNucProError, match="300_model.pth and 500_model.pth"):
        models.download_model("classifier", tmp_path / "400_model.pth")


def test_missing_models_offers_downloads_but_not_the_classifier_the_workflow_trains(tmp_path):
    trained = tmp_path / "results" / "train" / "500_model.safetensors"
    paths = {"esm2": tmp_path / "models" / "esm2_t6_8M_UR50D.pt", "classifier": trained}
    lines = models.missing_models(paths)
    assert lines[1].startswith("  models.esm2: https://dl.fbaipublicfiles.com/fair-esm/models/esm2_t6_8M_UR50D.pt")
    assert lines[2:] == [f"models.classifier: {trained} is not on disk yet: `snakemake train` makes it (or set "
                         "models.classifier in config.yaml to a model already on disk)"]
    assert "raw.githubusercontent.com" in models.missing_models({"classifier": tmp_path / "500_model.pth"})[1]
    (tmp_path / "500_model.pth").write_bytes(b"x")
    assert models.missing_models({"classifier": tmp_path / "500_model.pth"}) == []
