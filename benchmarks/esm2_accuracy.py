"""16-bit and float8 ESM-2 3B paths against fair-esm's float32 padded forward: per-protein cosine,
relative error, and the agreement of calls made through a classifier.

    python benchmarks/esm2_accuracy.py --out benchmarks/results/esm2_accuracy_h200.txt
    python benchmarks/esm2_accuracy.py --float8-only --outliers --out ...  # float8 on both weight sets

The 3B architecture with random weights (as tests/test_esm2_gpu.py) on proteins of 1 to 1100 residues;
pooled embeddings as the workflow makes them. The criterion is a cosine of at least 0.9999 with fair-esm's
float32 padded embedding for every protein. Rows, in float16 (the workflow's compute dtype) and in bf16: the Triton path
(float32 residual stream), the same with a 16-bit residual stream, and fair-esm's own forward in that
dtype.
"""

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from esm.model.esm2 import ESM2  # noqa: E402
from tests.tiny_esm2 import LENGTHS, packed_from_fair_esm, padded_reference, random_proteins  # noqa: E402

from virnucpro.models.mlp import MLPClassifier  # noqa: E402
from virnucpro.models.esm2 import tokenizer  # noqa: E402
from tests.packed_runs import embed_packed  # noqa: E402


def build_3b(outliers):
    """The 3B architecture with random weights; `outliers`: 4 LayerNorm gain channels x30 in every layer's
    norms (the outlier channels of trained transformers)."""
    channels = torch.randperm(2560, generator=torch.Generator().manual_seed(1))[:4].cuda()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = ESM2(num_layers=36, embed_dim=2560, attention_heads=40).eval()
        with torch.no_grad():
            model.embed_tokens.weight.normal_(0.0, 1.0)
            if outliers:
                for layer in model.layers:
                    layer.self_attn_layer_norm.weight[channels] *= 30
                    layer.final_layer_norm.weight[channels] *= 30
    return model


def call_agreement(a, b, seed=0):
    """Share of proteins that a random VirNucPro classifier calls alike from embeddings `a` and `b` (the
    ESM-2 part of its features; the DNABERT-S part is one fixed random vector), and the largest virus
    score difference. The first layer's weights are scaled so that scores spread over (0, 1)."""
    torch.manual_seed(seed)
    clf = MLPClassifier().eval()
    dna = torch.randn(1, 768).expand(len(a), 768)

    def scores(e):
        e = torch.from_numpy(e)
        feats = torch.cat([dna, (e - torch.from_numpy(a).mean(0)) / torch.from_numpy(a).std(0)], 1)
        with torch.no_grad():
            return torch.softmax(clf(feats), 1)[:, 1].numpy()

    sa, sb = scores(a), scores(b)
    return float(((sa >= 0.5) == (sb >= 0.5)).mean()), float(np.abs(sa - sb).max())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out")
    ap.add_argument("--repeats", type=int, default=3, help="protein sets (seeds) per row")
    ap.add_argument("--float8-only", action="store_true", help="only the float16 and float8 Triton rows")
    ap.add_argument("--outliers", action="store_true", help="also the weights with outlier channels")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    tok = tokenizer()
    sets = [random_proteins(LENGTHS, seed=11 + r) for r in range(args.repeats)]
    rows = []
    for outliers in (False, True) if args.outliers else (False,):
        model = build_3b(outliers)
        weights = "random weights, 4 outlier channels x30" if outliers else "random weights"
        rows.append(f"## ESM-2 3B architecture, {weights}, {sum(map(len, sets))} proteins of 1..1100 residues")
        print(rows[-1], flush=True)
        refs = [padded_reference(model, seqs, 36, batch=4) for seqs in sets]
        accuracy_rows(model, sets, refs, tok, rows, args.float8_only)
        model = None
        torch.cuda.empty_cache()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(rows) + "\n")


def accuracy_rows(model, sets, refs, tok, rows, float8_only):
    def report(name, embed):
        cos, err, got_all = [], [], []
        for seqs, ref in zip(sets, refs):
            got = embed(seqs)
            got_all.append(got)
            cos.append((got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1)))
            err.append(np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1))
        cos, err = np.concatenate(cos), np.concatenate(err)
        agree, diff = call_agreement(np.concatenate(refs), np.concatenate(got_all))
        rows.append(f"{name:<52} min cosine {cos.min():.7f}  median {np.median(cos):.7f}  "
                    f"max rel err {err.max():.2e}  below 0.999: {(cos < 0.999).sum()} of {len(cos)}  "
                    f"calls agree {100 * agree:.1f} %  max score diff {diff:.2e}")
        print(rows[-1], flush=True)

    def packed_rows(packed):
        def embed(seqs):
            ids = [str(i) for i in range(len(seqs))]
            return embed_packed(ids, seqs, tok, packed.embed, 2560, "cuda", 16384, "accuracy")
        return embed

    variants = [("float16", torch.float16, False), ("float8", torch.float16, True)]
    if not float8_only:
        variants.append(("bf16", torch.bfloat16, False))
    for name, dtype, float8 in variants:
        default = " (default)" if name == "float16" else ""
        residuals = [(torch.float32, f"float32 residual{default}")]
        if not float8_only and not float8:
            residuals.append((dtype, f"{name} residual"))
        for residual, label in residuals:
            packed = packed_from_fair_esm(model, "cuda", dtype, kernels=True, residual_dtype=residual,
                                              float8=float8)
            what = "float8 (e4m3 q, k, fc1, fc2)" if float8 else name
            report(f"triton kernels {what}, {label}", packed_rows(packed))
            assert packed.produced_by.name == "triton", "the Triton kernels failed: not a Triton row"
            packed = None
        if float8_only or float8:
            continue
        fair = copy.deepcopy(model).to(dtype)  # fresh: no rotary tables cached in float32
        for block in fair.layers:
            block.self_attn.rot_emb._seq_len_cached = None
        report(f"fair-esm padded forward in {name}", lambda seqs: padded_reference(fair, seqs, 36, batch=4))
        fair = None


if __name__ == "__main__":
    main()
