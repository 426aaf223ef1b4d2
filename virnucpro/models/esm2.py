"""ESM-2 protein embeddings over packed batches.

Weights come from a fair-esm checkpoint (`esm2_t36_3B_UR50D.pt`), read with `torch.load(weights_only=True)`
allowing only `argparse.Namespace`, and converted once (`convert_checkpoint`) into a safetensors file in
float16, the checkpoint's own dtype, in the layout `PackedESM2` runs (q, k and v fused into one
projection). Jobs load that file straight to the device (`load_converted`). `PackedESM2.forward_packed`
runs the weights over a packed batch (tokens of all sequences in one row, delimited by `cu_seqlens`) and
reproduces fair-esm's padded forward for every sequence:

- pre-LayerNorm blocks; q scaled by head_dim^-0.5, then rotary ("rotate halves", base 10000) with
  positions restarting at 0 for every sequence and cos/sin computed in float32;
- token dropout scaling: embeddings times 0.88 / (1 - fraction of <mask> tokens in the sequence);
- erf GELU; `emb_layer_norm_after` applied to the last layer's representation only.

Tokens are `<cls> residues[:1022] <eos>` as in fair-esm's extract (`truncation_seq_length=1022`), and an
embedding is the mean of the last layer over the residues only, `[cu_seqlens[i] + 1, cu_seqlens[i + 1] - 1)`.
On a GPU the matrix products run in float16 (the Triton path keeps the residual stream in float32); on the
CPU everything is float32.
"""

import argparse
import functools
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from virnucpro.errors import VirNucProError
from virnucpro.io.checksums import checked_sha256
from virnucpro.io.torchfile import load_torch_file
from virnucpro.models.attention import select_backend, varlen_attention
from virnucpro.models.generated import compiled, fall_back
from virnucpro.models.namespaces import ESM2_PRECISION, ESM2_TRUNCATION
from virnucpro.models import fp8
from virnucpro.models.fp8 import Fp8Linear, Quantized, check_dequantised, quantize_rows, quantize_weight
from virnucpro.models.packing import segment_ids, segment_mean

log = logging.getLogger("virnucpro")

FILE_DTYPE = torch.float16  # of the converted file: the published checkpoints' dtype
FORMAT = "virnucpro-esm2/1"
ALPHABET = "ESM-1b"  # fair-esm's alphabet for every ESM-2 model
_SAFE_GLOBALS = [argparse.Namespace]  # the only non-tensor class in fair-esm ESM-2 checkpoints
_PREFIXES = re.compile(r"^(encoder\.sentence_encoder\.|encoder\.)")  # as fair-esm's upgrade_state_dict
# fair-esm parameter (after the prefixes) -> ours; layer entries under `layers.{i}.`
LAYER_NAMES = {
    "self_attn_layer_norm": "attn_norm", "self_attn.out_proj": "attn_out", "final_layer_norm": "mlp_norm",
    "fc1": "fc1", "fc2": "fc2",
}
QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")  # fused, in this order, into `qkv`


@dataclass(frozen=True)
class Esm2Config:
    """The architecture of an ESM-2 model, as its fair-esm checkpoint describes it."""

    num_layers: int
    embed_dim: int
    attention_heads: int
    token_dropout: bool
    mask_idx: int
    layer_norm_eps: float

    @property
    def head_dim(self):
        return self.embed_dim // self.attention_heads

    @classmethod
    def of(cls, model):
        """The config of a fair-esm `ESM2` module."""
        return cls(model.num_layers, model.embed_dim, model.attention_heads, bool(model.token_dropout),
                   model.mask_idx, float(model.emb_layer_norm_after.eps))

    def metadata(self):
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_metadata(cls, meta):
        return cls(int(meta["num_layers"]), int(meta["embed_dim"]), int(meta["attention_heads"]),
                   meta["token_dropout"] == "True", int(meta["mask_idx"]), float(meta["layer_norm_eps"]))


# ----------------------------------------------------------------------------------------- loading


def resolve_checkpoint(model):
    """Path of a fair-esm checkpoint: a file, or a model name in `$TORCH_HOME/hub/checkpoints/`."""
    path = Path(model)
    if path.suffix == ".pt" or path.parent != Path(".") or path.exists():
        if not path.is_file():
            raise VirNucProError(f"{path}: model file not found")
        return path
    hub = Path(torch.hub.get_dir()) / "checkpoints" / f"{model}.pt"
    if not hub.is_file():
        raise VirNucProError(
            f"model '{model}' is neither a file nor in the torch hub cache ({hub}); "
            "download it with the workflow's `models` rule or pass the checkpoint path"
        )
    return hub


