"""The `virnucpro` command: one subcommand per workflow step.

Each subcommand parses its arguments here and calls the same package function as the workflow's rule;
heavy modules (torch, h5py) are imported inside the handlers so that `virnucpro prepare` starts fast.
"""

import argparse
import logging
import sys
from pathlib import Path

from virnucpro import __version__, defaults
from virnucpro.device import SETTINGS as DEVICES
from virnucpro.errors import VirNucProError
from virnucpro.harness import DATE_FORMAT, LOG_FORMAT
from virnucpro.layout import MEMBERS, OVERVIEW, SUMMARY
from virnucpro.steps.models import KINDS

log = logging.getLogger("virnucpro")


def _prepare(args):
    from virnucpro.steps.prepare import prepare

    prepare(args.input, args.fragment_size, args.out_dna, args.out_protein, manifest=args.manifest,
            status=args.status, out_fragments=args.out_fragments, max_bp=args.max_record_bp,
            min_length=args.min_length)


def _members(pairs):
    members = {}
    for name, dna, protein in pairs:
        if name in members:
            raise VirNucProError(f"--sample {name} is given twice")
        members[name] = (dna, protein)
    return members


def _encoder_notes(args, float8=False):
    from virnucpro.steps.models import make_note

    return {"esm2": make_note("esm2", args.esm2, args.models_dir, float8=float8),
            "dnabert_s": make_note("dnabert_s", args.dnabert_s)}


def _plan(args):
    from virnucpro.steps.plan import plan

    members, statuses = _members(args.sample), dict(args.status or [])
    if unknown := sorted(set(statuses) - set(members)):
        raise VirNucProError(f"--status {unknown[0]}: no --sample of that name")
    members_dir = args.members_dir or Path(args.out).parent / MEMBERS
    plan(members, args.out, members_dir, args.store, _encoder_notes(args), args.device, args.tokens_per_shard,
         statuses, float8_decision=args.float8_decision)


def _tokens(args):
    return {"esm2": args.esm2_tokens_per_batch, "dnabert_s": args.dnabert_tokens_per_batch}


def _check_float8(args):
    from virnucpro.steps.check_float8 import check_float8
    from virnucpro.steps.models import make_note

    members, statuses = _members(args.sample), dict(args.status or [])
    notes = {**_encoder_notes(args, float8=True), "classifier": make_note("classifier", args.model, args.models_dir)}
    check = {"frames": args.frames, "min_call_agreement": args.min_call_agreement, "min_cosine": args.min_cosine}
    check_float8(members, notes, args.store, {"decision": args.out_decision, "table": args.out_table}, check,
                 device=args.device, statuses=statuses, tokens_per_batch=_tokens(args))


def _embed(args):
    from virnucpro.steps.embed import embed, read_plan

    float8 = read_plan(args.plan).get("esm2_precision") == "float8"
    embed(args.plan, args.shard, _encoder_notes(args, float8), args.out, tokens_per_batch=_tokens(args))


def _classify(args):
    from virnucpro.steps.classify import classify
    from virnucpro.steps.models import make_note

    note = make_note("classifier", args.model, args.models_dir)
    classify(args.member, note, fragment_size=args.fragment_size, out=args.out)


def _features(args):
    from virnucpro.io.features import write_features

    write_features(args.member, args.out)


def _note_model(args):
    from virnucpro.steps.models import note_model

    print(note_model(args.kind, args.source, args.models_dir, args.out, float8=args.float8)["file"])


def _summarize(args):
    from virnucpro.steps.summarize import Settings, summarize

    out = Path(args.out_dir)
    settings = Settings(args.threshold, args.top_sequences, args.max_gap_fragments, args.min_viral_fragments,
                        args.max_table_rows)
    summarize(args.predictions, args.manifest, args.fasta, {name: out / o.path for name, o in SUMMARY.items()},
              args.fragment_size, args.sample, settings, args.max_record_bp)


def _overview(args):
    from virnucpro.io.status import read_status
    from virnucpro.steps.overview import write_run_files
    from virnucpro.steps.unfinished import sample_reason

    out = Path(args.out_dir)
    settings = dict(s.partition("=")[::2] for s in args.setting or [])
    if not args.samples:
        raise VirNucProError("overview: give every sample, with --sample or --unfinished")
    tables = {s[0]: (s[1], s[2]) for s in args.samples if len(s) == 3}
    failed = {s[0]: s[1] for s in args.samples if len(s) == 2}
    for name, status in failed.items():
        if not read_status(status):
            raise VirNucProError(f"--unfinished {name}: {status} records no error: give its tables with --sample")
    write_run_files([s[0] for s in args.samples], tables, {n: sample_reason(st) for n, st in failed.items()},
                    args.note, settings, {name: out / o.path for name, o in OVERVIEW.items()},
                    receipts=args.receipt or [], float8_check=args.float8_check)


