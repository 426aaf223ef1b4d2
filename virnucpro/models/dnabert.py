"""DNABERT-S nucleotide embeddings: the MosaicBERT / DNABERT-2 architecture, native and packed.

The published model loads through `trust_remote_code`, which runs code from the model repository; this
module implements the same forward itself and reads the published snapshot directory directly:
`config.json` (Hugging Face field names), `tokenizer.json` (a BPE file for the `tokenizers` library)
and `model.safetensors` or `pytorch_model.bin` (a plain state dict, read without executing pickled code).

The forward runs over packed batches (all tokens of B sequences in one row, `cu_seqlens` (B + 1,) int32
marking where each starts) and reproduces the original one-sequence-at-a-time forward for every sequence:

- embeddings = word + token_type[0], then LayerNorm; no position embeddings;
- post-LayerNorm blocks: x = LN(x + Attn(x)); x = LN(x + MLP(x));
- attention: fused `Wqkv` (q, k, v in that order), scale head_dim^-0.5, ALiBi bias -slope_h * |i - j|
  with positions restarting in every sequence;
- MLP: gelu(h[:, :I]) * h[:, I:] with h = `gated_layers`(x) (no bias), then `wo`.

Sequences are upper-cased and tokenised as `[CLS] tokens [SEP]`, and each embedding is the mean of the
last hidden state over ALL tokens of the sequence, `[CLS]` and `[SEP]` included, as VirNucPro computes
it. On a GPU the matrix products run in bf16 while embeddings, LayerNorms, the gated GELU and the residual
stream stay float32; on the CPU all is float32.
"""

import json
import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from virnucpro.errors import VirNucProError, first_line
from virnucpro.io.checksums import checked_sha256
from virnucpro.models.attention import select_backend, varlen_attention
from virnucpro.models.namespaces import DNABERT_DTYPE, DNABERT_WEIGHT_FILES
from virnucpro.models.packing import segment_mean

log = logging.getLogger("virnucpro")

# dtype of the linear layers by device type (named in encoders, which the store namespaces also read)
DTYPE = {device: getattr(torch, name) for device, name in DNABERT_DTYPE.items()}
IGNORED_PREFIXES = ("pooler.", "cls.")  # heads the embedding does not use
IGNORED_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")  # index buffers some BERTs save
TOKENIZE_CHUNK = 16384  # sequences per `encode_batch` call