def _safe_torch_load(path):
    return load_torch_file(path, _SAFE_GLOBALS, "loadable fair-esm checkpoint")


def read_checkpoint(path):
    """(Esm2Config, fair-esm state dict with fair-esm's names) of a checkpoint, checked against fair-esm's
    ESM2 architecture: every parameter present with its shape (the contact head aside), nothing else."""
    from esm.model.esm2 import ESM2

    data = _safe_torch_load(path)
    cfg = data.get("cfg", {}).get("model") if isinstance(data, dict) and isinstance(data.get("cfg"), dict) else None
    fields = ("encoder_layers", "encoder_embed_dim", "encoder_attention_heads", "token_dropout")
    if not isinstance(data.get("model") if isinstance(data, dict) else None, dict) or not all(
        hasattr(cfg, f) for f in fields
    ):
        raise VirNucProError(f"{path}: not a fair-esm ESM-2 checkpoint (expected 'model' and an ESM-2 'cfg')")
    state = {_PREFIXES.sub("", k): v for k, v in data["model"].items()}
    with torch.device("meta"):
        arch = ESM2(num_layers=cfg.encoder_layers, embed_dim=cfg.encoder_embed_dim,
                    attention_heads=cfg.encoder_attention_heads, alphabet=alphabet(), token_dropout=cfg.token_dropout)
    expected = {k: tuple(v.shape) for k, v in arch.state_dict().items() if not k.startswith("contact_head.")}
    for key, shape in expected.items():
        if key not in state and not key.endswith("rot_emb.inv_freq"):
            raise VirNucProError(f"{path}: checkpoint does not match fair-esm's ESM-2 (missing '{key}')")
        if key in state and tuple(state[key].shape) != shape:
            raise VirNucProError(
                f"{path}: checkpoint does not match fair-esm's ESM-2 ('{key}' has shape "
                f"{tuple(state[key].shape)}, the config implies {shape})"
            )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise VirNucProError(f"{path}: checkpoint does not match fair-esm's ESM-2 (unexpected '{unexpected[0]}')")
    return Esm2Config.of(arch), state


def rotary_inv_freq(config, state):
    """The rotary frequencies (head_dim / 2,) float32 that fair-esm runs with this state dict: the
    checkpoint's own `rot_emb.inv_freq` buffer when it holds one (the published checkpoints hold it in
    float16, rounded, and fair-esm uses it so: it is not recomputed), else fair-esm's formula
    1 / 10000^(2i / head_dim). Every layer must hold the same table."""
    tables = [state[k] for k in sorted(state) if k.endswith("rot_emb.inv_freq")]
    if not tables:
        d = config.head_dim
        return 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    if any(not torch.equal(t, tables[0]) for t in tables):
        raise VirNucProError("the layers' rotary frequency tables differ; the packed path needs one table")
    return tables[0].float()


def packed_state(config, state, dtype):
    """Our parameters (PackedESM2's names, `dtype`) from a fair-esm state dict (fair-esm's names)."""
    ours = {"embed_tokens.weight": state["embed_tokens.weight"].to(dtype)}
    for i in range(config.num_layers):
        at = f"layers.{i}."
        for kind in ("weight", "bias"):
            ours[f"{at}qkv.{kind}"] = torch.cat([state[f"{at}{q}.{kind}"].to(dtype) for q in QKV])
            for theirs, name in LAYER_NAMES.items():
                ours[f"{at}{name}.{kind}"] = state[f"{at}{theirs}.{kind}"].to(dtype)
    for kind in ("weight", "bias"):
        ours[f"final_norm.{kind}"] = state[f"emb_layer_norm_after.{kind}"].to(dtype)
    ours["rotary.inv_freq"] = rotary_inv_freq(config, state)
    return {k: v.contiguous() for k, v in ours.items()}


