"""The embedding stage end to end on the CPU, through `virnucpro plan` and `virnucpro embed`, on tiny models
in their real on-disk formats: the store then holds, for every frame, fair-esm's padded forward of the
checkpoint file (mean over residues) and the one-sequence DNABERT-S reference (mean over all tokens);
a rerun plans nothing; another model plans everything again, for that encoder only."""

import json
import logging

import esm
import numpy as np
import pytest
import torch

from tests.embed_runs import embed_all, plan, sample
from tests.tiny_dnabert import hf_token_ids, reference_embeddings
from tests.tiny_esm2 import (
    build_tiny_esm2,
    fair_esm_from_file,
    save_fair_esm_checkpoint,
)
from virnucpro.cli import main as cli_main
from virnucpro.io.store import Namespace, store_files
from virnucpro.errors import VirNucProError
from virnucpro.io.features import gather_features, iter_features

TOL = 1e-5


def fair_esm_reference(path, seqs):
    model = fair_esm_from_file(path)
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    _, _, tokens = alphabet.get_batch_converter(truncation_seq_length=1022)(list(enumerate(seqs)))
    with torch.no_grad():
        rep = model(tokens, repr_layers=[model.num_layers])["representations"][model.num_layers]
    return np.stack([rep[i, 1 : len(s) + 1].mean(0).numpy() for i, s in enumerate(seqs)])


def rel_err(a, b):
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


def test_plan_and_embed_fill_the_store_with_the_originals_embeddings(tmp_path, embed_models, caplog):
    frames = sample(tmp_path / "s")
    plan_dir, planned = plan(tmp_path, embed_models, frames)
    assert len(planned["shards"]) >= 2
    with caplog.at_level(logging.INFO, logger="virnucpro"):
        receipts = embed_all(tmp_path, embed_models, plan_dir, planned["shards"])
    assert sum(r["frames"]["esm2"] for r in receipts) == sum(r["frames"]["dnabert_s"] for r in receipts) == 40
    assert {"load_esm2", "load_dnabert_s", "embed", "write"} <= set(receipts[0]["seconds"])
    assert "tokens/s" in caplog.text
    _, _, ids, proteins, nucleotides = frames
    got_ids, features = gather_features(tmp_path / "members" / "s.json")
    assert got_ids == ids and features.shape == (40, 96 + 64)
    esm_path, dna_dir, state = embed_models
    token_ids = hf_token_ids(dna_dir, nucleotides)
    assert 0 in token_ids[2]  # IUPAC codes became [UNK] tokens
    assert rel_err(features[:, :96], reference_embeddings(state, token_ids)).max() < TOL
    assert rel_err(features[:, 96:], fair_esm_reference(esm_path, proteins)).max() < TOL
    ns = Namespace.from_json(planned["namespaces"]["esm2"])
    files = store_files(tmp_path / "store", ns)
    assert len(files) == len(planned["shards"])
    import h5py

    with h5py.File(files[0], "r") as f:
        assert f.attrs["precision"] == "float32" and f.attrs["layer"] == "last" and f.attrs["truncation"] == 1022
        assert f.attrs["tokens_per_batch"] == 1100 and "<cls>" in f.attrs["pooling"]


def test_a_rerun_plans_nothing_and_another_model_only_its_encoder(tmp_path, embed_models):
    frames = sample(tmp_path / "s", n=12, seed=3)
    plan_dir, planned = plan(tmp_path, embed_models, frames)
    embed_all(tmp_path, embed_models, plan_dir, planned["shards"])
    _, again = plan(tmp_path, embed_models, frames, name="again")
    assert again["shards"] == [] and again["frames_to_embed"] == 0
    other = save_fair_esm_checkpoint(build_tiny_esm2(num_layers=3, embed_dim=64, heads=4, seed=9), tmp_path / "b")
    _, changed = plan(tmp_path, (other, *embed_models[1:]), frames, name="changed")
    assert sum(s["esm2"] for s in changed["shards"]) == 12
    assert sum(s["dnabert_s"] for s in changed["shards"]) == 0


