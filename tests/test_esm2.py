"""ESM-2 packed path against fair-esm's own padded forward, on a tiny model in fair-esm's file format.

Tolerances: both sides run in float32 on the CPU and differ only in summation order (packed rows vs
padded rows, per-segment attention vs masked attention), which is ~1e-7 relative; 1e-5 leaves room for
other BLAS builds while any real defect (a wrong position, a missing scale, a pooled BOS) is >= 1e-3.
"""

import hashlib
import logging

import esm
import numpy as np
import pytest
import torch

from tiny_esm2 import build_tiny_esm2, save_fair_esm_checkpoint
from virnucpro.cli import main as cli_main
from virnucpro.embeddings import read_embeddings
from virnucpro.errors import VirNucProError
from virnucpro.esm2 import Esm2Tokenizer, PackedESM2, load_fair_esm
from virnucpro.packing import pack
from virnucpro.runner import embed_packed

AA = list("ACDEFGHIKLMNPQRSTVWY")
RTOL = 1e-5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(fair-esm reference model, checkpoint path, packed float32 model loaded from that file)."""
    ref = build_tiny_esm2(num_layers=3, embed_dim=64, heads=4)
    path = save_fair_esm_checkpoint(ref, tmp_path_factory.mktemp("models"))
    loaded, alphabet, _ = load_fair_esm(path)
    return ref, path, PackedESM2(loaded, "cpu", torch.float32), Esm2Tokenizer(alphabet)


def _random_proteins(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(AA, n)) for n in lengths]


def _fair_esm_reference(model, seqs, layer):
    """The original extract: padded batch, truncation 1022, mean over [1, len + 1)."""
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    _, _, tokens = alphabet.get_batch_converter(truncation_seq_length=1022)(list(enumerate(seqs)))
    with torch.no_grad():
        rep = model(tokens, repr_layers=[layer])["representations"][layer]
    return np.stack([rep[i, 1 : min(len(s), 1022) + 1].mean(0).numpy() for i, s in enumerate(seqs)])


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


def test_bad_residue_names_the_record():
    tok = Esm2Tokenizer(esm.data.Alphabet.from_architecture("ESM-1b"))
    with pytest.raises(VirNucProError, match="protein 'p2'.*'J'"):
        tok.lengths(["p1", "p2"], ["ACD", "ACJD"])
    with pytest.raises(VirNucProError, match="protein 'low'"):
        tok.lengths(["low"], ["acd"])


# ----------------------------------------------------------------------------------- loading


def test_loader_goes_through_fair_esm_and_keeps_every_weight(tiny):
    ref, path, _, _ = tiny
    loaded, alphabet, found = load_fair_esm(path)
    assert found == path and len(alphabet) == 33
    want = ref.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)  # contact head too, from the regression file


def test_loader_by_name_from_the_torch_hub_cache(tiny, tmp_path, monkeypatch):
    ref, _, _, _ = tiny
    save_fair_esm_checkpoint(ref, tmp_path / "hub" / "checkpoints", name="esm2_t3_tiny", regression=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    loaded, _, path = load_fair_esm("esm2_t3_tiny")
    assert path == tmp_path / "hub" / "checkpoints" / "esm2_t3_tiny.pt"
    assert torch.equal(loaded.embed_tokens.weight, ref.embed_tokens.weight)


class Payload:
    """A class no allow-list names: unpickling it must be refused, not executed."""


def test_loader_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(VirNucProError, match="model file not found"):
        load_fair_esm(tmp_path / "absent.pt")
    with pytest.raises(VirNucProError, match="neither a file nor in the torch hub cache"):
        load_fair_esm("esm2_t36_3B_UR50D")
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(VirNucProError, match="not a loadable fair-esm checkpoint") as err:
        load_fair_esm(text)
    assert "\n" not in str(err.value)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "plain.pt")
    with pytest.raises(VirNucProError, match="not a fair-esm ESM-2 checkpoint"):
        load_fair_esm(tmp_path / "plain.pt")
    torch.save({"model": {}, "cfg": Payload()}, tmp_path / "esm2_evil.pt")
    with pytest.raises(VirNucProError, match="not a loadable fair-esm checkpoint"):
        load_fair_esm(tmp_path / "esm2_evil.pt")


# ----------------------------------------------------------------------------------- the packed path


RAGGED = [1, 2, 3, 7, 20, 64, 100, 166, 300, 511, 700, 1021, 1022, 1023, 1100]


def assert_every_layer_matches_fair_esm(model, packed, seqs):
    """Packed representations of every layer equal fair-esm's padded float32 forward, token by token."""
    tok = Esm2Tokenizer(esm.data.Alphabet.from_architecture("ESM-1b"))
    batch = pack(tok(seqs), np.arange(len(seqs)))
    layers = list(range(packed.num_layers + 1))
    got = packed.forward_packed(batch.input_ids, batch.cu_seqlens, batch.max_seqlen, layers)["representations"]
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    _, _, tokens = alphabet.get_batch_converter(truncation_seq_length=1022)(list(enumerate(seqs)))
    with torch.no_grad():
        want = model(tokens, repr_layers=layers)["representations"]
    cu = batch.cu_seqlens.tolist()
    for layer in layers:
        for i in range(len(seqs)):
            n = cu[i + 1] - cu[i]
            torch.testing.assert_close(got[layer][cu[i] : cu[i + 1]], want[layer][i, :n], rtol=RTOL, atol=1e-5)


