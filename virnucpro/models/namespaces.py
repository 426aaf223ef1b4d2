"""What identifies each encoder's embeddings, without torch: the steps that only plan or check (the
`plan` checkpoint, the embedding store) import this, not the models.

`namespaces(esm2_note, dnabert_note, device_type)` gives the embedding-store namespace
(`virnucpro.io.store.Namespace`) of both encoders' embeddings on a device type ("cuda" or "cpu"): the
model's checksums, the precision of its matrix products there, its pooling rule (and for ESM-2 the
truncation and the layer). Anything that changes an embedding changes its namespace.
"""

from virnucpro.io.notes import source_sha256
from virnucpro.io.store import Namespace

ESM2_TRUNCATION = 1022  # residues kept per protein, as fair-esm's extract (truncation_seq_length=1022)
ESM2_POOLING = "mean over residues of the last layer; <cls> and <eos> excluded"
ESM2_PRECISION = {"cuda": "float16", "cpu": "float32"}  # of the matrix products, by device type
ESM2_FLOAT8 = ("float8 e4m3 q, k, fc1 and fc2 (weights one scale per output channel, activations one per "
               "token); float16 v, out_proj and attention; float32 residual stream")  # embed.precision float8
DNABERT_POOLING = "mean of the last hidden state over all tokens, [CLS] and [SEP] included"
DNABERT_DTYPE = {"cuda": "bfloat16", "cpu": "float32"}  # of the linear layers, by device type
DNABERT_PRECISION = {"cuda": f"{DNABERT_DTYPE['cuda']} matmuls; float32 embeddings, LayerNorm, GELU and residual stream",
                     "cpu": DNABERT_DTYPE["cpu"]}
DNABERT_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # the first one present is read


def esm2_namespace(note, device_type, float8=False):
    """The namespace of ESM-2 embeddings from the model of `note` (a checked model note), in float8 (CUDA
    only) or the device type's precision."""
    if float8 and device_type != "cuda":
        raise ValueError("float8 ESM-2 embeddings are made on CUDA only")
    precision = ESM2_FLOAT8 if float8 else ESM2_PRECISION[device_type]
    return Namespace.of("esm2", model_sha256=source_sha256(note), precision=precision,
                        pooling=ESM2_POOLING, truncation=ESM2_TRUNCATION, layer="last")


def dnabert_namespace(note, device_type):
    """The namespace of DNABERT-S embeddings from the snapshot of `note` (its config.json, tokenizer.json
    and weights checksums)."""
    checksums = note["checksums"]
    weights = next(checksums[name] for name in DNABERT_WEIGHT_FILES if name in checksums)
    return Namespace.of(
        "dnabert_s", weights_sha256=weights, tokenizer_sha256=checksums["tokenizer.json"],
        config_sha256=checksums["config.json"], precision=DNABERT_PRECISION[device_type], pooling=DNABERT_POOLING,
    )


def namespaces(esm2_note, dnabert_note, device_type, float8=False):
    """{"esm2": Namespace, "dnabert_s": Namespace} of both encoders on `device_type` (ESM-2 in float8)."""
    return {"esm2": esm2_namespace(esm2_note, device_type, float8),
            "dnabert_s": dnabert_namespace(dnabert_note, device_type)}
