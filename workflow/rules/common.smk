# Config and sample-sheet validation, output paths and small input functions.

import hashlib
import json
import signal
import sys
from pathlib import Path

# The workflow's own code, virnucpro/ beside workflow/, is imported from this source tree: here, and in
# every script job, since Snakemake hands this process's sys.path on to the Python scripts it runs. The
# environments in envs/ hold only the third-party stack, so code and rules come from one commit wherever
# the workflow is used from (a clone, or a module of another workflow). Rules read from git (a github()
# module) have no tree on disk: there the package must be installed where Snakemake runs (README).
SOURCE_TREE = Path(str(workflow.current_basedir)).parents[1]
if (SOURCE_TREE / "virnucpro" / "__init__.py").is_file():
    sys.path.insert(0, str(SOURCE_TREE))

try:
    from virnucpro.io.checksums import SUFFIX as CHECKSUM_SUFFIX
    from virnucpro.config import (
        check_classifier,
        check_models,
        read_samples,
        training_sets,
        validate_config,
    )
    from virnucpro.errors import VirNucProError
    from virnucpro.steps.models import KINDS as MODEL_KINDS
    from virnucpro.device import check_device, float8_problem
    from virnucpro.io.status import read_status
    from virnucpro import layout
except ModuleNotFoundError as exc:
    if exc.name != "virnucpro":
        raise
    sys.exit(
        f"configuration error: the virnucpro package is neither beside the rules ({SOURCE_TREE}) "
        "nor installed where Snakemake runs (README: Deploy with snakedeploy)"
    )

try:
    validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))
    SAMPLES = read_samples(
        config["samples"], workflow.source_path("../schemas/samples.schema.yaml")
    )
    TRAIN_SETS = training_sets(config["train"])
except VirNucProError as exc:
    sys.exit(f"configuration error: {exc}")
RESULTS = config["results"]
FRAGMENT_SIZE = config["fragment_size"]
MODELS = config["models"]["dir"]
STORE = config["embed"]["store"]
# ESM-2 in float8, where the run's own check lets it (rule check_float8)
FLOAT8 = config["embed"]["precision"] == "float8"
if FLOAT8 and config["embed"]["device"] == "cpu":
    sys.exit(f"configuration error: {float8_problem('cpu')}")
# the pooled embedding stage of each pool: its plan, members, receipts, logs (virnucpro.layout)
EMBEDDING = f"{RESULTS}/{layout.EMBEDDING}"
# the classifier `snakemake train` writes; models.classifier may name it before it exists
TRAINED = f"{RESULTS}/{layout.TRAINED.format(fragment_size=FRAGMENT_SIZE)}"


def sample_file(path, sample="{sample}"):
    """A file of a sample's folder (`path` from virnucpro.layout); by default the {sample} pattern."""
    return f"{RESULTS}/{sample}/{path}"


def pool_file(path, pool="{pool}"):
    """A file of a pool's embedding folder (`path` from virnucpro.layout); by default the {pool} pattern."""
    return f"{EMBEDDING}/{pool}/{path}"


def shown(output, folder, category, subcategory=None):
    """A `virnucpro.layout.Output` under `folder`, as `report()` shows it where it has a caption."""
    path = f"{folder}/{output.path}"
    if output.caption is None:
        return path
    labels = {"result": output.result, **({"form": output.form} if output.form else {})}
    return report(
        path,
        caption=f"../report/{output.caption}.rst",
        category=category,
        subcategory=subcategory,
        labels=labels,
    )


def model_path(key):
    """A model setting as a path: kept as given when it names an existing file, an absolute path or the
    classifier `snakemake train` writes, otherwise looked up in models.dir (where the download rules put it).
    """
    value = Path(config["models"][key])
    if value.is_absolute() or value.exists() or value == Path(TRAINED):
        return str(value)
    return str(Path(MODELS) / value)


try:
    check_models(
        {key: model_path(key) for key in MODEL_KINDS},
        MODELS,
        made_here=[TRAINED],
    )
    check_classifier(model_path("classifier"), FRAGMENT_SIZE, MODELS, TRAINED)
except VirNucProError as exc:
    sys.exit(f"configuration error: {exc}")


