"""DNABERT-S: native packed forward against a simple one-sequence-at-a-time float32 reference.

The tiny snapshots (tests/tiny_dnabert.py) are in the published format and go through the real loader.
The reference (`reference_hidden` in tests/tiny_dnabert.py) is written from the published model code's
arithmetic, not from virnucpro.models.dnabert: one sequence at a time as VirNucPro ran it, shape (1, L, D),
an explicit (H, L, L) ALiBi matrix with the published 12-head slopes, matmul attention and softmax.

Tolerances: both sides are float32 on the CPU and differ only in summation order (packed rows vs one
sequence, fused SDPA vs matmul + softmax), ~1e-7 relative per operation and ~1e-6 after two post-LN
layers; 1e-5 leaves room for other BLAS builds, while a real defect (a slope, an ALiBi distance across
sequences, a dropped [CLS] in the mean, q/k/v order) moves values by 1e-2 or more.
"""

import json

import numpy as np
import pytest
import torch

from tests.packed_runs import embed_packed
from tests.tiny_dnabert import (
    SLOPES_12,
    build_tiny_dnabert,
    hf_token_ids,
    random_dna,
    reference_embeddings,
    reference_hidden,
    train_tokenizer,
    write_weights,
)

from virnucpro.errors import VirNucProError
from virnucpro.models import dnabert
from virnucpro.models.dnabert import (
    DnabertConfig,
    DnaTokenizer,
    alibi_slopes,
    load_dnabert,
)
from virnucpro.models.namespaces import DNABERT_PRECISION
from virnucpro.models.packing import pack

TOL = 1e-5
# bp lengths: a base, short frames, 300/500 bp frames and sequences of more than 512 tokens
RAGGED_BP = [1, 2, 5, 17, 64, 150, 298, 300, 499, 500, 1900, 3000]


def _rel_err(a, b):
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer(256, seed=0)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory, bpe):
    """(snapshot dir with model.safetensors, its state dict, float32 CPU model, tokenizer)."""
    directory, state, _ = build_tiny_dnabert(tmp_path_factory.mktemp("dnabert") / "DNABERT-S", tokenizer=bpe)
    model, tok, _ = load_dnabert(directory)
    return directory, state, model, tok


# ------------------------------------------------------------------------------------ slopes, config


def test_alibi_slopes_are_the_published_ones():
    # float32, as the original holds them: exactly the published values; float64 within a few ulps
    # (start * ratio**i accumulates rounding)
    assert torch.equal(torch.tensor(alibi_slopes(12), dtype=torch.float32), torch.tensor(SLOPES_12))
    assert np.allclose(alibi_slopes(12), SLOPES_12, rtol=1e-14, atol=0)
    assert alibi_slopes(8) == [2.0**-k for k in range(1, 9)]  # a power of two: start 2^(-8/n)
    want_16 = torch.tensor([2 ** (-k / 2) for k in range(1, 17)], dtype=torch.float32)
    assert torch.equal(torch.tensor(alibi_slopes(16), dtype=torch.float32), want_16)
    assert alibi_slopes(4) == [2**-2, 2**-4, 2**-6, 2**-8]
    assert alibi_slopes(6) == [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]  # 4 heads, then 8's odd ones


def test_config_reads_published_field_names(snapshot, tmp_path):
    directory = snapshot[0]
    cfg = DnabertConfig.from_json(directory / "config.json")
    sizes = (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size)
    assert sizes == (96, 2, 12, 160)
    assert cfg.vocab_size == 256 and cfg.layer_norm_eps == 1e-12 and cfg.type_vocab_size == 2
    raw = json.loads((directory / "config.json").read_text())
    # keys of the published config that do not change the forward are ignored, whatever they hold
    unused = {"alibi_starting_size": "none", "max_position_embeddings": None, "hidden_dropout_prob": -1}
    assert unused.keys() <= raw.keys()
    (tmp_path / "config.json").write_text(json.dumps({**raw, **unused}))
    assert DnabertConfig.from_json(tmp_path / "config.json") == cfg
    del raw["num_attention_heads"]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(VirNucProError, match="config lacks 'num_attention_heads'"):
        DnabertConfig.from_json(tmp_path / "config.json")
    raw["num_attention_heads"] = 7  # 96 is not a multiple of 7
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(VirNucProError, match="not a multiple"):
        DnabertConfig.from_json(tmp_path / "config.json")


