"""Tiny DNABERT-S snapshot directories in the published on-disk format, random weights.

A directory holds what a Hugging Face snapshot of zhihan1996/DNABERT-S holds, so the real loader is
what reads it:
- `config.json` with the field names of DNABERT-S / DNABERT-2 (MosaicBERT `BertConfig`, `auto_map` included);
- `tokenizer.json`: a BPE model trained with the `tokenizers` library on random DNA, special tokens
  [UNK] [CLS] [SEP] [PAD] [MASK] (ids 0-4, as in DNABERT-2), whitespace pre-tokenizer, and a
  TemplateProcessing post-processor giving `[CLS] $A [SEP]`;
- `model.safetensors` and/or `pytorch_model.bin`: a plain state dict under the published names
  (`embeddings.*`, `encoder.layer.N.attention.self.Wqkv.*`, ..., optionally `bert.`-prefixed, with the
  `pooler.*` and `cls.predictions.*` heads of the published checkpoints).

The key names and shapes are written out here independently of `virnucpro.models.dnabert`.

`reference_hidden` / `reference_embeddings`: the float32 one-sequence-at-a-time reference forward, written
from the published model code's arithmetic (an explicit ALiBi matrix with the published 12-head slopes,
matmul attention and softmax), also independently of `virnucpro.models.dnabert`; `hf_token_ids`: token ids
as the published tokenizer file gives them.
"""

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SPECIAL_TOKENS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
# the published slopes of the 12-head model, written out (not computed)
SLOPES_12 = [2**-1, 2**-2, 2**-3, 2**-4, 2**-5, 2**-6, 2**-7, 2**-8, 2**-0.5, 2**-1.5, 2**-2.5, 2**-3.5]


def random_dna(n, length, seed=0):
    """n random A/C/G/T strings; `length` an int or a sequence of n ints."""
    rng = np.random.default_rng(seed)
    lengths = [length] * n if np.isscalar(length) else list(length)
    alphabet = np.frombuffer(b"ACGT", dtype=np.uint8)
    return [alphabet[rng.integers(0, 4, int(k))].tobytes().decode() for k in lengths]