# ------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class DnabertConfig:
    """The architecture fields of a DNABERT-S / DNABERT-2 `config.json` (Hugging Face names); the file's
    other keys (dropout, `alibi_starting_size`, `auto_map`, ...) do not change the forward and are ignored."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    vocab_size: int = 4096
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")

    @property
    def head_dim(self):
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_json(cls, path):
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise VirNucProError(f"{path}: not a readable config.json ({exc})") from None
        if not isinstance(raw, dict):
            raise VirNucProError(f"{path}: not a model config (expected a JSON object)")
        missing = [k for k in cls.REQUIRED if k not in raw]
        if missing:
            raise VirNucProError(f"{path}: config lacks '{missing[0]}'")
        values = {}
        for field in fields(cls):
            value = raw.get(field.name, field.default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (
                field.type is int and value != int(value)
            ):
                raise VirNucProError(f"{path}: '{field.name}' must be a positive number, got {value!r}")
            values[field.name] = field.type(value)
        config = cls(**values)
        if config.hidden_size % config.num_attention_heads:
            raise VirNucProError(
                f"{path}: hidden_size {config.hidden_size} is not a multiple of "
                f"num_attention_heads {config.num_attention_heads}"
            )
        return config


def alibi_slopes(n_heads):
    """ALiBi head slopes as MosaicBERT / DNABERT-2 compute them (list of n_heads floats).

    For a power of two n: start = 2^(-8/n) and slopes start^1 .. start^n. Otherwise the slopes of the
    largest power of two p < n, then every other slope of 2p, up to n in all. For 12 heads:
    2^-1 .. 2^-8, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5.
    """

    def power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return power_of_2(n_heads)
    closest = 2 ** math.floor(math.log2(n_heads))
    return power_of_2(closest) + alibi_slopes(2 * closest)[0::2][: n_heads - closest]


# ------------------------------------------------------------------------------------ tokenising


class DnaTokenizer:
    """`tokenizer.json` through the `tokenizers` library: upper-cased sequence -> `[CLS] ids [SEP]`.

    The file's post-processor adds `[CLS]` and `[SEP]` as the published tokenizer does; a file without
    one gets them added here by id. Truncation and padding stored in the file are switched off, as the
    Hugging Face tokenizer call of the original does by default.
    """

    def __init__(self, path):
        from tokenizers import Tokenizer  # Rust tokenizer; only this step needs it

        self.path = Path(path)
        try:
            self.tokenizer = Tokenizer.from_file(str(self.path))
        except Exception as exc:  # the Rust side raises plain Exception for missing and malformed files
            reason = first_line(exc)
            raise VirNucProError(f"{self.path}: not a readable tokenizer.json ({reason})") from None
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.cls_id = self.tokenizer.token_to_id("[CLS]")
        self.sep_id = self.tokenizer.token_to_id("[SEP]")
        if self.cls_id is None or self.sep_id is None:
            raise VirNucProError(f"{self.path}: tokenizer has no [CLS] or no [SEP] token")
        self.post_processed = self.tokenizer.post_processor is not None
        probe = self(["ACGT"])[0]
        if probe[0] != self.cls_id or probe[-1] != self.sep_id or len(probe) < 3:
            raise VirNucProError(f"{self.path}: the tokenizer's post-processor does not give [CLS] ... [SEP]")

    @property
    def vocab_size(self):
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def __call__(self, seqs):
        """list[str] -> list of (n_i,) int32 token ids, [CLS] and [SEP] included."""
        out = []
        for i in range(0, len(seqs), TOKENIZE_CHUNK):
            chunk = [s.upper() for s in seqs[i : i + TOKENIZE_CHUNK]]
            for enc in self.tokenizer.encode_batch(chunk, add_special_tokens=self.post_processed):
                ids = np.asarray(enc.ids, dtype=np.int32)
                if not self.post_processed:
                    ids = np.concatenate([[self.cls_id], ids, [self.sep_id]]).astype(np.int32)
                out.append(ids)
        return out


# ------------------------------------------------------------------------------------ the model


class Block(nn.Module):
    """One post-LayerNorm encoder layer (parameter names: see CHECKPOINT_LAYER_NAMES).

    x (T, D) float32 in and out. Matrix products run in the linear weights' dtype; the residual adds,
    LayerNorms and the gated GELU run in float32, so only the matmul inputs and outputs are ever rounded
    to bf16.
    """

    def __init__(self, config):
        super().__init__()
        d, i = config.hidden_size, config.intermediate_size
        self.heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.Wqkv = nn.Linear(d, 3 * d)
        self.attn_out = nn.Linear(d, d)
        self.attn_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.gated_layers = nn.Linear(d, 2 * i, bias=False)
        self.wo = nn.Linear(i, d)
        self.mlp_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)

    def forward(self, x, cu_seqlens, max_seqlen, slopes, backend):
        """x (T, D) float32 -> (T, D) float32; the other arguments are those of `attention`."""
        heads = self.attention(x, cu_seqlens, max_seqlen, slopes, backend)
        return self.post_attention(x, heads)

    def attention(self, x, cu_seqlens, max_seqlen, slopes, backend):
        """x (T, D) -> the attention heads of every token, merged: (T, D) in the linear weights' dtype."""
        t, d = x.shape
        qkv = self.Wqkv(x.to(self.Wqkv.weight.dtype))  # (T, 3D)
        q, k, v = qkv.view(t, 3, self.heads, self.head_dim).unbind(1)  # (T, H, Dh) each
        a = varlen_attention(q, k, v, cu_seqlens, max_seqlen, scale=self.head_dim**-0.5,
                             alibi_slopes=slopes, backend=backend)  # (T, H, Dh)
        return a.reshape(t, d)

    def post_attention(self, x, heads):
        """The rest of the block: x (T, D) its input, heads (T, D) from `attention` -> (T, D) float32."""
        x = self.attn_norm(x + self.attn_out(heads).to(x.dtype))  # residual, post-LN
        return self.mlp_norm(x + self.mlp(x))  # residual, post-LN

    def mlp(self, x):
        """gelu(h[:, :I]) * h[:, I:] with h = gated_layers(x), then wo: (T, D) -> (T, D) in x's dtype.

        The GELU input is made contiguous: on a strided slice the CPU kernel splits rows between threads
        and computes the split rows' ends with a scalar erf, so a token's result would depend on its place
        in the batch; contiguous, every token gets the same bits whatever batch it is packed into.
        """
        g = self.gated_layers(x.to(self.gated_layers.weight.dtype))  # (T, 2I)
        i = self.wo.in_features
        gate = g[:, :i].to(x.dtype).contiguous()  # (T, I)
        h = F.gelu(gate) * g[:, i:].to(x.dtype)  # (T, I): erf GELU of the gate times the rest
        return self.wo(h.to(self.wo.weight.dtype)).to(x.dtype)


