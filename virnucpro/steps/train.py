"""Retraining the VirNucPro classifier with the original recipe (its `train.py`).

`train(members, out_model, metrics_tsv, fragment_size, seed, max_epochs, patience)` (defaults in
`virnucpro.defaults`):
- members: labelled training sets, (member plan, label) pairs with label 1 = viral and 0 = other; their
  features are read from the embedding store (`virnucpro.io.features`) and all frames of all sets are
  pooled;
- split: the rows are shuffled with `seed` and 10 % (int(N * 0.1)) are held out, the rest trained on;
- recipe: `MLPClassifier` (xavier-uniform weights), CrossEntropyLoss, SGD lr 2e-4 momentum 0.9,
  minibatches of 32 reshuffled every epoch, StepLR(step_size=10, gamma=0.85) stepped after every epoch; after each
  epoch the held-out loss (mean over held-out minibatches of 32) is measured, and training stops when it
  has not improved for `patience` epochs; the weights of the best epoch are restored (the original
  meant to; its copy kept references to the live tensors). A final training minibatch of a single row is
  skipped, as BatchNorm cannot train on one row;
- outputs, both atomic: the classifier in our safetensors format (loadable by `virnucpro.models.classifier.read_classifier`, with
  the fragment size in its metadata) and a metrics TSV (`metric`, `value`): accuracy, precision,
  recall, F1 (class 1 positive) and AUROC of the held-out rows, plus the held-out loss and counts.
Runs on CPU in float32 and is deterministic for a seed (same inputs, same machine, same thread count).
"""

import hashlib
import logging

import numpy as np
import torch
import torch.nn.functional as F

from virnucpro.defaults import TRAIN_MAX_EPOCHS, TRAIN_PATIENCE, TRAIN_SEED
from virnucpro.errors import VirNucProError
from virnucpro.io.atomic import atomic_outputs
from virnucpro.models.mlp import MLPClassifier, write_classifier_file

log = logging.getLogger("virnucpro")

LR, MOMENTUM, MINIBATCH = 2e-4, 0.9, 32
STEP_SIZE, GAMMA = 10, 0.85
HELD_OUT = 0.1


def load_training_set(members):
    """(X float32 (N, D), y int64 (N,), sha256 over the features and labels) from labelled members:
    (member plan, label) pairs, features read from the embedding store."""
    from virnucpro.io.features import gather_features

    xs, ys, digest = [], [], hashlib.sha256()
    for member, label in members:
        if label not in (0, 1):
            raise VirNucProError(f"{member}: label must be 0 (other) or 1 (viral), not {label!r}")
        _, emb = gather_features(member)
        if xs and emb.shape[0] and emb.shape[1] != xs[0].shape[1]:
            raise VirNucProError(
                f"{member}: {emb.shape[1]} values per frame, other training sets have {xs[0].shape[1]}"
            )
        if emb.shape[0]:
            xs.append(emb)
            ys.append(np.full(emb.shape[0], label, dtype=np.int64))
            digest.update(np.ascontiguousarray(emb))  # the array's buffer, copied only when not contiguous
            digest.update(bytes([label]))
    if not xs:
        raise VirNucProError("no frames in the training sets")
    x, y = np.concatenate(xs), np.concatenate(ys)
    counts = np.bincount(y, minlength=2)
    if counts.min() == 0:
        raise VirNucProError(f"training needs frames of both classes; got {counts[0]} other and {counts[1]} viral")
    return x, y, digest.hexdigest()