def check_devices():
    """At the start of the run (onstart), before any job: whether jobs run on this machine is known only
    then (not in a dry run). embed.device auto needs a GPU here or on the cluster's nodes; float8 needs
    GPUs that have e4m3 units."""
    try:
        check_device(config["embed"]["device"], workflow.local_exec)
    except VirNucProError as exc:
        sys.exit(f"configuration error: {exc}")
    device = config["embed"]["device"]
    if FLOAT8 and (problem := float8_problem(device, workflow.local_exec)):
        sys.exit(f"configuration error: {problem}")


def note(kind):
    """The `models` step's note of a model (virnucpro.io.notes), named after the source's path."""
    source = str(Path(model_path(kind)).resolve())
    return f"{MODELS}/{layout.NOTES}/{kind}-{hashlib.sha1(source.encode()).hexdigest()[:8]}.json"


def stamp(kind):
    """Params: size and modification time of a model's files now (its checksum records aside). A file
    replaced in place, even by an older one (cp -p, rsync -a), changes it, so the step that notes the
    model runs again."""
    path = Path(model_path(kind))
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    files = [p for p in files if p.is_file() and not p.name.endswith(CHECKSUM_SUFFIX)]
    return [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]


def sample_input(wildcards):
    """Input file of a sample, or of a training set (named train-viral-N / train-other-N)."""
    if wildcards.sample in SAMPLES:
        return SAMPLES[wildcards.sample]
    return TRAIN_SETS[wildcards.sample]


def pool_of(name):
    """The pool a member belongs to: "samples", or "train" for the training sets."""
    return "samples" if name in SAMPLES else "train"


def pool_members(pool):
    return list(SAMPLES if pool == "samples" else TRAIN_SETS)


def prepared(name):
    """Input function: the file `name` of `prepare` (virnucpro.layout.PREPARE) of every member of the pool."""
    return lambda wildcards: [
        sample_file(layout.PREPARE[name], m) for m in pool_members(wildcards.pool)
    ]


def member_plan(name):
    """A member's plan (virnucpro.io.members), after the plan checkpoint has run: beside the plan, and
    rewritten only where its content changed (virnucpro.steps.plan)."""
    checkpoints.plan.get(pool=pool_of(name))
    return pool_file(f"{layout.MEMBERS}/{name}.json", pool_of(name))


def plan_receipts(wildcards):
    """Input of `list_receipts`: the receipts of every shard of the pool's plan (after the plan has run)."""
    plan = checkpoints.plan.get(pool=wildcards.pool).output[0]
    shards = json.loads(Path(plan, layout.PLAN_FILE).read_text())["shards"]
    return [pool_file(f"{layout.RECEIPTS}/{s['name']}.json") for s in shards]


def receipt_list(name, output=None):
    """Input: the pool's list of receipts (rule `list_receipts`); after the plan checkpoint has run. A
    step reading a member's features (making `output`) waits for every shard of the plan. The list is
    ancient input when nothing of the member is to embed and its plan is not newer than `output`: then
    shards embedded for other members (an added sample) do not make the step run again. Otherwise it is
    plain input, so that Snakemake runs the step (an ancient input whose producer runs hides the step's
    own reasons to run)."""
    plan = checkpoints.plan.get(pool=pool_of(name)).output[0]
    receipts = pool_file(layout.RECEIPT_LIST, pool_of(name))
    pending = json.loads(Path(plan, layout.PLAN_FILE).read_text())["member_shards"].get(
        name
    )
    member, out = Path(member_plan(name)), Path(output or "")
    current = (
        output and out.is_file() and member.stat().st_mtime_ns <= out.stat().st_mtime_ns
    )
    return [ancient(receipts)] if current and pending == [] else [receipts]