def train_tokenizer(vocab_size, seed=0, n_seqs=400, length=1000):
    """A DNABERT-2-style BPE tokenizer trained on random DNA (a `tokenizers.Tokenizer`)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=list("ACGT"),
        show_progress=False,
    )
    tok.train_from_iterator(random_dna(n_seqs, length, seed=seed), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return tok


def config_dict(hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, vocab_size):
    """config.json as DNABERT-S publishes it, with the given sizes, keys the forward does not use
    (`alibi_starting_size`, `max_position_embeddings`, dropout, `auto_map`, ...) included."""
    return {
        "_name_or_path": "zhihan1996/DNABERT-S",
        "alibi_starting_size": 512,
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_bert.BertConfig",
            "AutoModel": "bert_layers.BertModel",
            "AutoModelForMaskedLM": "bert_layers.BertForMaskedLM",
            "AutoModelForSequenceClassification": "bert_layers.BertForSequenceClassification",
        },
        "classifier_dropout": None,
        "gradient_checkpointing": False,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": intermediate_size,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512,
        "model_type": "bert",
        "num_attention_heads": num_attention_heads,
        "num_hidden_layers": num_hidden_layers,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "transformers_version": "4.28.0",
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": vocab_size,
    }


def random_state_dict(cfg, seed=0, heads=True, std=None):
    """Published key names -> random float32 tensors (LayerNorms and biases randomised too).

    Linear weights ~ N(0, std^2). The default std = 1/sqrt(fan_in) keeps activations of order one, so
    attention is neither uniform nor one-hot and every ALiBi slope matters (the tiny test models). Deep
    and wide at that scale, the random post-LN net is chaotic: bf16 rounding of its weights alone moves
    the pooled vector by ~1.5 %, whatever the implementation. std = cfg["initializer_range"] (0.02) is
    the model's own initialisation, a well-conditioned full-size model.
    """
    g = torch.Generator().manual_seed(seed)
    d, inter, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]

    def normal(*shape, mean=0.0, std=1.0):
        return torch.randn(*shape, generator=g) * std + mean

    def linear(out_f, in_f, prefix, bias=True):
        sd = {f"{prefix}.weight": normal(out_f, in_f, std=in_f**-0.5 if std is None else std)}
        if bias:
            sd[f"{prefix}.bias"] = normal(out_f, std=0.1)
        return sd

    def norm(prefix):
        return {f"{prefix}.weight": normal(d, mean=1.0, std=0.1), f"{prefix}.bias": normal(d, std=0.1)}

    sd = {
        "embeddings.word_embeddings.weight": normal(v, d),
        "embeddings.token_type_embeddings.weight": normal(cfg["type_vocab_size"], d),
        **norm("embeddings.LayerNorm"),
    }
    for n in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{n}"
        sd.update(linear(3 * d, d, f"{p}.attention.self.Wqkv"))
        sd.update(linear(d, d, f"{p}.attention.output.dense"))
        sd.update(norm(f"{p}.attention.output.LayerNorm"))
        sd.update(linear(2 * inter, d, f"{p}.mlp.gated_layers", bias=False))
        sd.update(linear(d, inter, f"{p}.mlp.wo"))
        sd.update(norm(f"{p}.mlp.layernorm"))
    if heads:  # in the published checkpoints, unused for embeddings
        sd.update(linear(d, d, "pooler.dense"))
        sd.update(linear(d, d, "cls.predictions.transform.dense"))
        sd.update(norm("cls.predictions.transform.LayerNorm"))
        sd["cls.predictions.bias"] = normal(v, std=0.1)
    return sd


def write_weights(state, directory, fmt, prefix=""):
    """Save `state` as model.safetensors ("safetensors") or pytorch_model.bin ("bin"); returns the path."""
    directory = Path(directory)
    state = {f"{prefix}{k}": t.contiguous().clone() for k, t in state.items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = directory / "model.safetensors"
        save_file(state, str(path), metadata={"format": "pt"})
    elif fmt == "bin":
        path = directory / "pytorch_model.bin"
        torch.save(state, path)
    else:
        raise ValueError(fmt)
    return path


def build_tiny_dnabert(
    directory,
    hidden_size=96,
    num_hidden_layers=2,
    num_attention_heads=12,
    intermediate_size=160,
    vocab_size=256,
    formats=("safetensors",),
    prefix="",
    seed=0,
    tokenizer=None,
    std=None,
):
    """Write a snapshot directory; returns (directory, state dict without prefix, config dict).

    `tokenizer`: a trained `tokenizers.Tokenizer` to reuse (training one takes ~0.1-1 s); its vocabulary
    must not exceed `vocab_size`. `std`: of the linear weights (see `random_state_dict`).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok = tokenizer if tokenizer is not None else train_tokenizer(min(vocab_size, 4096), seed=seed)
    assert tok.get_vocab_size() <= vocab_size
    tok.save(str(directory / "tokenizer.json"))
    cfg = config_dict(hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, vocab_size)
    (directory / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    state = random_state_dict(cfg, seed=seed, std=std)
    for fmt in formats:
        write_weights(state, directory, fmt, prefix)
    return directory, state, cfg


@torch.no_grad()
def reference_hidden(state, ids, device="cpu", dtype=torch.float32, heads=12, eps=1e-12):
    """Last hidden state (L, D) of ONE sequence of token ids, computed as the original model does."""
    w = {k.removeprefix("bert."): t.to(device=device, dtype=dtype) for k, t in state.items()}
    ids = torch.as_tensor(np.asarray(ids), device=device).long()[None]  # (1, L)
    length = ids.shape[1]
    d = w["embeddings.word_embeddings.weight"].shape[1]
    dh = d // heads
    n_layers = len({k.split(".")[2] for k in w if k.startswith("encoder.layer.")})

    def ln(x, prefix):
        return F.layer_norm(x, (d,), w[f"{prefix}.weight"], w[f"{prefix}.bias"], eps)

    token_type = torch.zeros_like(ids)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.token_type_embeddings.weight"][token_type]
    x = ln(x, "embeddings.LayerNorm")  # (1, L, D)
    pos = torch.arange(length, device=device)
    distance = (pos[None, :] - pos[:, None]).abs().to(torch.float32)  # (L, L)
    alibi = -torch.tensor(SLOPES_12, device=device)[:, None, None] * distance  # (H, L, L)
    alibi = alibi[None].to(dtype)  # (1, H, L, L)
    for n in range(n_layers):
        p = f"encoder.layer.{n}"
        qkv = x @ w[f"{p}.attention.self.Wqkv.weight"].T + w[f"{p}.attention.self.Wqkv.bias"]
        qkv = qkv.view(1, length, 3, heads, dh)
        q = qkv[:, :, 0].permute(0, 2, 1, 3)  # (1, H, L, Dh)
        k = qkv[:, :, 1].permute(0, 2, 3, 1)  # (1, H, Dh, L)
        v = qkv[:, :, 2].permute(0, 2, 1, 3)  # (1, H, L, Dh)
        scores = q @ k / math.sqrt(dh) + alibi
        att = (scores.softmax(-1) @ v).permute(0, 2, 1, 3).reshape(1, length, d)
        att = att @ w[f"{p}.attention.output.dense.weight"].T + w[f"{p}.attention.output.dense.bias"]
        x = ln(att + x, f"{p}.attention.output.LayerNorm")
        h = x @ w[f"{p}.mlp.gated_layers.weight"].T  # (1, L, 2I)
        inter = h.shape[-1] // 2
        h = F.gelu(h[..., :inter]) * h[..., inter:]
        h = h @ w[f"{p}.mlp.wo.weight"].T + w[f"{p}.mlp.wo.bias"]
        x = ln(h + x, f"{p}.mlp.layernorm")
    return x[0]


def reference_embeddings(state, token_lists, **kw):
    """VirNucPro's DNABERT-S embedding: mean of the last hidden state over all tokens, per sequence."""
    return np.stack([reference_hidden(state, ids, **kw).float().mean(0).cpu().numpy() for ids in token_lists])


def hf_token_ids(model_dir, seqs):
    """Token ids as the published tokenizer gives them (tokenizers library, specials added by the file)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    return [tok.encode(s.upper()).ids for s in seqs]
