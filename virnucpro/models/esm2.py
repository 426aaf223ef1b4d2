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
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from virnucpro.errors import VirNucProError
from virnucpro.io.checksums import checked_sha256
from virnucpro.io.torchfile import load_torch_file
from virnucpro.models.attention import select_backend, varlen_attention
from virnucpro.models.backend import compiled, fall_back
from virnucpro.models.encoders import ESM2_PRECISION, ESM2_TRUNCATION
from virnucpro.models.packing import segment_ids, segment_mean

log = logging.getLogger("virnucpro")

DEFAULT_TOKENS_PER_BATCH = {"cuda": 65536, "cpu": 4096}
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
                    attention_heads=cfg.encoder_attention_heads, alphabet=ALPHABET, token_dropout=cfg.token_dropout)
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

    from virnucpro.io.converted import save_safetensors

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


def load_converted(path, source_sha256, device, dtype=None, **options):
    """PackedESM2 from a converted file, its tensors read straight onto `device`.

    The file must match its verified checksum record (size and mtime, or its content) and name
    `source_sha256` as its source. dtype: the compute dtype (default: float16 on CUDA, float32 on CPU).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path, device = Path(path), torch.device(device)
    checked_sha256(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise VirNucProError(f"{path}: not a converted ESM-2 file (format {meta.get('format')!r})")
        if meta.get("source_sha256") != source_sha256:
            raise VirNucProError(
                f"{path}: converted from another checkpoint (sha256 {meta.get('source_sha256')}, "
                f"expected {source_sha256}); delete it and convert again"
            )
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise VirNucProError(f"{path}: unreadable converted ESM-2 file ({exc})") from None
    if dtype is None:
        dtype = getattr(torch, ESM2_PRECISION[device.type])  # the precision its store namespace names
    return PackedESM2(Esm2Config.from_metadata(meta), state, device, dtype, **options)


# ------------------------------------------------------------------------------------ tokenising


def tokenizer():
    """The ESM-2 tokeniser (fair-esm's ESM-1b alphabet, which every ESM-2 model uses)."""
    import esm

    return Esm2Tokenizer(esm.data.Alphabet.from_architecture(ALPHABET))


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
        """Tokens per sequence (specials included); a bad character is a one-line error naming the record."""
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


def _attention_output_and_mlp(x, a, out_w, out_b, ln_w, ln_b, eps, fc1_w, fc1_b, fc2_w, fc2_b, nw, nb, neps):
    """Residual attention output, the pre-LN erf-GELU MLP block, then the next layer norm.

    x (T, D) residual stream, a (T, H, Dh) attention output -> x (T, D) and LayerNorm(x) with the next
    block's parameters (the final `emb_layer_norm_after` after the last block), fused with the residual.
    """
    t, d = x.shape
    x = x + F.linear(a.reshape(t, d), out_w, out_b)
    h = F.layer_norm(x, (d,), ln_w, ln_b, eps)
    x = x + F.linear(F.gelu(F.linear(h, fc1_w, fc1_b)), fc2_w, fc2_b)
    return x, F.layer_norm(x, (d,), nw, nb, neps)


class PackedESM2:
    """ESM-2 weights run over packed batches.

    Built from an `Esm2Config` and our parameters (`packed_state`: q/k/v fused into one projection), cast
    to `dtype` on `device`; `from_fair_esm` builds one from a fair-esm `ESM2` module. The path is chosen
    here, once:

    - "triton" (default on CUDA GPUs of compute capability >= 8.0 when Triton is installed and the head
      size is 32, 64 or 128): each layer is four cuBLAS GEMMs and the kernels of `virnucpro.models.kernels`
      (rotary fused into attention, which reads q, k, v straight from the projection; residual add
      fused with LayerNorm; GELU in place). The residual stream and the last layer's representation
      are float32, GEMM inputs in `dtype` (benchmarks/results/esm2_accuracy_h200.txt). If a kernel fails
      to build, the model warns once and goes on with the torch path, uncompiled;
    - otherwise the attention backend of `virnucpro.models.attention` with the per-layer work around it in
      torch ops, through `torch.compile` when `compile` (default: on CUDA), dynamic in the token count
      only; if compiling fails the model warns once and runs eagerly.
    """

    def __init__(self, config, state, device, dtype, compile=None, kernels=None):
        self.config = config
        self.device, self.dtype = torch.device(device), dtype
        self.num_layers = config.num_layers
        self.embed_dim = config.embed_dim
        self.heads = config.attention_heads
        self.head_dim = config.head_dim
        self.mask_idx = config.mask_idx
        self.token_dropout = config.token_dropout

        def cast(name):
            return state[name].detach().to(device=self.device, dtype=dtype)

        def pair(name):
            return cast(f"{name}.weight"), cast(f"{name}.bias")

        eps, scaling = config.layer_norm_eps, self.head_dim**-0.5
        self.embed_weight = cast("embed_tokens.weight")
        self.layers = []
        for i in range(self.num_layers):
            at = f"layers.{i}."
            qkv_w, qkv_b = pair(f"{at}qkv")
            self.layers.append(
                dict(ln1=(*pair(f"{at}attn_norm"), eps), qkv_w=qkv_w, qkv_b=qkv_b, scaling=scaling,
                     out=pair(f"{at}attn_out"), ln2=(*pair(f"{at}mlp_norm"), eps), fc1=pair(f"{at}fc1"),
                     fc2=pair(f"{at}fc2"))
            )
        self.final_ln = (*pair("final_norm"), eps)
        self.inv_freq = state["rotary.inv_freq"].to(device=self.device, dtype=torch.float32)  # (Dh / 2,)

        if kernels is None:
            kernels = _kernels_run_on(self.device) and _kernels().supported(self.head_dim)
        self.kernels = bool(kernels)
        self._tables = None  # rotary cos/sin tables of the Triton path, made on first use
        self.residual_dtype = torch.float32  # of the Triton path (class docstring)
        self.attention_backend = "triton" if self.kernels else select_backend(self.device, dtype)
        if compile is None and self.kernels:
            compile = False
        if compile is None:
            compile = self.device.type == "cuda"
        heads = self.heads

        def pre(h, qkv_w, qkv_b, cos, sin, scaling):  # `heads` a constant, not a symbolic input
            return _attention_inputs(h, qkv_w, qkv_b, cos, sin, heads, scaling)

        self._eager = (pre, _attention_output_and_mlp)
        self._pre, self._post = self._eager
        if compile:
            # only the token dimension is dynamic (marked per call): widths, heads and head size stay
            # compile-time constants, which keeps the generated index arithmetic and reductions fast
            self._pre = compiled(pre)
            self._post = compiled(_attention_output_and_mlp)
        self.compiled = bool(compile)

    @classmethod
    def from_fair_esm(cls, model, device, dtype, **options):
        """From a fair-esm `ESM2` module (tests and benchmarks build them directly)."""
        config = Esm2Config.of(model)
        return cls(config, packed_state(config, model.state_dict(), torch.float32), device, dtype, **options)

    def _rotary_tables(self, cu_seqlens, total):
        """cos, sin (T, 1, Dh) float32 for positions that restart at 0 in every sequence."""
        seg = segment_ids(cu_seqlens, total)
        pos = torch.arange(total, device=cu_seqlens.device) - cu_seqlens.to(torch.int64)[seg]
        freqs = pos.to(torch.float32)[:, None] * self.inv_freq[None, :]  # (T, Dh / 2)
        emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]  # (T, 1, Dh)
        return emb.cos(), emb.sin(), seg

    def _embed(self, input_ids, cu_seqlens, seg):
        x = F.embedding(input_ids, self.embed_weight)  # (T, D)
        if self.token_dropout:
            is_mask = input_ids == self.mask_idx
            x = x.masked_fill(is_mask[:, None], 0.0)
            lens = (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.int64)
            n_mask = torch.segment_reduce(is_mask.to(torch.float32), "sum", lengths=lens)  # (B,)
            observed = (n_mask / lens).to(x.dtype)
            x = x * (1 - 0.15 * 0.8) / (1 - observed)[seg][:, None]
        return x

    def _first_layer_norm(self, x):
        w, b, eps = self.layers[0]["ln1"]
        return F.layer_norm(x, (self.embed_dim,), w.to(x.dtype), b.to(x.dtype), eps).to(self.dtype)

    def _rotary_lookup(self, max_seqlen):
        """The Triton path's cos/sin tables (positions x Dh / 2, float32), covering max_seqlen."""
        if self._tables is None or self._tables[0].shape[0] < max_seqlen:
            self._tables = _kernels().rotary_tables(self.inv_freq, max(ESM2_TRUNCATION + 2, int(max_seqlen)))
        return self._tables

    def _kernel_layer(self, i, x, h, cu_seqlens, max_seqlen):
        """Block i on the Triton path; x (the residual stream) is updated in place."""
        k = _kernels()
        p = self.layers[i]
        next_ln = self.layers[i + 1]["ln1"] if i + 1 < self.num_layers else self.final_ln
        cos, sin = self._rotary_lookup(max_seqlen)
        qkv = F.linear(h, p["qkv_w"], p["qkv_b"])
        a = k.rotary_attention(qkv, cu_seqlens, max_seqlen, self.heads, p["scaling"], cos, sin)
        del qkv
        h = k.add_layer_norm(x, F.linear(a.view(x.shape), *p["out"]), *p["ln2"], out_dtype=self.dtype)
        mlp = F.linear(k.gelu_(F.linear(h, *p["fc1"])), *p["fc2"])
        last = i + 1 == self.num_layers  # the final layer norm's output is the representation: float32
        return x, k.add_layer_norm(x, mlp, *next_ln, out_dtype=torch.float32 if last else self.dtype)

    def _layer(self, i, x, h, cos, sin, cu_seqlens, max_seqlen):
        """Block i: x the residual stream, h its layer norm; returns the new x and the next layer norm."""
        p = self.layers[i]
        next_ln = self.layers[i + 1]["ln1"] if i + 1 < self.num_layers else self.final_ln
        if self.compiled:
            for t in (x, h, cos, sin):
                torch._dynamo.mark_dynamic(t, 0)
        q, k, v = self._pre(h, p["qkv_w"], p["qkv_b"], cos, sin, p["scaling"])
        a = varlen_attention(q, k, v, cu_seqlens, max_seqlen, scale=1.0, backend=self.attention_backend)
        if self.compiled:
            torch._dynamo.mark_dynamic(a, 0)
        return self._post(x, a, *p["out"], *p["ln2"], *p["fc1"], *p["fc2"], *next_ln)

    @torch.inference_mode()
    def forward_packed(self, input_ids, cu_seqlens, max_seqlen, repr_layers):
        """input_ids (T,) int64, cu_seqlens (B + 1,) int32, both on the model's device; max_seqlen int.

        Returns {'representations': {layer: (T, D)}} for each requested layer (0 = embeddings; the last
        layer carries the final layer norm), as fair-esm's forward returns them per padded sequence.
        """
        repr_layers = set(repr_layers)
        if not repr_layers <= set(range(self.num_layers + 1)):
            raise ValueError(f"repr_layers must be within 0..{self.num_layers}")
        if not self.kernels:
            return self._forward(input_ids, cu_seqlens, max_seqlen, repr_layers)
        try:
            return self._forward(input_ids, cu_seqlens, max_seqlen, repr_layers)
        except Exception as exc:  # a kernel that does not build here: the torch path, from the start
            fall_back(exc, "the Triton kernels", "ESM-2")
            self.kernels, self.attention_backend = False, select_backend(self.device, self.dtype)
            return self._forward(input_ids, cu_seqlens, max_seqlen, repr_layers)

    def _forward(self, input_ids, cu_seqlens, max_seqlen, repr_layers):
        total = input_ids.shape[0]
        if self.kernels:
            seg = segment_ids(cu_seqlens, total)
        else:
            cos, sin, seg = self._rotary_tables(cu_seqlens, total)
        x = self._embed(input_ids, cu_seqlens, seg)
        last = max(repr_layers, default=0)
        if self.kernels:
            x = x.to(self.residual_dtype)
        reps = {0: x.clone() if last else x} if 0 in repr_layers else {}  # the Triton path updates x in place
        h = self._first_layer_norm(x) if last else None
        for i in range(last):
            if self.kernels:
                x, h = self._kernel_layer(i, x, h, cu_seqlens, max_seqlen)
            else:
                x, h = self._run_layer(i, x, h, cos, sin, cu_seqlens, max_seqlen)
            if i + 1 in repr_layers:  # the last layer with the final norm
                reps[i + 1] = h if i + 1 == self.num_layers else x.clone() if i + 1 < last else x
        return {"representations": reps}

    def _run_layer(self, *args):
        if not self.compiled:
            return self._layer(*args)
        try:
            return self._layer(*args)
        except Exception as exc:
            fall_back(exc, "torch.compile", "ESM-2")
            (self._pre, self._post), self.compiled = self._eager, False
            return self._layer(*args)

    def embed(self, batch):
        """Pooled residue means (S, D) float32 of a PackedBatch already on the device (S: every sequence,
        padding included)."""
        out = self.forward_packed(batch.input_ids, batch.cu_seqlens, batch.max_seqlen, [self.num_layers])
        return segment_mean(out["representations"][self.num_layers], batch.cu_seqlens, 1, 1, batch.kept(2))
