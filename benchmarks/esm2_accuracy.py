"""16-bit ESM-2 3B paths against fair-esm's float32 padded forward: per-protein cosine and relative error.

    python benchmarks/esm2_accuracy.py --out benchmarks/results/esm2_accuracy_h200.txt

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
from tiny_esm2 import LENGTHS, padded_reference, random_proteins  # noqa: E402

from virnucpro.models.esm2 import PackedESM2, tokenizer  # noqa: E402
from virnucpro.models.runner import embed_packed  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out")
    ap.add_argument("--repeats", type=int, default=3, help="protein sets (seeds) per row")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = ESM2(num_layers=36, embed_dim=2560, attention_heads=40).eval()
        with torch.no_grad():
            model.embed_tokens.weight.normal_(0.0, 1.0)
    tok = tokenizer()
    sets = [random_proteins(LENGTHS, seed=11 + r) for r in range(args.repeats)]
    refs = [padded_reference(model, seqs, 36, batch=4) for seqs in sets]
    rows = []

    def report(name, embed):
        cos, err = [], []
        for seqs, ref in zip(sets, refs):
            got = embed(seqs)
            cos.append((got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1)))
            err.append(np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1))
        cos, err = np.concatenate(cos), np.concatenate(err)
        rows.append(f"{name:<44} min cosine {cos.min():.7f}  median {np.median(cos):.7f}  "
                    f"max rel err {err.max():.2e}  proteins below 0.9999: {(cos < 0.9999).sum()} of {len(cos)}")
        print(rows[-1], flush=True)

    def packed_rows(packed):
        def embed(seqs):
            ids = [str(i) for i in range(len(seqs))]
            return embed_packed(ids, seqs, tok, packed.embed, 2560, "cuda", 16384, "accuracy")
        return embed

    for name, dtype in (("float16", torch.float16), ("bf16", torch.bfloat16)):
        default = " (default)" if dtype == torch.float16 else ""
        for residual, label in ((torch.float32, f"float32 residual{default}"), (dtype, f"{name} residual")):
            packed = PackedESM2.from_fair_esm(model, "cuda", dtype, kernels=True, residual_dtype=residual)
            report(f"triton kernels {name}, {label}", packed_rows(packed))
            assert packed.produced_by.name == "triton", "the Triton kernels failed: not a Triton row"
            packed = None
        fair = copy.deepcopy(model).to(dtype)  # fresh: no rotary tables cached in float32
        for block in fair.layers:
            block.self_attn.rot_emb._seq_len_cached = None
        report(f"fair-esm padded forward in {name}", lambda seqs: padded_reference(fair, seqs, 36, batch=4))
        fair = None
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
