"""Write the tiny models that .test/config/config.yaml uses, in their real on-disk formats, random
weights from fixed seeds (the same bytes on every run):

- esm2_t2_tiny_UR50D.pt (+ -contact-regression.pt): a fair-esm ESM-2 checkpoint, float16, 2 layers, width 32;
- DNABERT-S-tiny/: a DNABERT-S snapshot (config.json, tokenizer.json, pytorch_model.bin), hidden size 32;
- 500_model.pth: an original-format VirNucPro classifier (a pickled __main__.MLPClassifier) taking the
  DNABERT-S and ESM-2 embeddings side by side (32 + 32), hidden width 64 (the published one: 512); its
  seed is one with which the test samples get both calls, viral and not_viral.

Usage, from the repository root: python .test/make_models.py [OUT]   (OUT defaults to .test/models)
A dev tool: it builds the models with the test suite's helpers (tests/).
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.original_classifier import make_original_classifier  # noqa: E402
from tests.tiny_dnabert import build_tiny_dnabert  # noqa: E402
from tests.tiny_esm2 import build_tiny_esm2, save_fair_esm_checkpoint  # noqa: E402

ESM_DIM, DNA_DIM = 32, 32


def make_models(out):
    out = Path(out).resolve()  # the classifier is written by a script run in a temporary folder
    out.mkdir(parents=True, exist_ok=True)
    esm = build_tiny_esm2(num_layers=2, embed_dim=ESM_DIM, heads=2, seed=0)
    save_fair_esm_checkpoint(esm, out, name="esm2_t2_tiny_UR50D")
    build_tiny_dnabert(out / "DNABERT-S-tiny", hidden_size=DNA_DIM, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, vocab_size=128, formats=("bin",), seed=0)
    make_original_classifier(out / "500_model.pth", input_dim=DNA_DIM + ESM_DIM, hidden_dim=64, seed=16)
    return out


if __name__ == "__main__":
    make_models(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "models")
