"""ESM-2: the float16 conversion of a fair-esm checkpoint and the packed path that runs it, against
fair-esm's own padded forward of the same file, on a tiny model in fair-esm's file format.

Tolerances: both sides run in float32 on the CPU over the same (float16-valued) weights and differ only
in summation order (packed rows vs padded rows, per-segment attention vs masked attention), which is
~1e-7 relative; 1e-5 leaves room for other BLAS builds while a missing scale, a pooled BOS or the
recomputed instead of the stored rotary table is >= 1e-4. Rotary positions that are global instead of
restarting in every sequence are not caught: q·k depends only on the difference of two positions, which
a constant offset leaves unchanged in exact arithmetic.
"""

import hashlib
import os

import esm
import numpy as np
import pytest
import torch
from tests.tiny_esm2 import (
    assert_every_layer_matches_fair_esm,
    build_tiny_esm2,
    fair_esm_from_file,
    packed_from_fair_esm,
    padded_reference,
    random_proteins,
    save_fair_esm_checkpoint,
)

from virnucpro.errors import VirNucProError
from virnucpro.steps.models import ensure_converted
from virnucpro.models import esm2
from virnucpro.models.esm2 import (
    Esm2Tokenizer,
    convert_checkpoint,
    load_converted,
    read_checkpoint,
    tokenizer,
)
from virnucpro.models.packing import pack, segment_ids
from tests.packed_runs import embed_packed