def test_every_layer_matches_fair_esm_token_by_token(tiny):
    ref, _, packed, _ = tiny
    seqs = _random_proteins([1, 9, 40, 130]) + ["ACD<mask>EFGH<mask>K"]  # <mask>: token-dropout rescaling
    assert_every_layer_matches_fair_esm(ref, packed, seqs)


@pytest.mark.parametrize(
    "budget",
    [1024 + 2, 4096, 1_000_000],  # one full protein a batch, typical, everything in one batch
)
def test_packed_embeddings_equal_the_padded_original(tiny, budget):
    ref, _, packed, tok = tiny
    seqs = _random_proteins(RAGGED, seed=1)
    ids = [f"p{i}" for i in range(len(seqs))]
    got = embed_packed(ids, seqs, tok, packed.embed, 64, "cpu", budget, "test")
    want = _fair_esm_reference(ref, seqs, 3)
    assert _rel_err(got, want).max() < RTOL


def test_many_short_and_one_over_the_budget(tiny):
    ref, _, packed, tok = tiny
    seqs = _random_proteins(list(range(1, 41)) + [1100], seed=2)
    ids = [f"s{i}" for i in range(len(seqs))]
    got = embed_packed(ids, seqs, tok, packed.embed, 64, "cpu", 256, "test")  # 1100 > 256 goes alone
    assert _rel_err(got, _fair_esm_reference(ref, seqs, 3)).max() < RTOL


def test_no_cross_talk_between_packed_sequences(tiny):
    _, _, packed, tok = tiny
    seqs = _random_proteins([50, 3, 400, 120, 1], seed=3)
    alone = np.stack([packed.embed(pack(tok([s]), [0]))[0].numpy() for s in seqs])
    together = packed.embed(pack(tok(seqs), np.arange(5))).numpy()
    reordered = packed.embed(pack(tok(seqs[::-1]), np.arange(5))).numpy()[::-1]
    assert _rel_err(together, alone).max() < 1e-6
    assert _rel_err(reordered, alone).max() < 1e-6


def test_out_of_memory_split_gives_the_same_embeddings(tiny):
    _, _, packed, tok = tiny
    seqs = _random_proteins(np.random.default_rng(4).integers(1, 200, 60), seed=4)
    ids = [f"s{i}" for i in range(len(seqs))]
    whole = embed_packed(ids, seqs, tok, packed.embed, 64, "cpu", 100_000, "test")

    def forward(batch):
        if batch.num_tokens > 500:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return packed.embed(batch)

    split = embed_packed(ids, seqs, tok, forward, 64, "cpu", 100_000, "test")
    assert _rel_err(split, whole).max() < 1e-6


