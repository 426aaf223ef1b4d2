"""The float8 guard (`virnucpro.steps.precision`) on the CPU, where the float8 products are emulated:
the calibration subset, the table, the decision both ways, the measurement kept in the store, and the
plan following the decision."""

import json

import numpy as np
import pytest
import torch

from tests.conftest import DNA_DIM, ESM_DIM
from tests.original_classifier import make_original_classifier
from tests.stored_features import random_frames
from tests.tiny_dnabert import build_tiny_dnabert
from tests.tiny_esm2 import build_tiny_esm2, save_fair_esm_checkpoint
from virnucpro.errors import VirNucProError
from virnucpro.steps.models import make_note
from virnucpro.io.store import frame_key
from virnucpro.io.tables import read_tsv
from virnucpro.steps import check_float8 as precision
from virnucpro.steps.plan import plan as plan_step


def _members(tmp_path, sizes):
    members = {}
    for m, n in enumerate(sizes):
        frames = random_frames([f"f{i}" for i in range(n)], seed=m)
        d = tmp_path / f"m{m}"
        d.mkdir()
        (d / "frames.fna").write_text("".join(f">{i}\n{nuc}\n" for i, (nuc, _) in frames.items()))
        (d / "frames.faa").write_text("".join(f">{i}\n{prot}\n" for i, (_, prot) in frames.items()))
        members[f"m{m}"] = (d / "frames.fna", d / "frames.faa")
    return members


@pytest.fixture(scope="module")
def notes(tmp_path_factory):
    """Notes of a tiny ESM-2 (its float16 and float8 conversions), DNABERT-S and classifier."""
    d = tmp_path_factory.mktemp("models")
    esm = save_fair_esm_checkpoint(build_tiny_esm2(num_layers=2, embed_dim=ESM_DIM, heads=4), d)
    dnabert, _, _ = build_tiny_dnabert(d / "DNABERT-S-tiny", hidden_size=DNA_DIM)
    make_original_classifier(d / "500_model.pth", input_dim=DNA_DIM + ESM_DIM)
    models_dir = d / "models"  # not where the files are: they are the user's own, not placed downloads
    return {"esm2": make_note("esm2", esm, models_dir, float8=True),
            "dnabert_s": make_note("dnabert_s", dnabert, models_dir),
            "classifier": make_note("classifier", d / "500_model.pth", models_dir)}


def test_calibration_frames_are_chosen_by_content_and_spread_over_members(tmp_path):
    members = _members(tmp_path, [30, 5, 12])
    chosen = precision.calibration_frames(members, frames=12)
    assert len(chosen) == 12 and [f[1] for f in chosen] == sorted(f[1] for f in chosen)
    by_member = {}
    for label, key, nuc, prot in chosen:
        assert key == frame_key(nuc, prot)
        by_member.setdefault(label.split(":")[0], []).append(key)
    assert set(by_member) == {"m0", "m1", "m2"} and all(len(v) <= 4 for v in by_member.values())
    swapped = {k: members[k] for k in ("m2", "m0", "m1")}
    assert [f[1] for f in precision.calibration_frames(swapped, frames=12)] == [f[1] for f in chosen]