def _train(args):
    from virnucpro.steps.train import train

    labelled = [(m, 1) for m in args.viral] + [(m, 0) for m in args.other]
    train(labelled, args.out_model, args.metrics, args.fragment_size, seed=args.seed)


def _download_model(args):
    from virnucpro.steps.models import download_model

    download_model(args.kind, args.output)


def _verify_store(args):
    from virnucpro.io.integrity import verify

    found = verify(args.store, args.models_dir, args.quarantine)
    for path, problem in found.bad:
        print(f"BAD {path}: {problem}")
    where = f"{args.store}" + (f" and {args.models_dir}" if args.models_dir else "")
    if found.bad:
        raise VirNucProError(f"{len(found.bad)} bad file(s) in {where} (listed above), {found.checked} checked")
    older = f"; {len(found.older)} folder(s) of an older store format not checked (never used)" if found.older else ""
    print(f"all {found.checked} file(s) good in {where} ({found.namespaces} namespace folder(s){older})")


# ------------------------------------------------------------------------------------ option groups


def _fragment_size(p):
    sizes = " or ".join(map(str, defaults.FRAGMENT_SIZES))
    p.add_argument("--fragment-size", type=int, required=True, choices=defaults.FRAGMENT_SIZES,
                   help=f"fragment length in bp ({sizes}); must match the classifier")


def _models_dir(p):
    p.add_argument("--models-dir", required=True, help="where converted models are kept (converted/)")


def _encoders(p):
    p.add_argument("--esm2", required=True, help="fair-esm ESM-2 checkpoint file or model name")
    p.add_argument("--dnabert-s", required=True, help="DNABERT-S snapshot directory")
    _models_dir(p)


def _member(p):
    p.add_argument("--member", required=True, help="the sample's plan, beside the embedding plan (members/NAME.json, "
                                                   "with its frame list members/NAME.frames.tsv)")


def _samples(p):
    p.add_argument("--sample", nargs=3, action="append", required=True, metavar=("NAME", "FRAMES_FNA", "FRAMES_FAA"),
                   help="a sample and its frames from `prepare` (repeat for each sample)")
    p.add_argument("--status", nargs=2, action="append", metavar=("NAME", "STATUS_JSON"),
                   help="a sample's status from `prepare --status`: a sample whose input was bad is left out")


def _tokens_per_batch(p, encoder, name, budgets):
    p.add_argument(f"--{encoder}-tokens-per-batch", type=int,
                   help=f"token budget of one packed {name} batch (default: {budgets['cuda']} on GPU, "
                        f"{budgets['cpu']} on CPU)")


def _with_default(p, option, value, text, kind=int):
    p.add_argument(option, type=kind, default=value, help=f"{text} (default {value})")


def _command(sub, name, handler, summary, description=None):
    p = sub.add_parser(name, help=summary, description=description or summary)
    p.set_defaults(handler=handler)
    return p


# ------------------------------------------------------------------------------------ subcommands


def _max_record_bp(p):
    p.add_argument("--max-record-bp", type=int, default=defaults.MAX_RECORD_BP,
                   help=f"longest sequence read; a longer record is refused (default {defaults.MAX_RECORD_BP:_})")


def _add_front(sub):
    p = _command(sub, "prepare", _prepare, "fragments and stop-free six-frame translations",
                 "Cut every sequence into fragments and keep the stop-free frames, as the original does.")
    p.add_argument("input", help="FASTA or FASTQ, plain or gzip (detected from content)")
    _fragment_size(p)
    p.add_argument("--out-dna", required=True, help="kept frames, nucleotides (for DNABERT-S)")
    p.add_argument("--out-protein", required=True, help="kept frames, proteins (for ESM-2)")
    p.add_argument("--out-fragments", help="the fragments themselves, as the original writes them")
    p.add_argument("--manifest", help="TSV with one row per input sequence")
    p.add_argument("--status", help="as the workflow: record bad input here (JSON) and write empty outputs, "
                                    "instead of stopping with the error")
    _max_record_bp(p)
    p.add_argument("--min-length", type=int, default=defaults.MIN_LENGTH,
                   help="a shorter sequence gets no fragment, no frame and no call (default: the fragment size; "
                        "0 cuts every sequence, as the original)")

    p = _command(sub, "plan", _plan, "plan the embeddings of several samples into pooled shards",
                 "Key every frame of every sample by content, leave out what the embedding store holds, "
                 "and cut the rest into shards balanced by ESM-2 tokens.")
    _samples(p)
    _encoders(p)
    p.add_argument("--store", required=True, help="embedding store directory (shared between runs)")
    p.add_argument("--device", default="auto", choices=DEVICES,
                   help="where the embedding jobs will run; auto: cuda when a GPU is visible here")
    _with_default(p, "--tokens-per-shard", defaults.TOKENS_PER_SHARD, "ESM-2 tokens per shard")
    p.add_argument("--float8-decision", help="the decision of `check-float8`: ESM-2 planned in the precision it names")
    p.add_argument("--out", required=True, help="the plan directory to write")
    p.add_argument("--members-dir", help=f"where each sample's plan goes (default: {MEMBERS}/ beside --out)")
    _add_check_float8(sub)