def test_nan_embedding_names_the_sequence(tiny):
    ref, path, _, tok = tiny
    loaded, _, _ = load_fair_esm(path)
    with torch.no_grad():
        loaded.embed_tokens.weight[22] = float("nan")  # W
    broken = PackedESM2(loaded, "cpu", torch.float32)
    seqs = ["ACDE", "KLMNPW", "QRST"]
    with pytest.raises(VirNucProError, match="'second'"):
        embed_packed(["first", "second", "third"], seqs, tok, broken.embed, 64, "cpu", 4096, "test")


# ----------------------------------------------------------------------------------- the CLI step


def _write_fasta(path, records):
    path.write_text("".join(f">{rid} some description\n{seq[:60]}\n{seq[60:]}\n" for rid, seq in records))


def test_cli_embed_protein_end_to_end(tiny, tmp_path, caplog):
    ref, path, _, _ = tiny
    seqs = _random_proteins([5, 166, 80, 1100, 1, 33], seed=5)
    records = [(f"frag{i}_chunk_1F{i % 3 + 1}", s) for i, s in enumerate(seqs)]
    faa = tmp_path / "frames.faa"
    _write_fasta(faa, records)
    out = tmp_path / "esm" / "0.h5"
    with caplog.at_level(logging.INFO, logger="virnucpro"):
        rc = cli_main(["embed-protein", str(faa), "--model", str(path), "--out", str(out),
                       "--device", "cpu", "--tokens-per-batch", "1500"])
    assert rc == 0
    ids, emb, attrs = read_embeddings(out)
    assert ids == [r[0] for r in records]
    assert emb.shape == (6, 64) and emb.dtype == np.float32
    assert _rel_err(emb, _fair_esm_reference(ref, seqs, 3)).max() < RTOL
    assert attrs["model"] == path.name and attrs["layer"] == 3 and attrs["precision"] == "float32"
    assert attrs["model_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "BOS" in attrs["pooling"] or "<cls>" in attrs["pooling"]
    assert "sequences/s" in caplog.text and "tokens/s" in caplog.text


def test_cli_empty_input_gives_zero_rows(tiny, tmp_path):
    _, path, _, _ = tiny
    faa = tmp_path / "empty.faa"
    faa.write_text("")
    out = tmp_path / "empty.h5"
    assert cli_main(["embed-protein", str(faa), "--model", str(path), "--out", str(out), "--device", "cpu"]) == 0
    ids, emb, _ = read_embeddings(out)
    assert ids == [] and emb.shape == (0, 64)


def test_cli_errors_are_one_line(tiny, tmp_path, capsys):
    _, path, _, _ = tiny
    faa = tmp_path / "f.faa"
    _write_fasta(faa, [("ok", "ACDE"), ("bad", "AC1DE")])
    out = tmp_path / "o.h5"
    assert cli_main(["embed-protein", str(faa), "--model", str(path), "--out", str(out), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("virnucpro embed-protein: error: protein 'bad'")
    assert cli_main(["embed-protein", str(faa), "--model", str(tmp_path / "none.pt"), "--out", str(out)]) == 1
    assert not out.exists()


def test_compiled_layers_match_eager(tiny):
    """The torch.compile path (token dimension dynamic) computes the same function as the eager one."""
    ref, _, packed, tok = tiny
    compiled = PackedESM2(ref, "cpu", torch.float32, compile=True)
    for lengths in ([3, 50, 200], [1, 7, 20, 90, 400, 1100]):  # two token counts: no re-specialisation
        batch = pack(tok(_random_proteins(lengths, seed=len(lengths))), np.arange(len(lengths)))
        want = packed.embed(batch).numpy()
        got = compiled.embed(batch).numpy()
        assert _rel_err(got, want).max() < RTOL
