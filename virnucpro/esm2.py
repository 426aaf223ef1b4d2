"""ESM-2 protein embeddings over packed batches.

The weights come from a fair-esm checkpoint loaded by fair-esm's own `load_model_and_alphabet_core`
(the files are read with `torch.load(weights_only=True)`, allowing only `argparse.Namespace`).
`PackedESM2.forward_packed` runs those weights over a packed batch (tokens of all sequences in one row,
delimited by `cu_seqlens`) and reproduces fair-esm's padded forward for every sequence:

- pre-LayerNorm blocks; q scaled by head_dim^-0.5, then rotary ("rotate halves", base 10000) with
  positions restarting at 0 for every sequence and cos/sin computed in float32;
- token dropout scaling: embeddings times 0.88 / (1 - fraction of <mask> tokens in the sequence);
- erf GELU; `emb_layer_norm_after` applied to the last layer's representation only.

`embed_protein` is the `virnucpro embed-protein` step: tokens are `<cls> residues[:1022] <eos>` as in
fair-esm's extract (`truncation_seq_length=1022`), and each embedding is the mean of the last layer over
the residues only, `[cu_seqlens[i] + 1, cu_seqlens[i + 1] - 1)`.
"""

import argparse
import logging
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from virnucpro.attention import select_backend, varlen_attention
from virnucpro.checksums import verify_recorded
from virnucpro.errors import VirNucProError
from virnucpro.packing import segment_ids, segment_mean
from virnucpro.runner import compiled, fall_back

log = logging.getLogger("virnucpro")

TRUNCATION = 1022  # residues kept per protein, as fair-esm's extract (truncation_seq_length=1022)
DEFAULT_TOKENS_PER_BATCH = {"cuda": 65536, "cpu": 4096}
POOLING = "mean over residues of the last layer; <cls> and <eos> excluded"
_SAFE_GLOBALS = [argparse.Namespace]  # the only non-tensor class in fair-esm ESM-2 checkpoints


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
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip archive, or a legacy pickle
        raise VirNucProError(
            f"{path}: not a loadable fair-esm checkpoint (not a torch.save file: it starts with {head!r})"
        )
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = reason.split(". ")[0]  # torch's first sentence; the rest is advice for other cases
        raise VirNucProError(f"{path}: not a loadable fair-esm checkpoint ({reason})") from None