def test_step_errors_are_one_line(tmp_path, embed_models, capsys):
    esm_path, dna_dir, _ = embed_models
    frames = sample(tmp_path / "s", n=4)
    plan_dir, planned = plan(tmp_path, embed_models, frames)
    shard = planned["shards"][0]["name"]
    other = save_fair_esm_checkpoint(build_tiny_esm2(num_layers=3, embed_dim=64, heads=4, seed=5), tmp_path / "b")
    out = tmp_path / "done.json"
    args = ["embed", str(plan_dir), shard, "--dnabert-s", str(dna_dir), "--models-dir", str(tmp_path / "m"),
            "--out", str(out)]
    assert cli_main([*args, "--esm2", str(other)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("virnucpro embed: error: the esm2 model or its precision changed since the embedding plan")
    assert cli_main([*args, "--esm2", str(esm_path), "--dnabert-tokens-per-batch", "0"]) == 1
    assert "dnabert_s tokens per batch must be positive" in capsys.readouterr().err
    assert cli_main([*args[:2], "0123456789abcdef", *args[3:], "--esm2", str(esm_path)]) == 1
    assert "the plan has no shard 0123456789abcdef" in capsys.readouterr().err
    assert not out.exists() and store_files(tmp_path / "store", Namespace.from_json(planned["namespaces"]["esm2"])) == []
    rc = cli_main(["plan", "--sample", "s", str(frames[0]), str(frames[1]), "--esm2", str(tmp_path / "none.pt"),
                   "--dnabert-s", str(dna_dir), "--models-dir", str(tmp_path / "m"), "--store", str(tmp_path / "store"),
                   "--out", str(tmp_path / "p2")])
    assert rc == 1 and "none.pt: model file not found" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_plan_for_a_gpu_refuses_to_run_on_the_cpu(tmp_path, embed_models, capsys):
    esm_path, dna_dir, _ = embed_models
    frames = sample(tmp_path / "s", n=3)
    out = tmp_path / "plan"
    assert cli_main(["plan", "--sample", "s", str(frames[0]), str(frames[1]), "--esm2", str(esm_path),
                     "--dnabert-s", str(dna_dir), "--models-dir", str(tmp_path / "m"), "--store",
                     str(tmp_path / "store"), "--device", "cuda", "--out", str(out)]) == 0
    shard = json.loads((out / "plan.json").read_text())["shards"][0]["name"]
    rc = cli_main(["embed", str(out), shard, "--esm2", str(esm_path), "--dnabert-s", str(dna_dir),
                   "--models-dir", str(tmp_path / "m"), "--out", str(tmp_path / "r.json")])
    assert rc == 1 and "device cuda was asked for" in capsys.readouterr().err


def test_a_cpu_plan_made_by_auto_refuses_a_job_that_has_a_gpu(tmp_path, embed_models, monkeypatch):
    """On a cluster whose login node has no GPU, `auto` plans for the CPU: a GPU job must not then
    silently embed on its CPU."""
    from virnucpro.errors import VirNucProError
    from virnucpro.steps.models import make_note
    from virnucpro.steps.embed import embed

    esm_path, dna_dir, _ = embed_models
    frames = sample(tmp_path / "s", n=3)
    monkeypatch.setattr("virnucpro.device.visible_devices", lambda: [])  # where snakemake runs: no GPU
    assert cli_main(["plan", "--sample", "s", str(frames[0]), str(frames[1]), "--esm2", str(esm_path),
                     "--dnabert-s", str(dna_dir), "--models-dir", str(tmp_path / "m"), "--store",
                     str(tmp_path / "store"), "--device", "auto", "--out", str(tmp_path / "plan")]) == 0
    planned = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert planned["device"] == "cpu" and planned["device_setting"] == "auto"
    monkeypatch.setattr("virnucpro.steps.embed.visible_devices", lambda: ["0"])  # the job: a GPU
    with pytest.raises(VirNucProError, match="set embed.device to cuda"):
        notes = {"esm2": make_note("esm2", esm_path, tmp_path / "m"), "dnabert_s": make_note("dnabert_s", dna_dir)}
        embed(tmp_path / "plan", planned["shards"][0]["name"], notes, tmp_path / "r.json")


def test_features_export_refuses_a_changed_frame_list_as_classify_does(tmp_path, embed_models, capsys):
    import h5py

    frames = sample(tmp_path / "s", n=6, seed=2)
    plan_dir, planned = plan(tmp_path, embed_models, frames)
    embed_all(tmp_path, embed_models, plan_dir, planned["shards"])
    member = tmp_path / "members" / "s.json"
    args = ["features", "--member", str(member)]
    assert cli_main([*args, "--out", str(tmp_path / "f.h5")]) == 0
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f["embeddings"].shape == (6, 96 + 64)
        assert f.attrs["esm2_namespace"] == planned["namespaces"]["esm2"]["id"]
    with pytest.raises(VirNucProError, match="expects 3328"):
        gather_features(member, width=3328)
    listed = member.with_name("s.frames.tsv")
    listed.write_text("".join(listed.read_text().splitlines(keepends=True)[:-1]))  # one frame fewer than planned
    assert cli_main([*args, "--out", str(tmp_path / "g.h5")]) == 1
    err = capsys.readouterr().err
    assert "does not match its member plan" in err and not (tmp_path / "g.h5").exists()
    with pytest.raises(VirNucProError) as classify_reader:
        list(iter_features(member))  # what classify reads through
    assert str(classify_reader.value) in err