def threads_by_size(path, mb_per_thread, most):
    """`threads:` of a per-sample step whose work grows with the file `path` (a pattern of the rule's
    wildcards): one thread per `mb_per_thread` MB of it, at least 1 and at most `most` (Snakemake also
    caps it at --cores); 1 while the file is still to be made. Small samples take one core each and run
    side by side; a large one gets several (classify: its matrix products)."""

    def threads(wildcards):
        file = Path(path.format(**wildcards))
        mb = file.stat().st_size / 1e6 if file.is_file() else 0
        return max(1, min(most, int(mb // mb_per_thread)))

    return threads


def float8_decision(wildcards):
    """Input function of the plan: the float8 guard's decision, for the samples of a float8 run."""
    if FLOAT8 and wildcards.pool == "samples":
        return pool_file(layout.FLOAT8_DECISION, "samples")
    return []


def status_file(sample):
    return sample_file(layout.PREPARE["status"], sample)


def recorded_failure(sample):
    """The error the sample's prepare status records now, if it has one (None otherwise)."""
    status = Path(status_file(sample))
    return read_status(status) if status.is_file() else None


def front_end_failed():
    """{sample: error} of the samples whose front end failed, from their prepare status. Raises
    Snakemake's IncompleteCheckpointException until the samples' plan checkpoint is complete and up to
    date: the plan reads every status, so then each one is current (a fixed input has been prepared
    again)."""
    checkpoints.plan.get(pool="samples")
    statuses = {s: read_status(status_file(s)) for s in SAMPLES}
    return {s: error for s, error in statuses.items() if error}


def finished(name):
    """Input function: the file `name` of every sample whose front end went through (after the plan)."""

    def files(wildcards):
        failed = front_end_failed()
        return [sample_file(name, s) for s in SAMPLES if s not in failed]

    return files


def all_results(wildcards):
    """Input of `all`: every sample's results and the run files. A sample whose prepare status records
    an error as the run starts is asked only for its classification, which fails with that error (the
    run ends non-zero), not for the summary outputs it cannot have (`snakemake --report` would wait
    for them). Read before this run's prepare jobs, such a status may be stale; a sample whose input
    was fixed still gets all its results in this run, through the overview, which waits for the plan
    and then asks for the summary of every sample whose front end went through (`finished`).
    """
    files = [f"{RESULTS}/{output.path}" for output in layout.OVERVIEW.values()]
    files += [f"{RESULTS}/{layout.FLOAT8_TABLE.path}"] if FLOAT8 else []
    summary = [output.path for output in layout.SUMMARY.values()]
    for s in SAMPLES:
        names = [layout.PREDICTIONS] + ([] if recorded_failure(s) else summary)
        files += [sample_file(name, s) for name in names]
    return files


def finished_receipts(wildcards):
    """Input function: the embedding receipts of the shards that hold the new frames of every sample
    whose front end went through (after the plan: plan.json's member_shards), for the run's provenance.
    """
    failed = front_end_failed()
    plan = checkpoints.plan.get(pool="samples").output[0]
    pending = json.loads(Path(plan, layout.PLAN_FILE).read_text())["member_shards"]
    shards = dict.fromkeys(
        s for m in SAMPLES if m not in failed for s in pending.get(m, [])
    )
    return [pool_file(f"{layout.RECEIPTS}/{s}.json", "samples") for s in shards]


def run_settings():
    """Every setting that shapes the results, as `section.name` -> text, for the report."""
    flat = {}
    for key, value in config.items():
        if key == "resources":  # where jobs run, not what they compute
            continue
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for name, v in items:
            flat[key if name is None else f"{key}.{name}"] = str(v)
    return flat


def training(label):
    """Input function: the member plan of every training set with `label` (viral or other), in order."""
    names = [n for n in TRAIN_SETS if n.startswith(f"train-{label}-")]
    return lambda wildcards: [member_plan(n) for n in names]


def training_receipt_list(wildcards):
    """Input function: the training sets' list of receipts (plain input: no output given)."""
    return receipt_list(next(iter(TRAIN_SETS))) if TRAIN_SETS else []


INTERRUPTED = []  # the signals that reached Snakemake during the run (note_interrupts)


def note_interrupts():
    """At the start of the run (onstart, once Snakemake has set its own handlers): note SIGINT and
    SIGTERM in INTERRUPTED, then hand each to the handler it had, so Snakemake stops as it would.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)

        def noted(signum, frame, previous=previous):
            INTERRUPTED.append(signal.Signals(signum).name)
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:  # the default action: end by the signal
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)

        signal.signal(sig, noted)


def run_summary():
    """After a failed run: the samples that did not finish and why (interrupted, when a signal stopped
    the run), and the models still missing (URL, destination, setting), in one block at the end.
    """
    from virnucpro.steps.models import missing_models
    from virnucpro.steps.unfinished import unfinished

    interrupted = INTERRUPTED[0] if INTERRUPTED else None
    lines = unfinished(RESULTS, list(SAMPLES), interrupted)
    lines += missing_models({k: model_path(k) for k in MODEL_KINDS})
    if lines:
        print("\n".join(lines), file=sys.stderr)