def auroc(labels, scores):
    """Area under the ROC curve by the rank formula (ties get their average rank); NaN for one class."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    n_pos = int((labels == 1).sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], scores.size]
    for a, b in zip(starts, ends):  # average rank (1-based) within each tie group
        ranks[order[a:b]] = (a + b + 1) / 2
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_metrics(labels, predicted, scores):
    """Accuracy, precision, recall, F1 (class 1 positive; 0 where undefined) and AUROC."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    tp = int(((predicted == 1) & (labels == 1)).sum())
    fp = int(((predicted == 1) & (labels == 0)).sum())
    fn = int(((predicted == 0) & (labels == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": float((labels == predicted).mean()) if labels.size else float("nan"),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "auroc": auroc(labels, scores),
    }


def _evaluate(model, x, y):
    """(mean over minibatches of the minibatch-mean cross-entropy, predicted class, virus probability)."""
    model.eval()
    losses, predicted, virus = [], [], []
    with torch.no_grad():
        for lo in range(0, x.shape[0], MINIBATCH):
            logits = model(x[lo : lo + MINIBATCH])
            losses.append(F.cross_entropy(logits, y[lo : lo + MINIBATCH]).item())
            predicted.append(logits.argmax(dim=1))
            virus.append(F.softmax(logits, dim=1)[:, 1])
    return float(np.mean(losses)), torch.cat(predicted).numpy(), torch.cat(virus).numpy()


def train(members, out_model, metrics_tsv, fragment_size, seed=TRAIN_SEED, max_epochs=TRAIN_MAX_EPOCHS,
          patience=TRAIN_PATIENCE):
    """Train, write the classifier and the metrics table; returns the metrics dict. See the module docstring."""
    x_all, y_all, inputs_sha256 = load_training_set(members)
    (x_train, y_train), (x_held, y_held) = _split(x_all, y_all, seed)
    torch.manual_seed(seed)
    model = MLPClassifier(input_dim=x_all.shape[1])
    best_epoch, epochs_run = _fit(model, (x_train, y_train), (x_held, y_held), seed, max_epochs, patience)
    held_loss, predicted, virus = _evaluate(model, x_held, y_held)
    metrics = binary_metrics(y_held.numpy(), predicted, virus)
    metrics.update({
        "heldout_loss": held_loss,
        "best_epoch": best_epoch,
        "epochs_run": epochs_run,
        "train_frames": len(y_train),
        "heldout_frames": len(y_held),
        "heldout_viral_frames": int(y_held.sum()),
        "seed": seed,
    })
    if np.isnan(metrics["auroc"]):
        log.warning("the held-out part holds one class only: AUROC is undefined")
    source = f"trained by virnucpro.steps.train on {len(members)} training set(s), seed {seed}"
    with atomic_outputs(out_model, metrics_tsv) as (tmp_model, tmp_metrics):
        write_classifier_file(model, tmp_model, fragment_size, source, inputs_sha256)
        tmp_metrics.write_text("metric\tvalue\n" + "".join(f"{k}\t{_fmt(v)}\n" for k, v in metrics.items()))
    log.info("classifier -> %s; held-out AUROC %.4f, accuracy %.4f -> %s", out_model, metrics["auroc"],
             metrics["accuracy"], metrics_tsv)
    return metrics


def _split(x_all, y_all, seed):
    """((x, y) trained on, (x, y) held out) as tensors: rows shuffled with `seed`, int(N * HELD_OUT) held out."""
    order = np.random.default_rng(seed).permutation(len(y_all))
    n_held = int(len(y_all) * HELD_OUT)
    if n_held < 1 or len(y_all) - n_held < 2:
        raise VirNucProError(f"{len(y_all)} frames are too few to hold out 10% and train on the rest")
    held, train = order[:n_held], order[n_held:]
    return ((torch.from_numpy(x_all[train]), torch.from_numpy(y_all[train])),
            (torch.from_numpy(x_all[held]), torch.from_numpy(y_all[held])))


def _fit(model, train, held, seed, max_epochs, patience):
    """Train `model` by the recipe with early stopping on the held-out loss and restore the weights of
    the best epoch; returns (best epoch, epochs run)."""
    (x_train, y_train), (x_held, y_held) = train, held
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=STEP_SIZE, gamma=GAMMA)
    shuffler = torch.Generator().manual_seed(seed)
    best_loss, best_state, best_epoch, waited, epoch = None, None, 0, 0, 0
    for epoch in range(1, max_epochs + 1):
        running = _train_epoch(model, optimizer, x_train, y_train, shuffler)
        held_loss, _, _ = _evaluate(model, x_held, y_held)
        log.info("epoch %d: training loss %.4f, held-out loss %.4f", epoch, np.mean(running), held_loss)
        if best_loss is None or held_loss < best_loss:
            best_loss, best_epoch, waited = held_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
            if waited >= patience:
                log.info("early stop after epoch %d: no held-out improvement for %d epochs", epoch, patience)
                break
        scheduler.step()
    model.load_state_dict(best_state)
    return best_epoch, epoch


def _train_epoch(model, optimizer, x, y, shuffler):
    """One pass over `x` in minibatches of MINIBATCH drawn by `shuffler` (a last one of one row is skipped);
    returns the minibatch losses."""
    model.train()
    running = []
    for rows in torch.randperm(len(y), generator=shuffler).split(MINIBATCH):
        if rows.numel() < 2:
            continue
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x[rows]), y[rows])
        loss.backward()
        optimizer.step()
        running.append(loss.item())
    return running


def _fmt(v):
    return str(v) if isinstance(v, (int, np.integer)) else ("NA" if np.isnan(v) else f"{v:.6f}")
