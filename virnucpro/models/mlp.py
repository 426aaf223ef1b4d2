"""The VirNucPro classifier as a torch module: the original's files read, converted once, and retraining.

Model: Linear(input_dim, 512) -> BatchNorm1d -> ReLU -> Dropout(0.5) -> Linear(512, 2), run in eval mode
with a softmax; column 0 is score1 (others), column 1 is score2 (virus). Attribute names are the
original's (`hidden_layer`, `bn1`, `output_layer`, `dropout`), so state-dict keys match its files. The
classify step scores with `virnucpro.models.classifier` (NumPy, no torch) from the file written here.

Two file forms are read by `load_classifier`:
- ours: a safetensors state dict whose metadata (all strings) holds `format`, `fragment_size`,
  `input_dim`, `hidden_dim`, `num_class`, `source` and `source_sha256`;
- the original `300_model.pth` / `500_model.pth`: whole modules pickled by `torch.save` with their class
  in `__main__`. They are read with `torch.load(weights_only=True)` and an allow-list naming only our
  `MLPClassifier` (in place of `__main__.MLPClassifier`) and the three torch layers, so no pickled code
  runs: any other global in the pickle (a function such as `os.system`, another class) is refused.
  The fragment size comes from the file name.

An original file is converted once (`converted.ensure_converted`, addressed by its sha256), so a
changed classifier file always reaches the results.
"""

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from virnucpro.errors import VirNucProError, first_line
from virnucpro.io.checksums import checked_sha256
from virnucpro.io.tensors import is_safetensors
from virnucpro.io.torchfile import load_torch_file
from virnucpro.models.classifier import BN_EPS, FORMAT, HIDDEN_DIM, INPUT_DIM, NUM_CLASS, from_file

log = logging.getLogger("virnucpro")

SCORE_TOLERANCE = 1e-5  # the classify step's NumPy scores against torch's: float32 rounding of 3328-term sums
N_CHECK = 512  # random inputs on which a conversion must reproduce the original's logits
_ORIGINAL_NAME = re.compile(r"^(300|500)_model\.pth$")