def load_fair_esm(model):
    """(fair-esm ESM2 model in float32 eval mode on CPU, alphabet, checkpoint path)."""
    import esm

    path = resolve_checkpoint(model)
    regression_path = path.with_name(f"{path.stem}-contact-regression.pt")
    verify_recorded(path)
    if regression_path.is_file():
        verify_recorded(regression_path)
    data = _safe_torch_load(path)
    if not isinstance(data, dict) or "model" not in data or "cfg" not in data:
        raise VirNucProError(f"{path}: not a fair-esm ESM-2 checkpoint (expected 'model' and 'cfg' entries)")
    regression = _safe_torch_load(regression_path) if regression_path.is_file() else None
    name = path.stem if path.stem.startswith("esm2") else f"esm2_{path.stem}"  # selects the ESM-2 loader
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Regression weights not found")
            esm_model, alphabet = esm.pretrained.load_model_and_alphabet_core(name, data, regression)
    except (RuntimeError, KeyError, AttributeError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise VirNucProError(f"{path}: checkpoint does not match fair-esm's ESM-2 ({reason})") from None
    return esm_model.eval(), alphabet, path


# ------------------------------------------------------------------------------------ tokenising


class Esm2Tokenizer:
    """fair-esm's ESM-2 tokenisation, vectorised: `<cls>` + residues[:truncation] + `<eos>`.

    Residues map through the alphabet's one-character tokens; whitespace is dropped and the
    `<...>` special tokens are honoured exactly as fair-esm's `Alphabet.encode` does (such sequences go
    through fair-esm's own encoder). Any other character is an error, as it is in fair-esm.
    """

    def __init__(self, alphabet, truncation=TRUNCATION):
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
    from virnucpro import kernels

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
    """fair-esm ESM-2 weights run over packed batches.

    Built from a fair-esm `ESM2` module (its weights are copied to `device` in `dtype`, q/k/v fused into
    one projection). The path is chosen here, once:

    - "triton" (default on CUDA GPUs of compute capability >= 8.0 when Triton is installed and the head
      size is 32, 64 or 128): each layer is four cuBLAS GEMMs and the kernels of `virnucpro.kernels`
      (rotary fused into attention, which reads q, k, v straight from the projection; residual add
      fused with LayerNorm; GELU in place). The residual stream and the last layer's representation
      are float32, GEMM inputs bf16 (a bf16 stream is ~2 % faster but leaves proteins below the 0.9999
      cosine criterion: benchmarks/results/esm2_accuracy_h200.txt). If a kernel fails to build, the
      model warns once and goes on with the torch path, uncompiled;
    - otherwise the attention backend of `virnucpro.attention` with the per-layer work around it in
      torch ops, through `torch.compile` when `compile` (default: on CUDA), dynamic in the token count
      only; if compiling fails the model warns once and runs eagerly.
    """

    def __init__(self, esm_model, device, dtype, compile=None, kernels=None):
        self.device, self.dtype = torch.device(device), dtype
        self.num_layers = esm_model.num_layers
        self.embed_dim = esm_model.embed_dim
        self.heads = esm_model.attention_heads
        self.head_dim = self.embed_dim // self.heads
        self.mask_idx = esm_model.mask_idx
        self.token_dropout = esm_model.token_dropout

        def cast(t):
            return t.detach().to(device=self.device, dtype=dtype)

        self.embed_weight = cast(esm_model.embed_tokens.weight)
        self.layers = []
        for layer in esm_model.layers:
            at = layer.self_attn
            self.layers.append(
                dict(
                    ln1=(cast(layer.self_attn_layer_norm.weight), cast(layer.self_attn_layer_norm.bias),
                         layer.self_attn_layer_norm.eps),
                    qkv_w=torch.cat([cast(at.q_proj.weight), cast(at.k_proj.weight), cast(at.v_proj.weight)]),
                    qkv_b=torch.cat([cast(at.q_proj.bias), cast(at.k_proj.bias), cast(at.v_proj.bias)]),
                    scaling=at.scaling,
                    out=(cast(at.out_proj.weight), cast(at.out_proj.bias)),
                    ln2=(cast(layer.final_layer_norm.weight), cast(layer.final_layer_norm.bias),
                         layer.final_layer_norm.eps),
                    fc1=(cast(layer.fc1.weight), cast(layer.fc1.bias)),
                    fc2=(cast(layer.fc2.weight), cast(layer.fc2.bias)),
                )
            )
        ln = esm_model.emb_layer_norm_after
        self.final_ln = (cast(ln.weight), cast(ln.bias), ln.eps)
        inv_freq = esm_model.layers[0].self_attn.rot_emb.inv_freq
        self.inv_freq = inv_freq.detach().to(device=self.device, dtype=torch.float32)  # (Dh / 2,)

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
            self._tables = _kernels().rotary_tables(self.inv_freq, max(TRUNCATION + 2, int(max_seqlen)))
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
        """Pooled residue means (B, D) float32 of a PackedBatch already on the device."""
        out = self.forward_packed(batch.input_ids, batch.cu_seqlens, batch.max_seqlen, [self.num_layers])
        return segment_mean(out["representations"][self.num_layers], batch.cu_seqlens, 1, 1)


# ------------------------------------------------------------------------------------ the step


def embed_protein(frames, model, out, device="auto", tokens_per_batch=None):
    """Embed every protein of FASTA `frames` with ESM-2 into the HDF5 file `out` (input order)."""
    from virnucpro.embeddings import file_sha256, write_embeddings
    from virnucpro.runner import embed_packed, resolve_device
    from virnucpro.seqio import read_fasta

    import esm

    device = resolve_device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if tokens_per_batch is None:
        tokens_per_batch = DEFAULT_TOKENS_PER_BATCH[device.type]
    if tokens_per_batch < 1:
        raise VirNucProError("--tokens-per-batch must be positive")

    records = list(read_fasta(frames))
    ids = [r[0] for r in records]
    seqs = [r[1] for r in records]
    del records
    tokenizer = Esm2Tokenizer(esm.data.Alphabet.from_architecture("ESM-1b"))
    lengths = tokenizer.lengths(ids, seqs)  # validates every residue before the model loads

    esm_model, alphabet, path = load_fair_esm(model)
    packed = PackedESM2(esm_model, device, dtype)
    del esm_model
    log.info(
        "ESM-2 %s: %d layers, dim %d, %s on %s, attention %s%s",
        path.name, packed.num_layers, packed.embed_dim, str(dtype).removeprefix("torch."), device,
        packed.attention_backend, ", compiled" if packed.compiled else "",
    )
    try:
        embeddings = embed_packed(
            ids, seqs, tokenizer, packed.embed, packed.embed_dim, device, tokens_per_batch,
            label="embed-protein", lengths=lengths,
        )
    except VirNucProError as exc:  # a NaN or a device fault: name the shard
        raise VirNucProError(f"{frames}: {exc}") from None
    attrs = {
        "model": path.name,
        "model_sha256": file_sha256(path),
        "layer": packed.num_layers,
        "precision": str(dtype).removeprefix("torch."),
        "pooling": POOLING,
        "truncation": TRUNCATION,
        "attention": packed.attention_backend,
        "tokens_per_batch": tokens_per_batch,
    }
    write_embeddings(out, ids, embeddings, attrs)
    log.info("embed-protein: wrote %d embeddings to %s", len(ids), out)