def _add_check_float8(sub):
    p = _command(sub, "check-float8", _check_float8, "check float8 ESM-2 embeddings on a run's own frames",
                 "Embed a calibration subset of the samples' frames with ESM-2 in float16 and in float8, score "
                 "both with the classifier, write the per-frame table and the decision the plan follows.")
    _samples(p)
    _encoders(p)
    p.add_argument("--model", required=True, help="the classifier (original 300/500_model.pth or .safetensors)")
    p.add_argument("--store", required=True, help="embedding store directory (the measurement is kept there)")
    p.add_argument("--device", default="auto", choices=DEVICES, help="where to embed (float8 needs CUDA)")
    _with_default(p, "--frames", defaults.FLOAT8_CHECK_FRAMES, "calibration frames")
    _with_default(p, "--min-call-agreement", defaults.FLOAT8_MIN_CALL_AGREEMENT, "least call agreement", float)
    _with_default(p, "--min-cosine", defaults.FLOAT8_MIN_COSINE, "least cosine", float)
    _tokens_per_batch(p, "esm2", "ESM-2", defaults.ESM2_TOKENS_PER_BATCH)
    _tokens_per_batch(p, "dnabert", "DNABERT-S", defaults.DNABERT_TOKENS_PER_BATCH)
    p.add_argument("--out-decision", required=True, help="the decision to write (JSON)")
    p.add_argument("--out-table", required=True, help="the per-frame table to write (TSV)")


def _add_embed(sub):
    p = _command(sub, "embed", _embed, "embed one shard of a plan with ESM-2 and DNABERT-S into the store",
                 "Load both encoders once on the plan's device, embed the shard's frames, write them to the "
                 "embedding store and a receipt.")
    p.add_argument("plan", help="the plan directory")
    p.add_argument("shard", help="the shard's name (plan.json lists them)")
    _encoders(p)
    _tokens_per_batch(p, "esm2", "ESM-2", defaults.ESM2_TOKENS_PER_BATCH)
    _tokens_per_batch(p, "dnabert", "DNABERT-S", defaults.DNABERT_TOKENS_PER_BATCH)
    p.add_argument("--out", required=True, help="the receipt to write (JSON)")

    p = _command(sub, "classify", _classify, "score a sample's frames with the VirNucPro classifier",
                 "Read the sample's features from the embedding store and write the original's prediction table.")
    _member(p)
    p.add_argument("--model", required=True, help="original 300/500_model.pth, or our .safetensors classifier")
    _models_dir(p)
    _fragment_size(p)
    p.add_argument("--out", required=True, help="prediction table (the original's columns)")

    p = _command(sub, "features", _features, "export a sample's classifier features from the store",
                 "Write the DNABERT-S + ESM-2 features of a sample's frames to an HDF5 file (ids, embeddings).")
    _member(p)
    p.add_argument("--out", required=True, help="feature file (HDF5)")

    p = _command(sub, "note-model", _note_model, "note a model: checksum it, convert it once, write its note",
                 "The models step for one model file: checksum records, the conversion the steps load (ESM-2: "
                 "fair-esm checkpoint -> float16 safetensors; classifier: original .pth -> safetensors; "
                 "DNABERT-S: used as it is) and the model's note. Prints the path of the file the steps load.")
    p.add_argument("kind", choices=list(KINDS), help="which model the file is")
    p.add_argument("source", help="the fair-esm .pt, the DNABERT-S folder or the original 300/500_model.pth")
    _models_dir(p)
    p.add_argument("--float8", action="store_true", help="ESM-2: also make the float8 file (embed.precision float8)")
    p.add_argument("--out", required=True, help="the model's note to write (JSON; the steps read models from it)")


