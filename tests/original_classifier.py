"""Classifier files made the way the original VirNucPro made `300_model.pth` / `500_model.pth`.

`make_original_classifier(path, input_dim)` runs a script as `__main__` whose `MLPClassifier` is the
original's class, gives it random weights and non-trivial BatchNorm statistics, and saves the whole
module with `torch.save`, so the file pickles `__main__.MLPClassifier` exactly as the original's do.
With `frames=(ids, features)` and `table`, the same script also scores the frames as the original
`prediction.py` does (DataLoader of 256, eval mode, softmax, its print formatting) and writes that table.
"""

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    from torch import nn
    import torch.nn.functional as F

    class MLPClassifier(nn.Module):
        def __init__(self, input_dim, hidden_dim, num_class):
            super(MLPClassifier, self).__init__()
            self.hidden_layer = nn.Linear(input_dim, hidden_dim)
            self.bn1 = nn.BatchNorm1d(hidden_dim)
            self.output_layer = nn.Linear(hidden_dim, num_class)
            self.dropout = nn.Dropout(0.5)
            self.init_weights()

        def init_weights(self):
            nn.init.xavier_uniform_(self.hidden_layer.weight)
            nn.init.xavier_uniform_(self.output_layer.weight)

        def forward(self, x):
            x = self.hidden_layer(x)
            x = self.bn1(x)
            x = F.relu(x)
            x = self.dropout(x)
            x = self.output_layer(x)
            return x

    if __name__ == "__main__":
        path, input_dim, hidden_dim, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        torch.manual_seed(seed)
        model = MLPClassifier(input_dim, hidden_dim, 2)
        model.train()
        with torch.no_grad():  # non-trivial BatchNorm running statistics and affine parameters
            for _ in range(5):
                model(torch.randn(64, input_dim) * 3 + 0.5)
            model.bn1.weight.normal_(1.0, 0.3)
            model.bn1.bias.normal_(0.0, 0.3)
        torch.save(model, path)
        if len(sys.argv) > 5:
            x = np.load(sys.argv[5])
            ids = [line.strip() for line in open(sys.argv[6])]
            loader = torch.utils.data.DataLoader(list(zip(torch.from_numpy(x), ids)), batch_size=256,
                                                 shuffle=False)
            model.eval()
            seqids, predictions, probabilities = [], [], []
            with torch.no_grad():
                for batch_data, batch_seqids in loader:
                    p = F.softmax(model(batch_data), dim=1)
                    _, predicted = torch.max(p.data, 1)
                    label_map = {1: 'virus', 0: 'others'}
                    predictions.extend(label_map[v.item()] for v in predicted)
                    probabilities.extend(p.cpu().numpy())
                    seqids.extend(batch_seqids)
            with open(sys.argv[7], "w") as f:
                f.write("Sequence_ID\\tPrediction\\tscore1\\tscore2\\n")
                for seqid, prediction, probability in zip(seqids, predictions, probabilities):
                    prob_str = '\\t'.join(map(str, probability))
                    f.write(f"{seqid}\\t{prediction}\\t{prob_str}\\n")
    """
)


def make_original_classifier(path, input_dim, hidden_dim=512, seed=7, frames=None, table=None):
    """Write an original-style classifier to `path` (name it 300_model.pth or 500_model.pth)."""
    path = Path(path)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        (work / "make_original.py").write_text(SCRIPT)
        args = [sys.executable, str(work / "make_original.py"), str(path), str(input_dim), str(hidden_dim),
                str(seed)]
        if frames is not None:
            ids, x = frames
            np.save(work / "x.npy", np.asarray(x, dtype=np.float32))
            (work / "ids.txt").write_text("".join(i + "\n" for i in ids))
            args += [str(work / "x.npy"), str(work / "ids.txt"), str(table)]
        subprocess.run(args, check=True, cwd=work)
    return path