def convert_checkpoint(source, out, source_sha256):
    """Convert a fair-esm checkpoint into our float16 safetensors file at `out`, checked against the source.

    Every weight in the written file must equal the checkpoint's own, rounded to float16 (exact for the
    published float16 checkpoints) and finite; q, k and v are checked block by block inside the fused
    projection, and the rotary table against each layer's `rot_emb.inv_freq` when the checkpoint has one.
    """
    from safetensors.torch import safe_open

    from virnucpro.io.tensors import save_safetensors

    config, state = read_checkpoint(source)
    try:
        ours = packed_state(config, state, FILE_DTYPE)
    except VirNucProError as exc:
        raise VirNucProError(f"{source}: {exc}") from None
    bad = next((k for k, v in ours.items() if not torch.isfinite(v).all()), None)
    if bad:
        raise VirNucProError(f"{source}: '{bad}' does not fit in float16 (values beyond +-65504 or not finite)")
    meta = {"format": FORMAT, "alphabet": ALPHABET, "dtype": "float16", "source": Path(source).name,
            "source_sha256": source_sha256, **config.metadata()}
    save_safetensors(ours, out, meta)
    del ours
    with safe_open(str(out), framework="pt") as f:
        for key, value in state.items():
            if key.startswith(("lm_head.", "contact_head.")):
                continue
            want = value.float() if key.endswith("rot_emb.inv_freq") else value.to(FILE_DTYPE)
            if not torch.equal(_converted_part(f, config, key), want):
                raise VirNucProError(f"{out}: the converted '{key}' differs from {source}")
    log.info("converted %s (%d layers, dim %d) to float16 -> %s", source, config.num_layers, config.embed_dim, out)


def _converted_part(f, config, key):
    """The part of the converted file `f` (safe_open) that holds fair-esm's parameter `key`."""
    if key == "embed_tokens.weight":
        return f.get_tensor(key)
    if key.startswith("emb_layer_norm_after."):
        return f.get_tensor(key.replace("emb_layer_norm_after.", "final_norm."))
    if key.endswith("rot_emb.inv_freq"):
        return f.get_tensor("rotary.inv_freq")
    layer, rest = re.match(r"(layers\.\d+\.)(.+)", key).groups()
    module, kind = rest.rsplit(".", 1)
    if module in QKV:
        d = config.embed_dim
        block = QKV.index(module)
        return f.get_tensor(f"{layer}qkv.{kind}")[block * d : (block + 1) * d]
    return f.get_tensor(f"{layer}{LAYER_NAMES[module]}.{kind}")


FLOAT8_FORMAT = "virnucpro-esm2-float8/1"
FLOAT8_MAX_EXCESS = 0.0  # check_dequantised: no element beyond e4m3's rounding bound


def float8_state(config, state):
    """The float8 model's parameters from our float16 ones (`packed_state`): per layer, q and k in e4m3
    (`qk.weight`, one float32 `qk.scale` per output channel, `qk.bias`), v in float16 (`v.*`), fc1 and
    fc2 in e4m3 with their scales; everything else as it is."""
    d = config.embed_dim
    ours = {}
    for key, value in state.items():
        layer, _, rest = key.rpartition("qkv.")
        if rest in ("weight", "bias"):
            ours[f"{layer}qk.{rest}"], ours[f"{layer}v.{rest}"] = value[: 2 * d], value[2 * d :]
        else:
            ours[key] = value
    for i in range(config.num_layers):
        for name in ("qk", "fc1", "fc2"):
            at = f"layers.{i}.{name}."
            ours[f"{at}weight"], ours[f"{at}scale"] = quantize_weight(ours[f"{at}weight"])
    return {k: v.contiguous() for k, v in ours.items()}


def convert_float8(converted, out, source_sha256):
    """Make the float8 file at `out` from our float16 file `converted` (of the checkpoint `source_sha256`),
    checked: every e4m3 weight, dequantised, within e4m3's rounding bound of its float16 weight."""
    from safetensors.torch import load_file

    from virnucpro.io.tensors import save_safetensors

    config, meta = _converted_meta(converted, source_sha256, FORMAT)
    state = load_file(str(converted))
    ours = float8_state(config, state)
    for key, value in ours.items():
        if key.endswith(".scale"):
            w = state[key.replace(".qk.scale", ".qkv.weight")][: 2 * config.embed_dim] if ".qk." in key \
                else state[key.replace(".scale", ".weight")]
            excess = check_dequantised(w, ours[key.replace(".scale", ".weight")], value)
            if excess > FLOAT8_MAX_EXCESS:
                raise VirNucProError(f"{out}: '{key[:-6]}' does not round-trip through e4m3 within its bound "
                                     f"(by {excess:.3g})")
    save_safetensors(ours, out, {**meta, "format": FLOAT8_FORMAT, "dtype": "float8_e4m3fn",
                                 "float8_linears": "q,k,fc1,fc2"})
    log.info("quantised %s to e4m3 (q, k, fc1, fc2; one scale per output channel) -> %s", converted, out)