RTOL = 1e-5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(fair-esm model as the original loads the checkpoint, checkpoint path, the packed float32 model
    loaded from its conversion, tokenizer)."""
    d = tmp_path_factory.mktemp("models")
    path = save_fair_esm_checkpoint(build_tiny_esm2(num_layers=3, embed_dim=64, heads=4), d)
    converted, digest = ensure_converted("esm2", path, d)
    return fair_esm_from_file(path), path, load_converted(converted, digest, "cpu"), tokenizer()


def _rel_err(a, b):
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


# ----------------------------------------------------------------------------------- tokenising


def test_tokens_match_hand_written_ids_and_fair_esm():
    tok = Esm2Tokenizer(esm.data.Alphabet.from_architecture("ESM-1b"))
    # <cls>=0, <eos>=2, M=20, K=15, V=7, L=4, W=22, X=24
    assert tok(["MKV", "L", "WX"])[0].tolist() == [0, 20, 15, 7, 2]
    assert tok(["L"])[0].tolist() == [0, 4, 2]
    assert tok(["WX"])[0].tolist() == [0, 22, 24, 2]
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    for s in ["ACD<mask>EF", "AC DE\t", "ACD.-BZUO", "<unk>A"]:
        assert tok([s])[0][1:-1].tolist() == alphabet.encode(s)


def test_truncation_to_1022_residues():
    tok = Esm2Tokenizer(esm.data.Alphabet.from_architecture("ESM-1b"))
    (long,) = tok(["M" * 1021 + "K" * 79])
    assert len(long) == 1024 and long[1022] == 15 and long[-1] == 2  # residue 1022 is the first K
    lengths = tok.lengths(["a", "b", "c"], ["A" * 1022, "A" * 1023, "A"])
    assert lengths.tolist() == [1024, 1024, 3]


@pytest.mark.parametrize("extra", [[], ["AC<mask>DE", "AC DE"]])
def test_token_counts_are_the_lengths_of_the_tokens(extra):
    """Counted at once for plain residues, one by one where specials or whitespace change the count."""
    tok = Esm2Tokenizer(esm.data.Alphabet.from_architecture("ESM-1b"))
    seqs = random_proteins([1, 30, 1022, 1500, 7], seed=3) + extra
    assert tok.lengths(list(map(str, range(len(seqs)))), seqs).tolist() == [len(t) for t in tok(seqs)]


def test_kernels_are_cached_in_the_models_folder_where_it_can_be_written(tmp_path, monkeypatch):
    from virnucpro.models.generated import KERNEL_CACHES, use_kernel_cache

    for variable in KERNEL_CACHES:
        monkeypatch.setenv(variable, "default")
    (tmp_path / "a_file").write_text("")
    assert not use_kernel_cache(tmp_path / "a_file" / "kernels")  # cannot be made: the defaults stay
    assert all(os.environ[v] == "default" for v in KERNEL_CACHES)
    assert use_kernel_cache(tmp_path / "kernels")
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "kernels" / "triton")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "kernels" / "inductor")


def test_bad_residue_names_the_record():
    tok = Esm2Tokenizer(esm.data.Alphabet.from_architecture("ESM-1b"))
    with pytest.raises(VirNucProError, match="protein 'p2'.*'J'"):
        tok.lengths(["p1", "p2"], ["ACD", "ACJD"])
    with pytest.raises(VirNucProError, match="protein 'low'"):
        tok.lengths(["low"], ["acd"])


# ------------------------------------------------------------------------------------ conversion


def test_conversion_keeps_every_weight_in_float16(tiny, tmp_path):
    from safetensors.torch import load_file

    ref, path, packed, _ = tiny
    converted, digest = ensure_converted("esm2", path, tmp_path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert converted.name == f"{path.stem}-{digest[:16]}.safetensors"
    state = load_file(converted)
    want = ref.state_dict()
    layer = ref.layers[1]
    assert state["layers.1.qkv.weight"].dtype == torch.float16
    qkv = torch.cat([layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight, layer.self_attn.v_proj.weight])
    assert torch.equal(state["layers.1.qkv.weight"].float(), qkv)
    assert torch.equal(state["layers.2.fc2.bias"].float(), want["layers.2.fc2.bias"])
    assert torch.equal(state["final_norm.weight"].float(), want["emb_layer_norm_after.weight"])
    # the rotary table is the file's own, rounded to float16, as fair-esm runs it, not recomputed
    stored = want["layers.0.self_attn.rot_emb.inv_freq"]
    recomputed = 1.0 / (10000 ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16))
    assert torch.equal(state["rotary.inv_freq"], stored) and not torch.equal(stored, recomputed)
    assert torch.equal(packed.inv_freq, stored)


def test_a_second_conversion_is_found_not_made(tiny, tmp_path):
    _, path, _, _ = tiny
    first, _ = ensure_converted("esm2", path, tmp_path)
    stamp = first.stat().st_mtime_ns
    again, _ = ensure_converted("esm2", path, tmp_path)
    assert again == first and first.stat().st_mtime_ns == stamp


def test_conversion_loaded_from_the_torch_hub_cache_by_name(tiny, tmp_path, monkeypatch):
    from virnucpro.models.esm2 import resolve_checkpoint

    ref, _, _, _ = tiny
    save_fair_esm_checkpoint(ref, tmp_path / "hub" / "checkpoints", name="esm2_t3_tiny", regression=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert resolve_checkpoint("esm2_t3_tiny") == tmp_path / "hub" / "checkpoints" / "esm2_t3_tiny.pt"


class Payload:
    """A class no allow-list names: unpickling it must be refused, not executed."""


def test_unreadable_checkpoints_are_one_line_errors(tmp_path):
    out = tmp_path / "out.safetensors"
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(VirNucProError, match="not a loadable fair-esm checkpoint") as err:
        convert_checkpoint(text, out, "0" * 64)
    assert "\n" not in str(err.value)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "plain.pt")
    with pytest.raises(VirNucProError, match="not a fair-esm ESM-2 checkpoint"):
        convert_checkpoint(tmp_path / "plain.pt", out, "0" * 64)
    torch.save({"model": {}, "cfg": Payload()}, tmp_path / "esm2_evil.pt")
    with pytest.raises(VirNucProError, match=r"refused to load: the pickle asks for test_esm2\.Payload"):
        convert_checkpoint(tmp_path / "esm2_evil.pt", out, "0" * 64)
    with pytest.raises(VirNucProError, match="model file not found"):
        ensure_converted("esm2", tmp_path / "absent.pt", tmp_path)
    assert not out.exists()


def test_checkpoints_of_another_architecture_are_refused(tmp_path):
    model = build_tiny_esm2(num_layers=2, embed_dim=64, heads=4)
    path = save_fair_esm_checkpoint(model, tmp_path / "a")
    data = torch.load(path, weights_only=False)
    del data["model"]["encoder.sentence_encoder.layers.1.fc1.bias"]
    torch.save(data, tmp_path / "missing.pt")
    with pytest.raises(VirNucProError, match="missing 'layers.1.fc1.bias'"):
        read_checkpoint(tmp_path / "missing.pt")
    data["cfg"]["model"].encoder_embed_dim = 32
    torch.save(data, tmp_path / "wide.pt")
    with pytest.raises(VirNucProError, match=r"'embed_tokens.weight' has shape \(33, 64\), the config implies \(33, 32\)"):
        read_checkpoint(tmp_path / "wide.pt")


def test_weights_beyond_float16_are_refused(tmp_path):
    model = build_tiny_esm2(num_layers=1, embed_dim=64, heads=4)
    with torch.no_grad():
        model.layers[0].fc1.weight[0, 0] = 1e6
    path = save_fair_esm_checkpoint(model, tmp_path, dtype=torch.float32)
    with pytest.raises(VirNucProError, match="'layers.0.fc1.weight' does not fit in float16"):
        convert_checkpoint(path, tmp_path / "out.safetensors", "0" * 64)


def test_a_converted_file_must_name_its_source_and_be_unchanged(tiny, tmp_path):
    _, path, _, _ = tiny
    converted, digest = ensure_converted("esm2", path, tmp_path)
    with pytest.raises(VirNucProError, match="converted from another checkpoint"):
        load_converted(converted, "1" * 64, "cpu")
    data = bytearray(converted.read_bytes())
    data[-3] ^= 0x01
    converted.write_bytes(bytes(data))
    with pytest.raises(VirNucProError, match="differs from the checksum recorded when it was verified"):
        load_converted(converted, digest, "cpu")


# ----------------------------------------------------------------------------------- the packed path


RAGGED = [1, 2, 3, 7, 20, 64, 100, 166, 300, 511, 700, 1021, 1022, 1023, 1100]


def test_every_layer_matches_fair_esm_token_by_token(tiny):
    ref, _, _, _ = tiny
    seqs = random_proteins([1, 9, 40, 130]) + ["ACD<mask>EFGH<mask>K"]  # <mask>: token-dropout rescaling
    assert_every_layer_matches_fair_esm(ref, seqs)


def test_positions_restart_in_every_sequence_however_far_into_the_batch(tiny):
    """The rotary angles of a protein packed after 40,000 tokens of others are, bit for bit, those of the
    same protein packed first: its positions restart at 0. (Positions counted across the batch cancel in
    q.k mathematically, so an end-to-end comparison on a small random model barely sees them: the
    tables are checked directly.)"""
    inv_freq = tiny[2].inv_freq
    cu_seqlens = torch.tensor([0, 152, 40_152, 40_304], dtype=torch.int32)
    seg = segment_ids(cu_seqlens, 40_304)
    cos, sin = esm2.TorchBackend("sdpa", heads=4).rotary(inv_freq, cu_seqlens, 40_000, seg)
    assert torch.equal(cos[40_152:], cos[:152]) and torch.equal(sin[40_152:], sin[:152])
    assert torch.equal(cos[0, 0], torch.ones_like(cos[0, 0])) and not torch.equal(cos[1], cos[0])


@pytest.mark.parametrize(
    "budget",
    [1024 + 2, 4096, 6100],  # one full protein a batch, typical, everything in one batch (6068 tokens)
)
def test_packed_embeddings_equal_the_padded_original(tiny, budget):
    ref, _, packed, tok = tiny
    seqs = random_proteins(RAGGED, seed=1)
    ids = [f"p{i}" for i in range(len(seqs))]
    got = embed_packed(ids, seqs, tok, packed.embed, 64, "cpu", budget, "test")
    want = padded_reference(ref, seqs, 3)
    assert _rel_err(got, want).max() < RTOL


def test_many_short_and_one_over_the_budget(tiny):
    ref, _, packed, tok = tiny
    seqs = random_proteins(list(range(1, 41)) + [1100], seed=2)
    ids = [f"s{i}" for i in range(len(seqs))]
    got = embed_packed(ids, seqs, tok, packed.embed, 64, "cpu", 256, "test")  # 1100 > 256 goes alone
    assert _rel_err(got, padded_reference(ref, seqs, 3)).max() < RTOL


def test_no_cross_talk_between_packed_sequences(tiny):
    _, _, packed, tok = tiny
    seqs = random_proteins([50, 3, 400, 120, 1], seed=3)
    alone = np.stack([packed.embed(pack(tok([s]), [0]))[0].numpy() for s in seqs])
    together = packed.embed(pack(tok(seqs), np.arange(5))).numpy()
    reordered = packed.embed(pack(tok(seqs[::-1]), np.arange(5))).numpy()[::-1]
    assert _rel_err(together, alone).max() < 1e-6
    assert _rel_err(reordered, alone).max() < 1e-6


def test_out_of_memory_split_gives_the_same_embeddings(tiny):
    _, _, packed, tok = tiny
    seqs = random_proteins(np.random.default_rng(4).integers(1, 200, 60), seed=4)
    ids = [f"s{i}" for i in range(len(seqs))]
    whole = embed_packed(ids, seqs, tok, packed.embed, 64, "cpu", 7000, "test")  # one batch

    def forward(batch):
        if batch.num_tokens > 500:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return packed.embed(batch)

    split = embed_packed(ids, seqs, tok, forward, 64, "cpu", 7000, "test")
    assert _rel_err(split, whole).max() < 1e-6


def test_nan_embedding_names_the_sequence(tiny):
    _, path, _, tok = tiny
    loaded = fair_esm_from_file(path)
    with torch.no_grad():
        loaded.embed_tokens.weight[22] = float("nan")  # W
    broken = packed_from_fair_esm(loaded, "cpu", torch.float32)
    seqs = ["ACDE", "KLMNPW", "QRST"]
    with pytest.raises(VirNucProError, match="'second'"):
        embed_packed(["first", "second", "third"], seqs, tok, broken.embed, 64, "cpu", 4096, "test")


def test_compiled_layers_match_eager(tiny):
    """The torch.compile path (token dimension dynamic) computes the same function as the eager one."""
    ref, _, packed, tok = tiny
    compiled = packed_from_fair_esm(ref, "cpu", torch.float32, compile=True)
    assert not packed.compiled
    for lengths in ([3, 50, 200], [1, 7, 20, 90, 400, 1100]):  # two token counts: no re-specialisation
        batch = pack(tok(random_proteins(lengths, seed=len(lengths))), np.arange(len(lengths)))
        want = packed.embed(batch).numpy()
        got = compiled.embed(batch).numpy()
        assert compiled.produced_by.compiled  # the compiled path produced it: no fallback to eager
        assert _rel_err(got, want).max() < RTOL


def _failing_project(exc):
    def project(*args):
        raise exc

    return project


def test_a_compile_build_failure_falls_back_to_eager(tiny, caplog):
    from torch._inductor.exc import InductorError

    ref, _, packed, tok = tiny
    model = packed_from_fair_esm(ref, "cpu", torch.float32, compile=True)
    model.backend._project = _failing_project(InductorError(RuntimeError("no C compiler"), None))
    batch = pack(tok(random_proteins([5, 30])), np.arange(2))
    with caplog.at_level("WARNING", logger="virnucpro"):
        got = model.embed(batch)
    assert torch.equal(got, packed.embed(batch))  # the whole batch again, eagerly
    assert not model.backend.compiled and model.produced_by is model.backend
    assert model.backend.name == "reference"
    assert "torch.compile failed" in caplog.text and "running ESM-2 on plain torch ops" in caplog.text


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("exc", [RuntimeError("CUDA error: an illegal memory access was encountered"),
                                 ValueError("shapes do not match")], ids=["device-fault", "bug"])
def test_a_device_fault_or_a_bug_propagates(tiny, compile, exc):
    """Only a build failure falls back: anything else raised inside the forward reaches the caller."""
    ref, _, _, tok = tiny
    model = packed_from_fair_esm(ref, "cpu", torch.float32, compile=compile)
    backend = model.backend
    backend._project = _failing_project(exc)
    with pytest.raises(type(exc)) as raised:
        model.embed(pack(tok(random_proteins([5, 30])), np.arange(2)))
    assert raised.value is exc
    assert model.backend is backend and model.produced_by is None


def test_one_alphabet_reads_checkpoints_and_tokenises():
    assert esm2.tokenizer().alphabet is esm2.alphabet()
    assert esm2.alphabet().mask_idx == 32 and esm2.alphabet().cls_idx == 0