# ------------------------------------------------------------------------------------ tokenising


def test_tokenizer_adds_cls_and_sep_and_upper_cases(snapshot):
    directory, _, _, tok = snapshot
    # [UNK]=0 [CLS]=1 [SEP]=2 [PAD]=3 [MASK]=4, then the alphabet A=5 C=6 G=7 T=8
    assert [t.tolist() for t in tok(["A", "t", "G", "c"])] == [[1, 5, 2], [1, 8, 2], [1, 7, 2], [1, 6, 2]]
    assert tok(["N"])[0].tolist() == [1, 0, 2]  # not in the vocabulary: [UNK]
    seqs = random_dna(20, range(1, 400, 20), seed=3)
    mixed = [s.lower() if i % 2 else s for i, s in enumerate(seqs)]
    got = tok(mixed)
    assert [g.tolist() for g in got] == hf_token_ids(directory, seqs)
    assert all(g[0] == 1 and g[-1] == 2 and (g[1:-1] > 4).all() for g in got)
    assert max(len(g) for g in got) > 30  # merges happened: fewer tokens than bases
    assert all(len(g) - 2 < len(s) for g, s in zip(got, seqs) if len(s) > 20)


def test_tokenizer_without_post_processor_adds_them_by_id(snapshot, tmp_path):
    directory, _, _, tok = snapshot
    raw = json.loads((directory / "tokenizer.json").read_text())
    assert raw["post_processor"]["type"] == "TemplateProcessing"
    raw["post_processor"] = None
    raw["truncation"] = {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}
    (tmp_path / "tokenizer.json").write_text(json.dumps(raw))
    bare = DnaTokenizer(tmp_path / "tokenizer.json")
    assert not bare.post_processed and tok.post_processed
    seqs = random_dna(5, [3, 100, 500, 700, 1], seed=4)
    assert [t.tolist() for t in bare(seqs)] == [t.tolist() for t in tok(seqs)]  # truncation ignored too