class MLPClassifier(nn.Module):
    """The VirNucPro classifier; `forward` takes (N, input_dim) float32 and returns (N, num_class) logits."""

    def __init__(self, input_dim=INPUT_DIM, hidden_dim=HIDDEN_DIM, num_class=NUM_CLASS):
        super().__init__()
        self.hidden_layer = nn.Linear(input_dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(hidden_dim, eps=BN_EPS)
        self.output_layer = nn.Linear(hidden_dim, num_class)
        self.dropout = nn.Dropout(0.5)
        nn.init.xavier_uniform_(self.hidden_layer.weight)
        nn.init.xavier_uniform_(self.output_layer.weight)

    def forward(self, x):
        x = F.relu(self.bn1(self.hidden_layer(x)))  # (N, hidden)
        return self.output_layer(self.dropout(x))  # (N, num_class)


@dataclass(frozen=True)
class Classifier:
    """A loaded classifier: the model in eval mode and what its file says about it."""

    model: MLPClassifier
    fragment_size: int | None  # None: an original file whose name does not tell
    source: str
    source_sha256: str

    @property
    def input_dim(self):
        return self.model.hidden_layer.in_features


def _dims(state, path):
    try:
        hidden, input_dim = state["hidden_layer.weight"].shape
        num_class = state["output_layer.weight"].shape[0]
    except (KeyError, ValueError):
        raise VirNucProError(
            f"{path}: not a VirNucPro classifier (no hidden_layer/output_layer weights)"
        ) from None
    return int(input_dim), int(hidden), int(num_class)


def _from_state(state, path):
    model = MLPClassifier(*_dims(state, path))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = first_line(exc)
        raise VirNucProError(f"{path}: state dict does not fit the VirNucPro classifier ({first})") from None
    return model.eval()


def load_classifier(path):
    """Read our converted safetensors file or an original `{300|500}_model.pth`; see the module docstring."""
    path = Path(path)
    if not path.is_file():
        raise VirNucProError(f"{path}: classifier file not found")
    digest = checked_sha256(path)  # against the checksum recorded when it was downloaded or converted, if any
    if is_safetensors(path):
        return _load_converted(path)
    return _load_original(path, digest)


def _load_converted(path):
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise VirNucProError(f"{path}: unreadable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise VirNucProError(
            f"{path}: not a converted VirNucPro classifier (metadata format {meta.get('format')!r})"
        )
    model = _from_state(state, path)
    dims = (str(d) for d in _dims(state, path))
    if tuple(dims) != (meta.get("input_dim"), meta.get("hidden_dim"), meta.get("num_class")):
        raise VirNucProError(f"{path}: metadata dimensions disagree with the stored weights")
    return Classifier(model, int(meta["fragment_size"]), meta.get("source", ""), meta.get("source_sha256", ""))




def _load_original(path, digest):
    allowed = [(MLPClassifier, "__main__.MLPClassifier"), nn.Linear, nn.BatchNorm1d, nn.Dropout]
    obj = load_torch_file(path, allowed, "readable classifier file")
    if isinstance(obj, MLPClassifier):
        state = obj.state_dict()
    elif isinstance(obj, dict) and "hidden_layer.weight" in obj:  # a bare state dict
        state = obj
    else:
        raise VirNucProError(f"{path}: holds a {type(obj).__name__}, not the VirNucPro MLPClassifier")
    match = _ORIGINAL_NAME.match(path.name)
    size = int(match.group(1)) if match else None
    return Classifier(_from_state(state, path), size, path.name, digest)


def write_classifier_file(model, path, fragment_size, source, source_sha256):
    """Write `model` to `path` in our safetensors format (not atomic: callers write to a temporary name)."""
    from virnucpro.io.tensors import save_safetensors

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    input_dim, hidden, num_class = _dims(state, path)
    meta = {
        "format": FORMAT,
        "fragment_size": str(int(fragment_size)),
        "input_dim": str(input_dim),
        "hidden_dim": str(hidden),
        "num_class": str(num_class),
        "source": str(source),
        "source_sha256": str(source_sha256),
    }
    save_safetensors(state, path, meta)


def convert_original(pth, out, source_sha256):
    """Convert an original `{300|500}_model.pth` into our safetensors file at `out`, verifying outputs.

    The fragment size comes from the file name (an error otherwise). The written file is loaded back and
    must give bit-identical logits to the module read from the original file on random inputs.
    """
    pth, out = Path(pth), Path(out)
    if not _ORIGINAL_NAME.match(pth.name):
        raise VirNucProError(
            f"{pth}: cannot tell the fragment size; original classifier files are named "
            "300_model.pth or 500_model.pth"
        )
    if is_safetensors(pth):
        raise VirNucProError(f"{pth}: already a converted safetensors file, not an original pickled classifier")
    original = load_classifier(pth)
    if original.source_sha256 != source_sha256:
        raise VirNucProError(f"{pth}: changed while it was being converted; convert it again")
    x = torch.randn(N_CHECK, original.input_dim, generator=torch.Generator().manual_seed(0))
    write_classifier_file(original.model, out, original.fragment_size, original.source, source_sha256)
    converted = _load_converted(out)
    with torch.no_grad():
        same = torch.equal(original.model(x), converted.model(x))
        want = F.softmax(original.model(x), dim=1).numpy()
    close = abs(from_file(out).scores(x.numpy()) - want).max() <= SCORE_TOLERANCE
    if not (same and close) or converted.fragment_size != original.fragment_size:
        raise VirNucProError(f"{pth}: the converted classifier does not reproduce the original's outputs")
    log.info("converted %s (%d bp fragments, sha256 %s)", pth, original.fragment_size, source_sha256)