def _add_results(sub):
    p = _command(sub, "summarize", _summarize, "a sample's tables, viral regions, tracks, viral FASTA and plots",
                 "Per-fragment calls, per-sequence summary, viral regions, genome-browser tracks, the original's "
                 "files, the viral sequences, plots and table pages of one sample.")
    p.add_argument("--predictions", required=True, help="prediction table of the whole sample")
    p.add_argument("--manifest", required=True, help="sequences.tsv from `prepare`")
    p.add_argument("--fasta", required=True, help="the sample's input sequences")
    _fragment_size(p)
    p.add_argument("--out-dir", required=True, help="the sample's folder: " + ", ".join(o.path for o in SUMMARY.values()))
    _with_default(p, "--threshold", defaults.VIRAL_FRACTION_THRESHOLD, "viral fraction for a viral call", float)
    _with_default(p, "--top-sequences", defaults.PLOT_TOP_SEQUENCES, "sequences in the along-sequence plot")
    p.add_argument("--sample", default="", help="the sample's name, for plot titles and tracks")
    _max_record_bp(p)
    _with_default(p, "--max-gap-fragments", defaults.MAX_GAP_FRAGMENTS,
                  "viral regions: fragments allowed between two viral ones of a region")
    _with_default(p, "--min-viral-fragments", defaults.MIN_VIRAL_FRAGMENTS, "viral regions: fewest viral fragments")
    _with_default(p, "--max-table-rows", defaults.MAX_TABLE_ROWS, "rows per table in the HTML pages")

    p = _command(sub, "overview", _overview, "the run's overview of all samples, the models and the settings",
                 "Write overview.tsv (one row per sample, in the order given), unfinished.tsv (the samples "
                 "that did not finish, and why), models.tsv (every model file with its sha256, from the notes), "
                 "parameters.tsv, all_sequences.tsv and all_viral_regions.tsv (every finished sample's rows under a "
                 "sample column), provenance.json (versions, git commit, devices, precision, models, settings), "
                 "and HTML tables for a report (in report/: overview.html, unfinished.html, models.html, "
                 "provenance.html).")
    p.add_argument("--sample", nargs=3, action="append", dest="samples", default=[],
                   metavar=("NAME", "SEQUENCE_SUMMARY", "VIRAL_REGIONS"),
                   help="a sample and its sequence_summary.tsv and viral_regions.tsv (repeat for each sample)")
    p.add_argument("--unfinished", nargs=2, action="append", dest="samples", metavar=("NAME", "STATUS_JSON"),
                   help="a sample whose front end failed, and its status from `prepare --status` (repeatable)")
    p.add_argument("--note", action="append", required=True, help="a model note (repeat for each model)")
    p.add_argument("--setting", action="append", metavar="NAME=VALUE", help="a setting for parameters.tsv (repeatable)")
    p.add_argument("--receipt", action="append", help="an embedding shard's receipt, for the devices in "
                   "provenance.json (repeatable)")
    p.add_argument("--float8-check", help="the float8 check's decision (float8_check.json), for provenance.json")
    p.add_argument("--out-dir", required=True, help="folder for the run files (overview.tsv, ...)")

    p = _command(sub, "train", _train, "train the classifier on labelled training sets",
                 "The original recipe on the features of labelled training sets, read from the embedding store.")
    for label in ("viral", "other"):
        p.add_argument(f"--{label}", action="append", required=True, metavar="MEMBER_JSON",
                       help=f"a {label} training set's plan, beside the embedding plan (repeatable)")
    _fragment_size(p)
    p.add_argument("--out-model", required=True, help="trained classifier (.safetensors)")
    p.add_argument("--metrics", required=True, help="held-out metrics (TSV)")
    _with_default(p, "--seed", defaults.TRAIN_SEED, "seed of the split, the initial weights and the minibatches")

    p = _command(sub, "download-model", _download_model, "fetch and verify a model file")
    p.add_argument("kind", choices=list(KINDS),
                   help="esm2: a fair-esm checkpoint; dnabert_s: the DNABERT-S snapshot; classifier: 300/500_model.pth")
    p.add_argument("output", help="file (or directory, for dnabert_s) to create, named as in models.dir")


def _add_checks(sub):
    p = _command(sub, "verify-store", _verify_store, "check a whole embedding store (and models folder) in full",
                 "Check every file of an embedding store in full: each namespace.json, every chunk of every "
                 "store file against its checksums; with --models-dir, the full sha256 of every model file "
                 "against its checksum record. Lists every bad file; exits non-zero when there is one.")
    p.add_argument("store", help="the embedding store directory (embed.store)")
    p.add_argument("--models-dir", help="also check the model files of this folder (models.dir), converted/ included")
    p.add_argument("--quarantine", action="store_true",
                   help="move every bad store file aside into quarantine/ of its namespace folder, as a plan "
                        "would (its frames are then embedded again by the next run); model files are only listed")


def build_parser():
    parser = argparse.ArgumentParser(prog="virnucpro", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_front(sub)
    _add_embed(sub)
    _add_results(sub)
    _add_checks(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format=LOG_FORMAT,
        datefmt=DATE_FORMAT,
        stream=sys.stderr,
    )
    try:
        args.handler(args)
    except VirNucProError as exc:
        print(f"virnucpro {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
