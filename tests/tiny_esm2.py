"""A tiny ESM-2 (fair-esm's own ESM2 class, random weights) saved in fair-esm's checkpoint format.

The files mirror a real `esm2_*.pt` download: a dict with 'model' (the state dict under fairseq names,
`encoder.sentence_encoder.*` and `encoder.lm_head.*`) and 'cfg' ({'model': argparse.Namespace(...)}),
plus `<name>-contact-regression.pt` holding the contact head, so the real loader
(`esm.pretrained.load_model_and_alphabet_core`) is what reads them. Also the references that tests and
benchmarks share: random proteins, fair-esm's padded pooled forward, the layer-by-layer comparison.
"""

from argparse import Namespace
from pathlib import Path

import numpy as np
import torch


def build_tiny_esm2(num_layers=2, embed_dim=64, heads=4, seed=0, token_dropout=True):
    """fair-esm ESM2 with random weights (LayerNorms and biases randomised too, so none is trivial), in
    float32 holding float16 values: the published checkpoints are float16, and so are the files
    `save_fair_esm_checkpoint` writes, so the module and its file hold the same weights."""
    from esm.model.esm2 import ESM2

    torch.manual_seed(seed)
    model = ESM2(num_layers=num_layers, embed_dim=embed_dim, attention_heads=heads, token_dropout=token_dropout)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
            elif "layer_norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.1)
            elif name == "embed_tokens.weight":
                p.normal_(0.0, 1.0)
            p.copy_(p.half().float())
    return model.eval()


def save_fair_esm_checkpoint(model, directory, name="esm2_tiny_UR50D", regression=True, dtype=torch.float16):
    """Write `<name>.pt` (and `<name>-contact-regression.pt`) as fair-esm distributes them, weights in
    `dtype` (float16, as published); returns the path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # every floating-point entry in `dtype`, the rotary `inv_freq` buffers too: the published files hold
    # them rounded to float16 (the model was converted to float16 in training), and fair-esm runs them so
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    main, contact = {}, {}
    for key, value in state.items():
        if key.startswith("contact_head."):
            contact[key] = value.clone()
        elif key.startswith("lm_head."):
            main[f"encoder.{key}"] = value.clone()
        else:
            main[f"encoder.sentence_encoder.{key}"] = value.clone()
    cfg = Namespace(
        _name="ESM2",
        encoder_layers=model.num_layers,
        encoder_embed_dim=model.embed_dim,
        encoder_ffn_embed_dim=4 * model.embed_dim,
        encoder_attention_heads=model.attention_heads,
        token_dropout=model.token_dropout,
        max_positions=1024,
    )
    path = directory / f"{name}.pt"
    torch.save({"model": main, "cfg": {"model": cfg}, "optimizer_history": []}, path)
    if regression:
        torch.save({"model": contact, "args": Namespace(arch="contact_regression")},
                   directory / f"{name}-contact-regression.pt")
    return path


def fair_esm_from_file(path):
    """The fair-esm model as the original VirNucPro loads a checkpoint (fair-esm's own loader, float32,
    the file's weights and rotary tables as stored), in eval mode."""
    from argparse import Namespace as _Namespace

    import esm

    path = Path(path)
    with torch.serialization.safe_globals([_Namespace]):
        data = torch.load(path, map_location="cpu", weights_only=True)
        regression_path = path.with_name(f"{path.stem}-contact-regression.pt")
        regression = torch.load(regression_path, map_location="cpu", weights_only=True) \
            if regression_path.is_file() else None
    model, _ = esm.pretrained.load_model_and_alphabet_core(path.stem, data, regression)
    return model.eval()


AA = list("ACDEFGHIKLMNPQRSTVWY")
LENGTHS = [1, 2, 5, 20, 64, 100, 166, 166, 250, 400, 700, 1021, 1022, 1100]  # both sides of the truncation


def random_proteins(lengths, seed=0):
    """Random proteins over the 20 standard residues, one of each length."""
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(AA, int(n))) for n in lengths]


@torch.no_grad()
def padded_reference(model, seqs, layer, batch=None):
    """fair-esm's own padded forward of `model` as the original extract pools it: truncation 1022, mean of
    `layer` over the residues [1, len + 1), float32 on the host; `batch` sequences at a time (all: None)."""
    convert = model.alphabet.get_batch_converter(truncation_seq_length=1022)
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(seqs), batch or max(len(seqs), 1)):
        chunk = seqs[i : i + (batch or len(seqs))]
        _, _, tokens = convert(list(enumerate(chunk)))
        rep = model(tokens.to(device), repr_layers=[layer])["representations"][layer].float()
        out += [rep[j, 1 : min(len(s), 1022) + 1].mean(0).cpu().numpy() for j, s in enumerate(chunk)]
    return np.stack(out)


def first_layers(model, k):
    """A copy of the fair-esm ESM2 `model` with its first `k` layers (its final layer norm after them)."""
    import copy

    part = copy.deepcopy(model)
    part.layers, part.num_layers = part.layers[:k], k
    return part


def assert_every_layer_matches_fair_esm(model, seqs, rtol=1e-5, atol=1e-5, **options):
    """For every depth k, the packed forward of `model`'s first k layers (`packed_from_fair_esm` with
    `options`) equals fair-esm's padded float32 forward of the same k layers, token by token: both end
    in the final layer norm, so each layer is checked as it is added. Returns the packed models."""
    from virnucpro.models.esm2 import tokenizer
    from virnucpro.models.packing import pack

    batch = pack(tokenizer()(seqs), np.arange(len(seqs)))
    _, _, tokens = model.alphabet.get_batch_converter(truncation_seq_length=1022)(list(enumerate(seqs)))
    cu, packed = batch.cu_seqlens.tolist(), []
    for k in range(1, model.num_layers + 1):
        part = first_layers(model, k)
        packed.append(packed_from_fair_esm(part, "cpu", torch.float32, **options))
        got = packed[-1].forward_packed(batch.input_ids, batch.cu_seqlens, batch.max_seqlen)
        with torch.no_grad():
            want = part(tokens, repr_layers=[k])["representations"][k]
        for i in range(len(seqs)):
            torch.testing.assert_close(got[cu[i] : cu[i + 1]], want[i, : cu[i + 1] - cu[i]], rtol=rtol, atol=atol)
    return packed


def packed_from_fair_esm(model, device, dtype, float8=False, **options):
    """PackedESM2 from a fair-esm `ESM2` module, its weights taken as the converted file holds them
    (`packed_state`; with `float8`, q, k, fc1 and fc2 quantised as the models step does); `options` as
    PackedESM2 takes them."""
    from virnucpro.models.esm2 import Esm2Config, PackedESM2, float8_state, packed_state

    config = Esm2Config.of(model)
    state = packed_state(config, model.state_dict(), torch.float32)
    if float8:
        state = float8_state(config, state)
    return PackedESM2(config, state, device, dtype, float8=float8, **options)
