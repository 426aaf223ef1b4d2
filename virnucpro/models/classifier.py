"""The VirNucPro classifier as the classify step runs it: its file read without torch, scores in NumPy.

Model: Linear(input_dim, 512) -> BatchNorm1d (eval: running statistics, eps 1e-5) -> ReLU ->
Dropout(0.5) (none in eval) -> Linear(512, 2), then a softmax; column 0 is score1 (others), column 1
score2 (virus). The file is our safetensors state dict (`FORMAT`, written by `virnucpro.models.mlp`: the
conversion of an original `300_model.pth` / `500_model.pth`, or a retrained classifier), whose metadata
(all strings) holds `format`, `fragment_size`, `input_dim`, `hidden_dim`, `num_class`, `source` and
`source_sha256`; the parameter names are the original's (`hidden_layer`, `bn1`, `output_layer`).

`Classifier.scores` computes float32 arithmetic in blocks of exactly `BLOCK` rows (the last one padded
with zeros): every matrix product has one shape, so a frame's scores do not depend on which other frames
are scored with it (BLAS libraries may round a row differently for different row counts). NumPy, not
torch: the step that scores a sample then starts in a fraction of a second. The scores agree with the
original's torch forward to float32 rounding (tests/test_classifier.py).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from virnucpro.errors import VirNucProError
from virnucpro.io.checksums import checked_sha256
from virnucpro.io.tensors import is_safetensors, safetensors_metadata

FORMAT = "virnucpro-mlp-classifier/1"
INPUT_DIM, HIDDEN_DIM, NUM_CLASS = 3328, 512, 2
BLOCK = 256  # rows scored at once: the batches of the original's DataLoader
BN_EPS = 1e-5  # nn.BatchNorm1d's default, which the original keeps
LABELS = ("others", "virus")  # the prediction of the column with the larger score
PARAMETERS = {  # name -> (shape as a function of (input_dim, hidden, num_class))
    "hidden_layer.weight": lambda d, h, c: (h, d),
    "hidden_layer.bias": lambda d, h, c: (h,),
    "bn1.weight": lambda d, h, c: (h,),
    "bn1.bias": lambda d, h, c: (h,),
    "bn1.running_mean": lambda d, h, c: (h,),
    "bn1.running_var": lambda d, h, c: (h,),
    "output_layer.weight": lambda d, h, c: (c, h),
    "output_layer.bias": lambda d, h, c: (c,),
}


def affine(x, weight_t, bias):
    """x @ weight_t + bias: the matrix products, which BLAS may round differently for other row counts."""
    return x @ weight_t + bias


@dataclass(frozen=True)
class Classifier:
    """A classifier read from its file: float32 parameters (the original's names) and what the file says."""

    weights: dict
    fragment_size: int
    source: str
    source_sha256: str

    @property
    def input_dim(self):
        return self.weights["hidden_layer.weight"].shape[1]

    def scores(self, features, block_rows=BLOCK):
        """Softmax probabilities (N, num_class) float32 of `features` (N, input_dim); see the module docstring."""
        w = self.weights
        first, second = np.ascontiguousarray(w["hidden_layer.weight"].T), np.ascontiguousarray(w["output_layer.weight"].T)
        scale = (np.float32(1) / np.sqrt(w["bn1.running_var"] + np.float32(BN_EPS))) * w["bn1.weight"]
        shift = w["bn1.bias"] - w["bn1.running_mean"] * scale
        x = np.asarray(features, dtype=np.float32)
        out = np.empty((x.shape[0], second.shape[1]), dtype=np.float32)
        block = np.zeros((block_rows, first.shape[0]), dtype=np.float32)
        for lo in range(0, x.shape[0], block_rows):
            rows = min(block_rows, x.shape[0] - lo)
            block[:rows], block[rows:] = x[lo : lo + rows], 0
            h = np.maximum(affine(block, first, w["hidden_layer.bias"]) * scale + shift, 0)  # (BLOCK, hidden)
            logits = affine(h, second, w["output_layer.bias"])  # (BLOCK, num_class)
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            out[lo : lo + rows] = (e / e.sum(axis=1, keepdims=True))[:rows]
        return out


def read_classifier(path):
    """The classifier in our safetensors file `path`, checked against its checksum record and its metadata."""
    path = Path(path)
    if not path.is_file():
        raise VirNucProError(f"{path}: classifier file not found")
    checked_sha256(path)
    return from_file(path)


def from_file(path):
    """The classifier in our safetensors file `path` (its metadata checked; no checksum record involved:
    a file being written under a temporary name)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not is_safetensors(path):
        raise VirNucProError(f"{path}: not a converted VirNucPro classifier (not a safetensors file)")
    meta = safetensors_metadata(path)
    if meta.get("format") != FORMAT:
        raise VirNucProError(f"{path}: not a converted VirNucPro classifier (metadata format {meta.get('format')!r})")
    try:
        state = load_file(str(path))
        dims = tuple(int(meta[k]) for k in ("input_dim", "hidden_dim", "num_class"))
        size = int(meta["fragment_size"])
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise VirNucProError(f"{path}: unreadable classifier file ({exc})") from None
    weights = {}
    for name, shape in PARAMETERS.items():
        value = state.get(name)
        if value is None or value.shape != shape(*dims):
            raise VirNucProError(f"{path}: '{name}' is {'missing' if value is None else value.shape}, the metadata "
                                 f"dimensions {dims} need {shape(*dims)}")
        weights[name] = value.astype(np.float32)
    return Classifier(weights, size, meta.get("source", ""), meta.get("source_sha256", ""))


def classifier_of(note):
    """The classifier a checked model note names (`virnucpro.io.notes.check_note`): the note's file, which
    must be the conversion of the noted source (or the noted source itself, for our own safetensors files)."""
    from virnucpro.io.notes import source_sha256

    clf = read_classifier(note["file"])
    if note["file"] != note["source"] and clf.source_sha256 != source_sha256(note):
        raise VirNucProError(f"{note['file']}: converted from another file than {note['source']}; delete it")
    return clf


def prediction_lines(ids, probabilities):
    """Lines of the original's prediction table (without header): `id, label, score1, score2`, each score
    printed as the original prints a float32 (`str`), the label that of the column with the larger score
    (the first on a tie, as torch.max)."""
    predicted = probabilities.argmax(axis=1).tolist() if len(ids) else []
    return [f"{i}\t{LABELS[p]}\t" + "\t".join(map(str, row)) + "\n" for i, p, row in zip(ids, predicted, probabilities)]