# checkpoint name -> parameter name here; layer entries sit under `encoder.layer.{n}.` / `layers.{n}.`
CHECKPOINT_NAMES = {
    "embeddings.word_embeddings": "word_embeddings",
    "embeddings.token_type_embeddings": "token_type_embeddings",
    "embeddings.LayerNorm": "embed_norm",
}
CHECKPOINT_LAYER_NAMES = {
    "attention.self.Wqkv": "Wqkv",
    "attention.output.dense": "attn_out",
    "attention.output.LayerNorm": "attn_norm",
    "mlp.gated_layers": "gated_layers",
    "mlp.wo": "wo",
    "mlp.layernorm": "mlp_norm",
}


class DnabertS(nn.Module):
    """DNABERT-S over packed batches (parameter names: CHECKPOINT_NAMES maps the published ones).

    `attention` is a backend of `virnucpro.models.attention` ("reference" on CPU), the model runs eager
    torch ops (compiling cost each job more than it saved: benchmarks/results/dnabert_throughput_h200.md).
    `to_inference(device, dtype)` puts the linear layers in `dtype` (bf16 on GPU) and keeps the
    embeddings, LayerNorms and residual stream in float32.
    """

    def __init__(self, config, attention="reference"):
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, d)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, d)
        self.embed_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.slopes = alibi_slopes(config.num_attention_heads)
        self._slopes_on = {}  # device -> (H,) float32, kept in float32 whatever the weights' dtype
        self.attention_backend = attention

    def to_inference(self, device, dtype):
        """Linear layers in `dtype` on `device`; embeddings and LayerNorms stay float32.

        bf16 rounding of the weights is the largest error of a bf16 forward; LayerNorm weights near 1
        (bf16 step 2^-7 there) and the token-type row, common to every token, would shift all tokens the
        same way, so they and the residual stream are kept in float32 at little cost.
        """
        self.to(device=device, dtype=torch.float32)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.to(dtype)
        return self.eval().requires_grad_(False)

    def alibi_slopes(self, device):
        if device not in self._slopes_on:
            self._slopes_on[device] = torch.tensor(self.slopes, dtype=torch.float32, device=device)
        return self._slopes_on[device]

    def forward(self, input_ids, cu_seqlens, max_seqlen):
        """input_ids (T,) int64, cu_seqlens (B + 1,) int32, on the model's device; max_seqlen int.

        Returns the last hidden state (T, D) float32.
        """
        x = self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0]  # (T, D) float32
        x = self.embed_norm(x)
        slopes = self.alibi_slopes(x.device)
        for block in self.layers:
            x = block(x, cu_seqlens, max_seqlen, slopes, self.attention_backend)
        return x

    @torch.inference_mode()
    def embed(self, batch):
        """Mean over all tokens of each sequence (B, D) float32, for a PackedBatch on the model's device."""
        hidden = self(batch.input_ids, batch.cu_seqlens, batch.max_seqlen)
        return segment_mean(hidden, batch.cu_seqlens, 0, 0, batch.num_tokens)


# ------------------------------------------------------------------------------------ loading


def find_weights(model_dir):
    for name in DNABERT_WEIGHT_FILES:
        path = Path(model_dir) / name
        if path.is_file():
            return path
    raise VirNucProError(f"{model_dir}: no model weights ({' or '.join(DNABERT_WEIGHT_FILES)})")


