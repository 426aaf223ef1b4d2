"""A changed model always reaches the results: each of the three model files is swapped, in place and
with an older modification time (as `cp -p` or `rsync -a` leave it, invisible to a comparison of times),
or by pointing the config at another file of the same name, and the rerun's scores change; only what
depends on the swapped model is computed again."""

import json
import os
import re
import shutil

import pytest

from tests.original_classifier import make_original_classifier
from tests.workflow_runs import REPO, snakemake, tiny_workdir
from tests.tiny_dnabert import build_tiny_dnabert, train_tokenizer
from tests.tiny_esm2 import build_tiny_esm2, save_fair_esm_checkpoint

pytestmark = [pytest.mark.workflow, pytest.mark.slow]
SAMPLE = REPO / "tests" / "data" / "bad" / "shell_metachar_ids.fa"
PLAN = "results/embedding/samples/plan/plan.json"


def own_models(work, tiny_models):
    """Copies of the tiny models inside the working directory (so that they can be swapped)."""
    models = work / "m"
    models.mkdir(parents=True)
    own = {}
    for key, src in tiny_models.items():
        dest = models / os.path.basename(src)
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, dest)
        own[key] = dest
    return own


def scores(work):
    return (work / "results" / "s" / "prediction_results.tsv").read_text()


def swap_in_place(path, new):
    """Replace `path` by `new`'s bytes, leaving `path` an older modification time than before."""
    before = path.stat()
    shutil.copy(new, path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns - 3_600_000_000_000))


def jobs(proc, rule):
    return len(re.findall(rf"^(?:local)?(?:rule|checkpoint) {rule}:$", proc.stdout + proc.stderr, re.M))


def plan_counts(work):
    plan = json.loads((work / PLAN).read_text())
    return sum(s["esm2"] for s in plan["shards"]), sum(s["dnabert_s"] for s in plan["shards"]), plan["distinct_frames"]


def test_each_swapped_model_reaches_the_scores_and_only_its_dependants_run(tmp_path, tiny_models):
    work = tmp_path / "work"
    models = own_models(work, tiny_models)
    tiny_workdir(work, {k: str(v) for k, v in models.items()}, sheet={"s": SAMPLE})
    snakemake(work, "--cores", "2")
    before = scores(work)

    # 1. the classifier, replaced in place by another one with an older modification time
    (tmp_path / "new").mkdir()
    make_original_classifier(tmp_path / "new" / "500_model.pth", input_dim=96 + 64, seed=99)
    swap_in_place(models["models.classifier"], tmp_path / "new" / "500_model.pth")
    proc = snakemake(work, "--cores", "2")
    assert scores(work) != before, "the changed classifier did not reach the scores"
    assert jobs(proc, "note_model") == 1 and jobs(proc, "classify") == 1  # the classifier's note alone
    assert jobs(proc, "plan") == 0 and jobs(proc, "embed") == 0  # the embeddings were still right
    assert len(list((work / "models" / "converted").glob("500_model-*.safetensors"))) == 2
    before = scores(work)

    # 2. another classifier of the same name elsewhere, while the models folder keeps the old conversion
    other = tmp_path / "elsewhere" / "500_model.pth"
    other.parent.mkdir()
    make_original_classifier(other, input_dim=96 + 64, seed=98)
    config = work / "config" / "config.yaml"
    config.write_text(config.read_text().replace(str(models["models.classifier"]), str(other)))
    snakemake(work, "--cores", "2")
    assert scores(work) != before
    before = scores(work)

    # 3. the ESM-2 checkpoint, replaced in place with an older modification time: ESM-2 embedded again
    new = save_fair_esm_checkpoint(build_tiny_esm2(num_layers=2, embed_dim=64, heads=4, seed=3), tmp_path / "esm")
    swap_in_place(models["models.esm2"], new)
    proc = snakemake(work, "--cores", "2")
    assert scores(work) != before
    esm, dna, distinct = plan_counts(work)
    assert esm == distinct and dna == 0 and jobs(proc, "embed") >= 1
    before = scores(work)

    # 4. DNABERT-S weights, replaced in place with an older modification time: DNABERT-S embedded again
    new, _, _ = build_tiny_dnabert(tmp_path / "dna", hidden_size=96, seed=4, tokenizer=train_tokenizer(256))
    swap_in_place(models["models.dnabert_s"] / "model.safetensors", new / "model.safetensors")
    snakemake(work, "--cores", "2")
    assert scores(work) != before
    esm, dna, distinct = plan_counts(work)
    assert dna == distinct and esm == 0
