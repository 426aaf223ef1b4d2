"""The float8 ESM-2 path on a GPU (skipped without CUDA; needs e4m3 matrix units, compute capability 8.9+).

- The Triton float8 path made the result (no fallback), and it computes what the emulated float8 path
  computes on the CPU (`tests/test_fp8.py` checks that one against fair-esm with e4m3-rounded linears):
  cosine at least 0.9999 for every protein, the residue of float16 / bf16 rounding of the other
  operations (the float16 path keeps 0.9999995 against float32).
- Against fair-esm's float32 forward (no e4m3 anywhere), every protein keeps a cosine of at least 0.999
  on random weights, the bound the run's own guard applies to the real model.
- A frame's float8 embedding does not depend on the frames that share its batch: per-token activation
  scales and fixed-shape batches leave every row's arithmetic alone, bit for bit.
"""

import numpy as np
import pytest
import torch

from tests.tiny_esm2 import build_tiny_esm2, packed_from_fair_esm, padded_reference, random_proteins
from virnucpro.models import fp8
from virnucpro.models.esm2 import TritonBackend, tokenizer
from tests.packed_runs import embed_packed

pytestmark = pytest.mark.gpu
LENGTHS = [1, 5, 20, 64, 100, 166, 250, 700, 1022]


def _cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _embed(packed, seqs, budget=8192):
    ids = [f"p{i}" for i in range(len(seqs))]
    return embed_packed(ids, seqs, tokenizer(), packed.embed, packed.embed_dim, "cuda", budget, "fp8-test")


@pytest.fixture(scope="module")
def model():
    if not fp8.supported("cuda"):
        pytest.fail("this GPU has no e4m3 matrix units: the float8 path cannot be tested here")
    return build_tiny_esm2(num_layers=4, embed_dim=256, heads=4, seed=21)  # head size 64: Triton path


def test_float8_triton_path_made_the_result_and_equals_the_emulation(model):
    seqs = random_proteins(LENGTHS * 2, seed=22)
    packed = packed_from_fair_esm(model.cuda(), "cuda", torch.float16, float8=True)
    got = _embed(packed, seqs)
    assert isinstance(packed.produced_by, TritonBackend) and packed.produced_by.float8
    assert isinstance(packed.layers[0].fc1, fp8.Fp8Linear)
    emulated = packed_from_fair_esm(model.cpu(), "cpu", torch.float32, float8=True)
    ids = [f"p{i}" for i in range(len(seqs))]
    want = embed_packed(ids, seqs, tokenizer(), emulated.embed, emulated.embed_dim, "cpu", 8192, "emulated")
    plain = padded_reference(model.cpu(), seqs, model.num_layers)
    cos_emulated, cos_plain = _cosine(got, want), _cosine(got, plain)
    print(f"\nfloat8 GPU vs emulated: min cosine {cos_emulated.min():.7f}; vs float32: {cos_plain.min():.7f}")
    assert cos_emulated.min() >= 0.9999
    assert cos_plain.min() >= 0.999


def test_float8_embeddings_do_not_depend_on_the_batch(model):
    packed = packed_from_fair_esm(model.cuda(), "cuda", torch.float16, float8=True)
    target = random_proteins([20, 41, 100, 166, 7, 300] * 5, seed=23)
    others = random_proteins(list(range(20, 420, 7)), seed=24)
    alone = _embed(packed, target, budget=16384)
    mixed = _embed(packed, others + target, budget=16384)
    reversed_ = _embed(packed, others[::-1] + target[::-1], budget=16384)
    assert np.array_equal(mixed[len(others):], alone)
    assert np.array_equal(reversed_[len(others):][::-1], alone)


def test_the_guard_decides_both_ways_and_the_plan_embeds_in_float8(tmp_path):
    """On the GPU: the guard lets a random-weight model run in float8 and refuses it under a cosine bound no
    real run meets; the plan then follows the decision, and the embedding job runs the float8 file.

    The classifier is a random one whose output bias calls every frame viral by a wide margin: a random
    classifier's calls sit near its boundary, where float8's rounding flips some of them (the guard then
    refuses float8, rightly; tests/test_precision.py checks that decision), so only calls that no rounding
    can flip make the passing case a property of the float8 path rather than of the classifier's margins."""
    import json

    from tests.stored_features import random_frames
    from tests.tiny_dnabert import build_tiny_dnabert
    from tests.tiny_esm2 import save_fair_esm_checkpoint
    from virnucpro.steps.models import make_note
    from virnucpro.models.mlp import MLPClassifier, write_classifier_file
    from virnucpro.steps.embed import embed
    from virnucpro.steps.plan import plan as plan_step
    from virnucpro.steps.check_float8 import CHECK, check_float8

    d = tmp_path / "models"
    esm = save_fair_esm_checkpoint(build_tiny_esm2(num_layers=3, embed_dim=256, heads=4, seed=31), d)
    dnabert, _, _ = build_tiny_dnabert(d / "DNABERT-S", hidden_size=96)
    torch.manual_seed(33)
    clf = MLPClassifier(96 + 256).eval()
    with torch.no_grad():
        clf.output_layer.bias.copy_(torch.tensor([-50.0, 50.0]))
    write_classifier_file(clf, d / "confident.safetensors", 500, "test", "0" * 64)
    notes = {"esm2": make_note("esm2", esm, d / "models", float8=True),
             "dnabert_s": make_note("dnabert_s", dnabert),
             "classifier": make_note("classifier", d / "confident.safetensors", d / "models")}
    frames = random_frames([f"f{i}" for i in range(300)], seed=32)
    (tmp_path / "f.fna").write_text("".join(f">{i}\n{n}\n" for i, (n, _) in frames.items()))
    (tmp_path / "f.faa").write_text("".join(f">{i}\n{p}\n" for i, (_, p) in frames.items()))
    members, store = {"s": (tmp_path / "f.fna", tmp_path / "f.faa")}, tmp_path / "store"
    passed = check_float8(members, notes, store, {"decision": tmp_path / "ok.json", "table": tmp_path / "ok.tsv"},
                          {**CHECK, "frames": 256}, device="cuda")
    refused = check_float8(members, notes, store, {"decision": tmp_path / "no.json", "table": tmp_path / "no.tsv"},
                           {**CHECK, "frames": 256, "min_cosine": 1.0}, device="cuda")
    print(f"\nguard on the GPU: {passed['reason']}")
    assert passed["precision"] == "float8" and passed["min_cosine"] >= 0.999
    assert refused["precision"] == "float16" and "smallest cosine" in refused["reason"]
    plan = plan_step(members, tmp_path / "plan", tmp_path / "members", store, notes, "cuda",
                     float8_decision=tmp_path / "ok.json")
    assert plan["esm2_precision"] == "float8"
    for shard in plan["shards"]:
        receipt = embed(tmp_path / "plan", shard["name"], notes, tmp_path / f"{shard['name']}.json")
        assert "load_esm2_float8" in receipt["seconds"]
    spaces = [json.loads(p.read_text()) for p in store.glob("esm2-*/namespace.json")]
    assert len(spaces) == 1 and "float8" in spaces[0]["fields"]["precision"]