def read_state_dict(path):
    """{name: tensor} from a safetensors file or a plain pickled state dict (no code executed)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, BadZipFile, OSError, ..., safetensors' SafetensorError
        reason = first_line(exc)
        raise VirNucProError(f"{path}: not a loadable weights file ({reason})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VirNucProError(f"{path}: not a state dict of tensors")
    return state


def _model_name(key):
    """Parameter name here for a checkpoint key (prefix `bert.` already removed), or None."""
    module, _, leaf = key.rpartition(".")
    if module in CHECKPOINT_NAMES:
        return f"{CHECKPOINT_NAMES[module]}.{leaf}"
    parts = module.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["encoder", "layer"] and parts[2].isdigit():
        if parts[3] in CHECKPOINT_LAYER_NAMES:
            return f"layers.{parts[2]}.{CHECKPOINT_LAYER_NAMES[parts[3]]}.{leaf}"
    return None


def _checkpoint_name(name):
    """Checkpoint key for a parameter name here (inverse of `_model_name`)."""
    module, _, leaf = name.rpartition(".")
    for ckpt, here in CHECKPOINT_NAMES.items():
        if module == here:
            return f"{ckpt}.{leaf}"
    _, n, here = module.split(".", 2)
    ckpt = next(c for c, h in CHECKPOINT_LAYER_NAMES.items() if h == here)
    return f"encoder.layer.{n}.{ckpt}.{leaf}"


def load_state_dict(model, state, path):
    """Copy a DNABERT-S checkpoint into `model`, refusing any missing, unexpected or misshapen entry.

    Keys may carry a `bert.` prefix. Ignored: `pooler.*` and `cls.*` (heads the embedding does not use) and
    the integer index buffers some BERT checkpoints carry (`embeddings.position_ids`, `.token_type_ids`).
    """
    expected = model.state_dict()
    found = {}
    for key, value in state.items():
        bare = key.removeprefix("bert.")
        if bare.startswith(IGNORED_PREFIXES) or bare in IGNORED_KEYS:
            continue
        name = _model_name(bare)
        if name is None or name not in expected:
            raise VirNucProError(f"{path}: unexpected key '{key}' for this config")
        if name in found:
            raise VirNucProError(f"{path}: key '{key}' appears twice (with and without 'bert.')")
        if tuple(value.shape) != tuple(expected[name].shape):
            raise VirNucProError(
                f"{path}: key '{key}' has shape {tuple(value.shape)}, config.json implies "
                f"{tuple(expected[name].shape)}"
            )
        if not value.is_floating_point():
            raise VirNucProError(f"{path}: key '{key}' holds {value.dtype}, expected floating point")
        found[name] = value
    for name in expected:
        if name not in found:
            raise VirNucProError(f"{path}: missing key '{_checkpoint_name(name)}'")
    model.load_state_dict(found, strict=True)


def read_snapshot(model_dir):
    """(DnabertConfig, DnaTokenizer, weights path) of a snapshot directory, each file checked against its
    checksum record (`checksums.checked_sha256`)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise VirNucProError(f"{model_dir}: DNABERT-S model directory not found")
    for name in ("config.json", "tokenizer.json"):
        if (model_dir / name).is_file():
            checked_sha256(model_dir / name)
    config = DnabertConfig.from_json(model_dir / "config.json")
    tokenizer = DnaTokenizer(model_dir / "tokenizer.json")
    if tokenizer.vocab_size > config.vocab_size:
        raise VirNucProError(
            f"{model_dir}: tokenizer.json has {tokenizer.vocab_size} tokens but config.json "
            f"vocab_size is {config.vocab_size}"
        )
    path = find_weights(model_dir)
    checked_sha256(path)
    return config, tokenizer, path


def load_dnabert(model_dir, device="cpu", dtype=torch.float32, attention=None):
    """(DnabertS in eval mode on `device` in `dtype`, DnaTokenizer, weights path) from a snapshot dir.

    attention: a backend name, or None to choose by capability.
    """
    device = torch.device(device)
    config, tokenizer, path = read_snapshot(model_dir)
    if attention is None:
        attention = select_backend(device, dtype, alibi=True)
    with torch.device("meta"):
        model = DnabertS(config, attention=attention)
    model = model.to_empty(device="cpu")
    load_state_dict(model, read_state_dict(path), path)
    return model.to_inference(device, dtype), tokenizer, path