def test_tokenizer_errors(tmp_path):
    with pytest.raises(VirNucProError, match="not a readable tokenizer.json"):
        DnaTokenizer(tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(VirNucProError, match="not a readable tokenizer.json"):
        DnaTokenizer(tmp_path / "tokenizer.json")


# ------------------------------------------------------------------------------------ the packed forward


def test_every_token_matches_the_reference(snapshot):
    directory, state, model, tok = snapshot
    seqs = random_dna(len(RAGGED_BP), RAGGED_BP, seed=1)
    tokens = tok(seqs)
    lengths = [len(t) for t in tokens]
    assert max(lengths) > 512 and min(lengths) == 3
    batch = pack(tokens, np.arange(len(seqs)))
    with torch.inference_mode():
        hidden = model(batch.input_ids, batch.cu_seqlens, batch.max_seqlen)
    cu = batch.cu_seqlens.tolist()
    for i, ids in enumerate(hf_token_ids(directory, seqs)):
        want = reference_hidden(state, ids)
        torch.testing.assert_close(hidden[cu[i] : cu[i + 1]], want, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("budget", [1000, 8192, "all"])  # the longest alone, default CPU, one batch
def test_packed_embeddings_equal_the_reference(snapshot, budget):
    directory, state, model, tok = snapshot
    seqs = random_dna(len(RAGGED_BP) * 2, RAGGED_BP * 2, seed=2)
    ids = [f"s{i}" for i in range(len(seqs))]
    if budget == "all":
        budget = sum(len(t) for t in tok(seqs))
    got = embed_packed(ids, tok(seqs), lambda t: t, model.embed, 96, "cpu", budget, "test")
    want = reference_embeddings(state, hf_token_ids(directory, seqs))
    assert _rel_err(got, want).max() < TOL


def test_pooling_is_over_all_tokens_cls_and_sep_included(snapshot):
    directory, state, model, tok = snapshot
    seqs = random_dna(4, [10, 300, 500, 40], seed=5)
    got = model.embed(pack(tok(seqs), np.arange(4))).numpy()
    ids = hf_token_ids(directory, seqs)
    hidden = [reference_hidden(state, i).numpy() for i in ids]
    all_tokens = np.stack([h.mean(0) for h in hidden])
    inner_only = np.stack([h[1:-1].mean(0) for h in hidden])
    assert _rel_err(got, all_tokens).max() < TOL
    assert _rel_err(got, inner_only).min() > 100 * TOL  # the test tells the two poolings apart


@pytest.mark.parametrize("backend", ["reference", "padded_sdpa"])
def test_attention_backends_agree_with_the_reference(snapshot, backend):
    """Every ALiBi backend, run in float32 on the CPU, gives the reference's numbers."""
    directory, state, _, tok = snapshot
    model, _, _ = load_dnabert(directory, attention=backend)
    seqs = random_dna(9, [1, 30, 300, 500, 499, 2500, 64, 298, 7], seed=6)
    ids = [f"s{i}" for i in range(len(seqs))]
    got = embed_packed(ids, tok(seqs), lambda t: t, model.embed, 96, "cpu", 2048, "test")
    want = reference_embeddings(state, hf_token_ids(directory, seqs))
    assert _rel_err(got, want).max() < TOL


def test_compute_dtypes_are_the_store_namespace_precisions():
    """The dtype a device type computes in is the one its embeddings' namespace names."""
    assert dnabert.DTYPE == {"cuda": torch.bfloat16, "cpu": torch.float32}
    for device, precision in DNABERT_PRECISION.items():
        assert precision.split()[0] == str(dnabert.DTYPE[device]).removeprefix("torch.")


def test_cpu_embeddings_do_not_depend_on_batch_composition(snapshot):
    """Bit for bit on the CPU: a frame's embedding is the same in any batch (so any shard count)."""
    _, _, model, tok = snapshot
    rng = np.random.default_rng(12)
    seqs = random_dna(240, rng.integers(280, 501, 240), seed=12)
    ids = [f"s{i}" for i in range(len(seqs))]
    whole = embed_packed(ids, tok(seqs), lambda t: t, model.embed, 96, "cpu", 8192, "test")
    third = embed_packed(ids[:80], tok(seqs[:80]), lambda t: t, model.embed, 96, "cpu", 8192, "test")
    small = embed_packed(ids, tok(seqs), lambda t: t, model.embed, 96, "cpu", 1500, "test")
    assert np.array_equal(whole[:80], third) and np.array_equal(whole, small)


def test_no_cross_talk_between_packed_sequences(snapshot):
    _, _, model, tok = snapshot
    seqs = random_dna(5, [120, 3, 900, 300, 1], seed=7)
    alone = np.stack([model.embed(pack(tok([s]), [0]))[0].numpy() for s in seqs])
    together = model.embed(pack(tok(seqs), np.arange(5))).numpy()
    reordered = model.embed(pack(tok(seqs[::-1]), np.arange(5))).numpy()[::-1]
    assert _rel_err(together, alone).max() < 1e-6
    assert _rel_err(reordered, alone).max() < 1e-6


# ------------------------------------------------------------------------------------ loading


def _embed(model_dir, seqs):
    model, tok, path = load_dnabert(model_dir)
    return model.embed(pack(tok(seqs), np.arange(len(seqs)))).numpy(), path


def test_both_weight_formats_and_the_bert_prefix_load_the_same_model(snapshot, tmp_path, bpe):
    directory, state, _, _ = snapshot
    seqs = random_dna(3, [50, 500, 5], seed=8)
    want, path = _embed(directory, seqs)
    assert path.name == "model.safetensors"
    for name, formats, prefix in [("bin", ("bin",), ""), ("bert", ("safetensors",), "bert."),
                                  ("bert_bin", ("bin",), "bert."), ("both", ("bin", "safetensors"), "")]:
        d, other_state, _ = build_tiny_dnabert(tmp_path / name, tokenizer=bpe, formats=formats, prefix=prefix)
        assert all(torch.equal(other_state[k], state[k]) for k in state)  # same seed, same weights
        got, path = _embed(d, seqs)
        assert path.name == ("pytorch_model.bin" if formats == ("bin",) else "model.safetensors")
        assert np.array_equal(got, want), name
    assert any(k.startswith("pooler.") for k in state) and any(k.startswith("cls.") for k in state)


def _write_variant(tmp_path, snapshot, state=None, config_changes=None, fmt="safetensors"):
    directory = snapshot[0]
    out = tmp_path / f"variant{len(list(tmp_path.glob('variant*')))}"
    out.mkdir()
    (out / "tokenizer.json").write_text((directory / "tokenizer.json").read_text())
    cfg = json.loads((directory / "config.json").read_text())
    cfg.update(config_changes or {})
    (out / "config.json").write_text(json.dumps(cfg))
    if state is not None:
        write_weights(state, out, fmt)
    return out


def _one_line_error(directory, match):
    with pytest.raises(VirNucProError, match=match) as err:
        load_dnabert(directory)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_mismatched_checkpoints_are_refused_naming_file_and_key(snapshot, tmp_path):
    state = snapshot[1]
    missing = {k: v for k, v in state.items() if k != "encoder.layer.1.mlp.wo.bias"}
    d = _write_variant(tmp_path, snapshot, missing)
    msg = _one_line_error(d, "missing key 'encoder.layer.1.mlp.wo.bias'")
    assert str(d / "model.safetensors") in msg

    shaped = dict(state, **{"encoder.layer.0.attention.self.Wqkv.weight": torch.zeros(96 * 3, 64)})
    d = _write_variant(tmp_path, snapshot, shaped, fmt="bin")
    msg = _one_line_error(d, r"key 'encoder.layer.0.attention.self.Wqkv.weight' has shape \(288, 64\)")
    assert "(288, 96)" in msg and str(d / "pytorch_model.bin") in msg

    extra = dict(state, **{"encoder.layer.0.attention.self.Wq.weight": torch.zeros(96, 96)})
    d = _write_variant(tmp_path, snapshot, extra)
    _one_line_error(d, "unexpected key 'encoder.layer.0.attention.self.Wq.weight'")

    d = _write_variant(tmp_path, snapshot, state, {"num_hidden_layers": 3})
    _one_line_error(d, "missing key 'encoder.layer.2.")
    d = _write_variant(tmp_path, snapshot, state, {"num_hidden_layers": 1})
    _one_line_error(d, "unexpected key 'encoder.layer.1.")
    d = _write_variant(tmp_path, snapshot, state, {"hidden_size": 120})
    _one_line_error(d, "has shape")
    d = _write_variant(tmp_path, snapshot, state, {"vocab_size": 100})  # tokenizer has 256 tokens
    _one_line_error(d, "tokenizer.json has 256 tokens but config.json vocab_size is 100")

    buffers = dict(state, **{"embeddings.position_ids": torch.arange(512)[None]})  # saved by some BERTs
    d = _write_variant(tmp_path, snapshot, buffers)
    load_dnabert(d)


class Payload:
    """A class no allow-list names: unpickling it must be refused, not executed."""


def test_unsafe_or_broken_weight_files_are_refused(snapshot, tmp_path):
    d = _write_variant(tmp_path, snapshot)
    _one_line_error(d, r"no model weights \(model.safetensors or pytorch_model.bin\)")
    torch.save({"embeddings.word_embeddings.weight": Payload()}, d / "pytorch_model.bin")
    _one_line_error(d, "pytorch_model.bin: not a loadable weights file")
    torch.save({"step": 3}, d / "pytorch_model.bin")
    _one_line_error(d, "not a state dict of tensors")
    (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken header}")
    _one_line_error(d, "model.safetensors: not a loadable weights file")
    with pytest.raises(VirNucProError, match="model directory not found"):
        load_dnabert(tmp_path / "absent")