def _converted_meta(path, source_sha256, fmt):
    """(Esm2Config, metadata) of a converted file of format `fmt` made from the checkpoint `source_sha256`."""
    from safetensors.torch import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != fmt:
        raise VirNucProError(f"{path}: not a converted ESM-2 file of format {fmt} (format {meta.get('format')!r})")
    if meta.get("source_sha256") != source_sha256:
        raise VirNucProError(
            f"{path}: converted from another checkpoint (sha256 {meta.get('source_sha256')}, "
            f"expected {source_sha256}); delete it and convert again"
        )
    return Esm2Config.from_metadata(meta), meta


def load_converted(path, source_sha256, device, dtype=None, **options):
    """PackedESM2 from a converted file (float16, or float8 from `convert_float8`), its tensors read
    straight onto `device` (`virnucpro.io.tensors.load_safetensors`).

    The file must match its verified checksum record (size and mtime, or its content) and name
    `source_sha256` as its source. dtype: the compute dtype (default: float16 on CUDA, float32 on CPU). A
    float8 file needs e4m3 matrix units on CUDA (`fp8.supported`) or runs emulated on the CPU.
    """
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    from virnucpro.io.tensors import load_safetensors

    path, device = Path(path), torch.device(device)
    checked_sha256(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            fmt = (f.metadata() or {}).get("format")
        config, _ = _converted_meta(path, source_sha256, FLOAT8_FORMAT if fmt == FLOAT8_FORMAT else FORMAT)
        state = load_safetensors(path, device)
    except (SafetensorError, OSError) as exc:
        raise VirNucProError(f"{path}: unreadable converted ESM-2 file ({exc})") from None
    if dtype is None:
        dtype = getattr(torch, ESM2_PRECISION[device.type])  # the precision its store namespace names
    return PackedESM2(config, state, device, dtype, float8=fmt == FLOAT8_FORMAT, **options)


# ------------------------------------------------------------------------------------ tokenising


@functools.cache
def alphabet():
    """fair-esm's ESM-1b alphabet, which every ESM-2 model uses: the one the checkpoints are read and the
    proteins tokenised with."""
    import esm

    return esm.data.Alphabet.from_architecture(ALPHABET)


def tokenizer():
    """The ESM-2 tokeniser over `alphabet()`."""
    return Esm2Tokenizer(alphabet())


class Esm2Tokenizer:
    """fair-esm's ESM-2 tokenisation, vectorised: `<cls>` + residues[:truncation] + `<eos>`.

    Residues map through the alphabet's one-character tokens; whitespace is dropped and the
    `<...>` special tokens are honoured exactly as fair-esm's `Alphabet.encode` does (such sequences go
    through fair-esm's own encoder). Any other character is an error, as it is in fair-esm.
    """

    def __init__(self, alphabet, truncation=ESM2_TRUNCATION):
        self.alphabet = alphabet
        self.truncation = truncation
        self.cls, self.eos = alphabet.cls_idx, alphabet.eos_idx
        self.lut = np.full(256, -1, dtype=np.int64)  # -1: not a one-character token
        for tok, idx in alphabet.tok_to_idx.items():
            if len(tok) == 1:
                self.lut[ord(tok)] = idx

    def residues(self, seq):
        """Token ids of one sequence's residues, before truncation; raises ValueError on a bad character."""
        if seq.isascii():
            codes = self.lut[np.frombuffer(seq.encode("ascii"), dtype=np.uint8)]
            if (codes >= 0).all():
                return codes
        try:
            return np.asarray(self.alphabet.encode(seq), dtype=np.int64)  # whitespace, <mask>, ...
        except KeyError as exc:
            raise ValueError(f"character {exc.args[0]!r} is not in the ESM-2 alphabet") from None

    def __call__(self, seqs):
        """list[str] -> list of (min(n, truncation) + 2,) int64 token arrays."""
        out = []
        for seq in seqs:
            res = self.residues(seq)[: self.truncation]
            tokens = np.empty(len(res) + 2, dtype=np.int64)
            tokens[0], tokens[1:-1], tokens[-1] = self.cls, res, self.eos
            out.append(tokens)
        return out

    def lengths(self, ids, seqs):
        """Tokens per sequence (specials included); a bad character is a one-line error naming the record.
        Sequences of one-character tokens only are counted at once; otherwise one by one."""
        joined = "".join(seqs)
        if joined.isascii() and (self.lut[np.frombuffer(joined.encode("ascii"), dtype=np.uint8)] >= 0).all():
            counts = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
            return np.minimum(counts, self.truncation) + 2
        n = np.empty(len(seqs), dtype=np.int64)
        for i, (rid, seq) in enumerate(zip(ids, seqs)):
            try:
                n[i] = min(len(self.residues(seq)), self.truncation) + 2
            except ValueError as exc:
                raise VirNucProError(f"protein '{rid}': {exc}") from None
        return n


# ------------------------------------------------------------------------------------ the model


def _kernels_run_on(device):
    """The Triton path needs CUDA, Triton, and bf16 matrix units (compute capability >= 8.0)."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 0):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _kernels():
    from virnucpro.models import kernels

    return kernels


def _rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _attention_inputs(h, qkv_w, qkv_b, cos, sin, heads, scaling):
    """Fused q/k/v projection of the normed input, q scaling, rotary. h (T, D) -> q, k, v (T, H, Dh)."""
    t, d = h.shape
    q, k, v = F.linear(h, qkv_w, qkv_b).view(t, 3, heads, d // heads).unbind(1)  # views of (T, 3, H, Dh)
    q = q * scaling
    q = (q.float() * cos + _rotate_half(q.float()) * sin).to(h.dtype)
    k = (k.float() * cos + _rotate_half(k.float()) * sin).to(h.dtype)
    return q, k, v


def _add_layer_norm(x, delta, weight, bias, eps):
    """The residual add and the LayerNorm of its result: (x + delta, LayerNorm(x + delta))."""
    x = x + delta
    return x, F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


@dataclass
class PackedPass:
    """What the blocks of one forward pass share: the packed layout, the backend's rotary tables, and the
    norm whose output is the last layer's representation."""

    cu_seqlens: torch.Tensor
    max_seqlen: int
    rotary: tuple
    final_norm: nn.LayerNorm


class TorchBackend:
    """Torch ops around the attention of `virnucpro.models.attention` (`name`: its backend). When
    `compiled`, the rotary projection and the residual add + LayerNorm run through `torch.compile`, only
    the token dimension dynamic: widths, heads and head size stay compile-time constants."""

    what = "torch.compile"  # the generated code a build failure comes from

    def __init__(self, attention, heads, compile=False, float8=False):
        self.name, self.compiled, self.float8 = attention, bool(compile), float8

        def project(h, qkv_w, qkv_b, cos, sin, scaling):  # `heads` a constant, not a symbolic input
            return _attention_inputs(h, qkv_w, qkv_b, cos, sin, heads, scaling)

        self._project = compiled(project) if compile else project
        self._add_norm = compiled(_add_layer_norm) if compile else _add_layer_norm

    def _dynamic(self, *tensors):
        if self.compiled:
            for t in tensors:
                torch._dynamo.mark_dynamic(t, 0)

    def residual(self, x):
        return x

    def rotary(self, inv_freq, cu_seqlens, max_seqlen, seg):
        """cos, sin (T, 1, Dh) float32 for positions that restart at 0 in every sequence."""
        pos = torch.arange(seg.shape[0], device=cu_seqlens.device) - cu_seqlens.to(torch.int64)[seg]
        freqs = pos.to(torch.float32)[:, None] * inv_freq[None, :]  # (T, Dh / 2)
        emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]  # (T, 1, Dh)
        return emb.cos(), emb.sin()

    def attention(self, block, h, run):
        cos, sin = run.rotary
        if self.float8:
            return self._float8_attention(block, h, run)
        self._dynamic(h, cos, sin)
        q, k, v = self._project(h, block.qkv.weight, block.qkv.bias, cos, sin, block.scaling)
        return varlen_attention(q, k, v, run.cu_seqlens, run.max_seqlen, scale=1.0, backend=self.name)

    def _float8_attention(self, block, h, run):
        """q and k from the e4m3 projection, v from the float16 one; rotary and attention as above."""
        cos, sin = run.rotary
        t, d = h.plain.shape
        q, k = block.qk(h).to(h.plain.dtype).view(t, 2, block.heads, d // block.heads).unbind(1)
        v = block.v(h.plain).view(t, block.heads, d // block.heads)
        q = q * block.scaling
        q = (q.float() * cos + _rotate_half(q.float()) * sin).to(v.dtype)
        k = (k.float() * cos + _rotate_half(k.float()) * sin).to(v.dtype)
        return varlen_attention(q, k, v, run.cu_seqlens, run.max_seqlen, scale=1.0, backend=self.name)

    def add_norm(self, x, delta, norm, run, plain=True):
        """(x + delta, its LayerNorm); in a float8 model the norm also in e4m3 (`quantize`)."""
        self._dynamic(x, delta)
        x, h = self._add_norm(x, delta.to(x.dtype), norm.weight, norm.bias, norm.eps)
        return x, self.quantize(h, norm, run)

    def quantize(self, h, norm, run):
        """A norm's output as the next linears read it: e4m3 (keeping h) in a float8 model, but for the
        final norm, whose output is the representation."""
        return quantize_rows(h, keep=h.dtype) if self.float8 and norm is not run.final_norm else h

    def gelu(self, x):
        return quantize_rows(F.gelu(x.float())) if self.float8 else F.gelu(x)


class TritonBackend:
    """The kernels of `virnucpro.models.kernels`: rotary fused into attention (reading q, k, v straight
    from the projection), the residual add fused with LayerNorm and done in place, GELU in place. The
    residual stream is `residual_dtype` (float32) and so is the last layer's representation; GEMM inputs
    are in the model's dtype. `blocks` overrides the attention kernel's block shapes."""

    name, compiled, what = "triton", False, "the Triton kernels"

    def __init__(self, dtype, residual_dtype=torch.float32, blocks=None, float8=False):
        self.dtype, self.residual_dtype, self.blocks, self.float8 = dtype, residual_dtype, blocks, float8
        self._tables = None  # rotary cos/sin tables, made on first use

    def residual(self, x):
        return x.to(self.residual_dtype)

    def rotary(self, inv_freq, cu_seqlens, max_seqlen, seg):
        """cos/sin tables (positions x Dh / 2, float32) covering max_seqlen."""
        if self._tables is None or self._tables[0].shape[0] < max_seqlen:
            self._tables = _kernels().rotary_tables(inv_freq, max(ESM2_TRUNCATION + 2, int(max_seqlen)))
        return self._tables

    def attention(self, block, h, run):
        cos, sin = run.rotary
        if self.float8:  # q and k from the e4m3 projection, v from the float16 one
            return _kernels().split_rotary_attention(block.qk(h), block.v(h.plain), run.cu_seqlens,
                                                     run.max_seqlen, block.heads, block.scaling, cos, sin,
                                                     blocks=self.blocks)
        return _kernels().rotary_attention(block.qkv(h), run.cu_seqlens, run.max_seqlen, block.heads,
                                           block.scaling, cos, sin, blocks=self.blocks)

    def add_norm(self, x, delta, norm, run, plain=True):
        """x += delta in place; LayerNorm(x) in the model's dtype (float32 for the representation), in a
        float8 model also in e4m3 (a `Quantized`, holding the 16-bit output too where `plain`), but for
        the representation."""
        final = norm is run.final_norm
        out_dtype = torch.float32 if final else self.dtype
        if not self.float8 or final:
            return x, _kernels().add_layer_norm(x, delta, norm.weight, norm.bias, norm.eps, out_dtype=out_dtype)
        h, h8, scale = _kernels().add_layer_norm(x, delta, norm.weight, norm.bias, norm.eps, out_dtype=out_dtype,
                                                 quantize=True, plain=plain)
        return x, Quantized(h8, scale, h)

    def quantize(self, h, norm, run):
        return quantize_rows(h, keep=h.dtype) if self.float8 and norm is not run.final_norm else h

    def gelu(self, x):
        return Quantized(*_kernels().gelu_quantize(x)) if self.float8 else _kernels().gelu_(x)


class Block(nn.Module):
    """One pre-LayerNorm transformer block: rotary self-attention within each packed sequence, then the
    erf-GELU MLP, each added to the residual stream."""

    def __init__(self, config, float8=None):
        """float8: None, or the output dtype of the e4m3 linears of a float8 block (`float8_state`: q and
        k fused as `qk`, v apart, fc1 and fc2 in e4m3)."""
        super().__init__()
        d = config.embed_dim
        self.heads, self.scaling = config.attention_heads, config.head_dim**-0.5
        self.attn_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        if float8 is None:
            self.qkv = nn.Linear(d, 3 * d)  # q, k, v in that order
        else:
            self.qk, self.v = _fp8_linear(d, 2 * d, float8), nn.Linear(d, d)
        self.attn_out = nn.Linear(d, d)
        self.mlp_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        linear = nn.Linear if float8 is None else functools.partial(_fp8_linear, out_dtype=float8)
        self.fc1 = linear(d, 4 * d)
        self.fc2 = linear(4 * d, d)

    def forward(self, x, h, next_norm, backend, run):
        """x (T, D) the residual stream, h its `attn_norm`; returns the new stream and `next_norm` of it
        (the next block's `attn_norm`, or the final norm), each add fused with the norm after it."""
        a = backend.attention(self, h, run)  # (T, H, Dh)
        # only fc1 reads h: no 16-bit copy of it beside the e4m3 one
        x, h = backend.add_norm(x, self.attn_out(a.flatten(1)), self.mlp_norm, run, plain=False)
        x, h = backend.add_norm(x, self.fc2(backend.gelu(self.fc1(h))), next_norm, run)
        return x, h


def _fp8_linear(k, n, out_dtype):
    """An e4m3 linear (K -> N) of empty parameters, for `load_state_dict(assign=True)`."""
    return Fp8Linear(torch.empty(n, k, dtype=torch.float8_e4m3fn), torch.empty(n), torch.empty(n), out_dtype)


FP8_OUT_DTYPE = {"cuda": torch.float16}  # of torch._scaled_mm with row-wise scales; elsewhere the model's


def _cast(key, value, device, dtype, fp8_out):
    """A parameter on `device`: e4m3 weights and their float32 scales as they are, the biases of e4m3
    linears in their output dtype `fp8_out`, everything else in the compute dtype."""
    if value.dtype == torch.float8_e4m3fn or key.endswith(".scale"):
        return value.to(device)
    linear = key.rsplit(".", 2)[-2] if key.count(".") >= 2 else ""
    fp8_bias = fp8_out is not None and key.endswith(".bias") and linear in fp8.FP8_LINEARS
    return value.detach().to(device=device, dtype=fp8_out if fp8_bias else dtype)


class PackedESM2(nn.Module):
    """ESM-2 run over packed batches.

    Built from an `Esm2Config` and our parameters (`packed_state`: q/k/v fused into one projection), cast
    to `dtype` on `device`. The backend is
    chosen here, once:

    - `TritonBackend` when `kernels` (default: on CUDA GPUs of compute capability >= 8.0 with Triton
      installed and a head size of 32, 64 or 128); `residual_dtype` and `blocks` are its options;
    - otherwise `TorchBackend` with the attention backend `select_backend` picks, through
      `torch.compile` when `compile` (default: on CUDA).

    If the backend's generated code fails to build (`backend.fall_back`), the model warns once and runs
    the whole batch again on eager torch ops, from then on; any other error propagates. `backend` is the
    current backend, `produced_by` the one that produced the last result.
    """

    def __init__(self, config, state, device, dtype, compile=None, kernels=None, residual_dtype=torch.float32,
                 blocks=None, float8=False):
        super().__init__()
        self.config, self.device, self.dtype, self.float8 = config, torch.device(device), dtype, bool(float8)
        self.num_layers, self.embed_dim = config.num_layers, config.embed_dim
        if self.float8 and self.device.type == "cuda" and not fp8.supported(self.device):
            raise VirNucProError(f"embed.precision float8 needs e4m3 matrix units (compute capability "
                                 f"{'.'.join(map(str, fp8.MIN_CAPABILITY))} or newer); "
                                 f"{torch.cuda.get_device_name(self.device)} has none: use float16")
        fp8_out = FP8_OUT_DTYPE.get(self.device.type, dtype) if self.float8 else None
        with torch.device("meta"):
            self.embed_tokens = nn.Embedding(state["embed_tokens.weight"].shape[0], config.embed_dim)
            self.layers = nn.ModuleList(Block(config, fp8_out) for _ in range(config.num_layers))
            self.final_norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        weights = {k: _cast(k, v, self.device, dtype, fp8_out) for k, v in state.items() if k != "rotary.inv_freq"}
        self.load_state_dict(weights, assign=True)
        self.requires_grad_(False)
        self.register_buffer("inv_freq", state["rotary.inv_freq"].to(device=self.device, dtype=torch.float32),
                             persistent=False)  # (Dh / 2,)
        if kernels is None:
            kernels = _kernels_run_on(self.device) and _kernels().supported(config.head_dim)
        if compile is None:
            compile = self.device.type == "cuda" and not self.float8
        if kernels:
            self.backend = TritonBackend(dtype, residual_dtype, blocks, self.float8)
        else:
            self.backend = TorchBackend(select_backend(self.device, dtype), config.attention_heads, compile,
                                        self.float8)
        self.produced_by = None

    @property
    def attention_backend(self):
        return self.backend.name

    @property
    def compiled(self):
        return self.backend.compiled

    def _fallback(self):
        """The backend to go on with when the current one fails to build; None for eager torch ops."""
        heads = self.config.attention_heads
        if isinstance(self.backend, TritonBackend):
            return TorchBackend(select_backend(self.device, self.dtype), heads, float8=self.float8)
        return TorchBackend(self.backend.name, heads, float8=self.float8) if self.backend.compiled else None

    @torch.inference_mode()
    def forward_packed(self, input_ids, cu_seqlens, max_seqlen):
        """input_ids (T,) int64, cu_seqlens (B + 1,) int32, both on the model's device; max_seqlen int.

        Returns the last layer's representation (T, D), the final layer norm applied, as fair-esm's
        forward returns it per padded sequence.
        """
        try:
            out = self(input_ids, cu_seqlens, max_seqlen)
        except Exception as exc:
            fallback = self._fallback()
            if fallback is None:
                raise
            fall_back(exc, self.backend.what, "ESM-2")  # raises anything but a build failure
            self.backend = fallback
            out = self(input_ids, cu_seqlens, max_seqlen)  # the whole batch again
        self.produced_by = self.backend
        return out

    def forward(self, input_ids, cu_seqlens, max_seqlen):
        backend, total = self.backend, input_ids.shape[0]
        seg = segment_ids(cu_seqlens, total)
        run = PackedPass(cu_seqlens, max_seqlen, backend.rotary(self.inv_freq, cu_seqlens, max_seqlen, seg),
                         self.final_norm)
        x = backend.residual(self._embed(input_ids, cu_seqlens, seg))  # (T, D), updated in place on Triton
        h = backend.quantize(self._first_layer_norm(x), self.layers[0].attn_norm, run)
        norms = [block.attn_norm for block in self.layers[1:]] + [self.final_norm]
        for block, next_norm in zip(self.layers, norms):
            x, h = block(x, h, next_norm, backend, run)
        return h  # the final norm of the last layer's output

    def _embed(self, input_ids, cu_seqlens, seg):
        """Token embeddings (T, D), scaled for token dropout as fair-esm does."""
        x = self.embed_tokens(input_ids)
        if self.config.token_dropout:
            is_mask = input_ids == self.config.mask_idx
            x = x.masked_fill(is_mask[:, None], 0.0)
            lens = (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.int64)
            n_mask = torch.segment_reduce(is_mask.to(torch.float32), "sum", lengths=lens)  # (B,)
            observed = (n_mask / lens).to(x.dtype)
            x = x * (1 - 0.15 * 0.8) / (1 - observed)[seg][:, None]
        return x

    def _first_layer_norm(self, x):
        norm = self.layers[0].attn_norm
        w, b = norm.weight.to(x.dtype), norm.bias.to(x.dtype)
        return F.layer_norm(x, (self.embed_dim,), w, b, norm.eps).to(self.dtype)

    def embed(self, batch):
        """Pooled residue means (S, D) float32 of a PackedBatch already on the device (S: every sequence,
        padding included)."""
        out = self.forward_packed(batch.input_ids, batch.cu_seqlens, batch.max_seqlen)
        return segment_mean(out, batch.cu_seqlens, 1, 1, batch.kept(2))