def test_the_guard_measures_decides_and_keeps_its_measurement(tmp_path, notes, caplog):
    members = _members(tmp_path, [20, 9])
    store, decision, table = tmp_path / "store", tmp_path / "decision.json", tmp_path / "check.tsv"
    outcome = precision.check_float8(members, notes, store, {"decision": decision, "table": table},
                                     {**precision.CHECK, "frames": 16}, device="cpu")
    header, rows = read_tsv(table)
    assert header == precision.TABLE_COLUMNS and len(rows) == 16
    cos = np.array([float(r[2]) for r in rows])
    diffs = np.array([float(r[5]) for r in rows])
    np.testing.assert_allclose(diffs, [float(r[4]) - float(r[3]) for r in rows], atol=2e-6)
    assert 0.99 < cos.min() <= cos.max() <= 1.0000001  # e4m3 moves a tiny model's embeddings a little
    assert all(r[8] == ("yes" if r[6] == r[7] else "no") for r in rows)
    assert outcome == json.loads(decision.read_text()) and outcome["frames"] == 16
    assert outcome["min_cosine"] == pytest.approx(cos.min(), abs=1e-7)
    kept = store / precision.CHECKS_FOLDER
    assert len(list(kept.glob("*.tsv"))) == 1
    # the same frames and models again: the measurement is read from the store, not made again
    calls = []
    original = precision.measure
    try:
        precision.measure = lambda *a, **k: calls.append(a) or original(*a, **k)
        again = precision.check_float8(members, notes, store, {"decision": decision, "table": table},
                                       {**precision.CHECK, "frames": 16, "min_cosine": 1.0}, device="cpu")
    finally:
        precision.measure = original
    assert calls == [] and read_tsv(table)[1] == rows
    assert again["precision"] == "float16" and "smallest cosine" in again["reason"]
    assert "embedding in float16: float8 refused" in caplog.text


def test_the_decision_follows_both_thresholds():
    row = lambda cos, agree: ("m:f", "k", f"{cos}", "0.5", "0.5", "0.0", "virus", "virus", agree)  # noqa: E731
    rows = [row(0.9995, "yes")] * 999 + [row(0.9991, "no")]
    assert precision.summarize_check(rows)["precision"] == "float8"  # 99.9 % agree, cosine 0.9991
    assert precision.summarize_check(rows + [row(0.9995, "no")])["precision"] == "float16"  # 99.8 %
    low = precision.summarize_check(rows[:-1] + [row(0.9989, "yes")])
    assert low["precision"] == "float16" and "0.998900" in low["reason"]
    assert precision.summarize_check([])["precision"] == "float16"


def test_the_plan_follows_the_decision_and_float8_stays_on_cuda(tmp_path, notes):
    members = _members(tmp_path, [6])
    decision = tmp_path / "decision.json"
    decision.write_text(json.dumps({"precision": "float16"}))
    plan = plan_step(members, tmp_path / "plan16", tmp_path / "members", tmp_path / "store", notes, "cpu",
                    float8_decision=decision)
    assert plan["esm2_precision"] == "float32"
    decision.write_text(json.dumps({"precision": "float8"}))
    with pytest.raises(VirNucProError, match="float8 runs on CUDA GPUs only"):
        plan_step(members, tmp_path / "plan8", tmp_path / "members", tmp_path / "store", notes, "cpu",
                 float8_decision=decision)


def test_a_float8_namespace_differs_from_float16(notes):
    from virnucpro.models.namespaces import namespaces

    plain = namespaces(notes["esm2"], notes["dnabert_s"], "cuda")
    float8 = namespaces(notes["esm2"], notes["dnabert_s"], "cuda", float8=True)
    assert plain["esm2"].id != float8["esm2"].id and plain["dnabert_s"] == float8["dnabert_s"]
    assert "float8" in dict(float8["esm2"].fields)["precision"]


def test_the_float8_file_is_checked_against_the_float16_weights(notes, tmp_path, monkeypatch):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from virnucpro.models import esm2
    from virnucpro.models.fp8 import quantize_weight

    state = load_file(notes["esm2"]["float8_file"])
    assert state["layers.0.fc1.weight"].dtype == torch.float8_e4m3fn
    assert state["layers.0.fc1.scale"].dtype == torch.float32 and state["layers.0.v.weight"].dtype == torch.float16
    with safe_open(notes["esm2"]["float8_file"], framework="pt") as f:
        assert f.metadata()["format"] == esm2.FLOAT8_FORMAT
    # a quantisation whose scales are off by 10 % is refused, naming the weight
    monkeypatch.setattr(esm2, "quantize_weight", lambda w: (lambda d, s: (d, s * 1.1))(*quantize_weight(w)))
    digest = next(iter(notes["esm2"]["checksums"].values()))
    with pytest.raises(VirNucProError, match="'layers.0.qk' does not round-trip through e4m3"):
        esm2.convert_float8(notes["esm2"]["file"], tmp_path / "bad.safetensors", digest)
