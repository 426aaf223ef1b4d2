"""The `virnucpro` command: one subcommand per workflow step.

Each subcommand parses its arguments here and calls the same package function as the workflow's rule;
heavy modules (torch, h5py) are imported inside the handlers so that `virnucpro prepare` starts fast.
"""

import argparse
import logging
import sys
from pathlib import Path

from virnucpro import __version__
from virnucpro.errors import VirNucProError
from virnucpro.logs import DATE_FORMAT, LOG_FORMAT

log = logging.getLogger("virnucpro")
SIZES = [300, 500]
DEVICES = ["auto", "cpu", "cuda"]


def _prepare(args):
    from virnucpro.steps.prepare import prepare

    prepare(args.input, fragment_size=args.fragment_size, out_dna=args.out_dna, out_protein=args.out_protein,
            out_fragments=args.out_fragments, manifest=args.manifest)


def _members(pairs):
    members = {}
    for name, dna, protein in pairs:
        if name in members:
            raise VirNucProError(f"--sample {name} is given twice")
        members[name] = (dna, protein)
    return members


def _encoder_notes(args):
    from virnucpro.io.converted import model_note

    return {"esm2": model_note("esm2", args.esm2, args.models_dir),
            "dnabert_s": model_note("dnabert_s", args.dnabert_s)}


def _plan(args):
    from virnucpro.steps.plan import plan_run

    plan_run(_members(args.sample), args.out, args.store, _encoder_notes(args), args.device, args.tokens_per_shard)


def _embed(args):
    from virnucpro.steps.embed import embed_shard

    embed_shard(args.plan, args.shard, _encoder_notes(args), args.out,
                esm2_tokens_per_batch=args.esm2_tokens_per_batch,
                dnabert_tokens_per_batch=args.dnabert_tokens_per_batch)


def _classify(args):
    from virnucpro.io.converted import model_note
    from virnucpro.steps.classify import classify

    note = model_note("classifier", args.model, args.models_dir)
    classify(args.frames_dna, args.frames_protein, args.member, note, fragment_size=args.fragment_size, out=args.out)


def _features(args):
    from virnucpro.io.embeddings import write_embeddings
    from virnucpro.steps.merge import gather_features, read_member

    ids, values = gather_features(args.frames_dna, args.frames_protein, args.member)
    record = read_member(args.member)
    attrs = {"content": "classifier features: DNABERT-S embedding then ESM-2 embedding",
             **{f"{e}_namespace": ns["id"] for e, ns in record["namespaces"].items()}}
    write_embeddings(args.out, ids, values, attrs)


def _convert(args):
    from virnucpro.io.converted import ensure_converted

    out, _ = ensure_converted(args.kind, args.source, args.models_dir)
    print(out)


def _summarize(args):
    from virnucpro.steps.summarize import summarize

    out = Path(args.out_dir)
    summarize(
        predictions=args.predictions, manifest=args.manifest, fasta=args.fasta,
        fragment_calls=out / "fragment_calls.tsv", sequence_summary=out / "sequence_summary.tsv",
        viral_fasta=out / "viral.fna", histogram=out / "plots" / "score_histogram.png",
        along=out / "plots" / "score_along_sequences.png", threshold=args.threshold,
        top_sequences=args.top_sequences, fragment_size=args.fragment_size, sample=args.sample,
        viral_regions=out / "viral_regions.tsv", score_track=out / "tracks" / "virus_score.bedGraph",
        region_track=out / "tracks" / "viral_regions.bed", original_predictions=out / "prediction_results.txt",
        original_calls=out / "prediction_results_highestscore.csv",
        sequences_view=out / "report" / "sequence_summary.html", regions_view=out / "report" / "viral_regions.html",
        max_gap_fragments=args.max_gap_fragments, min_viral_fragments=args.min_viral_fragments,
    )


def _train(args):
    from virnucpro.steps.train import train_classifier

    labelled = [(*m, 1) for m in args.viral] + [(*m, 0) for m in args.other]
    train_classifier(labelled, args.out_model, args.metrics, args.fragment_size, seed=args.seed)


def _download(args):
    from virnucpro.steps.fetch import download_model

    download_model(args.kind, args.output)


def _fragment_size(p):
    p.add_argument("--fragment-size", type=int, required=True, choices=SIZES,
                   help="fragment length in bp (300 or 500); must match the classifier")


def _member_frames(p):
    p.add_argument("--frames-dna", required=True, help="frames.fna of the sample, from `prepare`")
    p.add_argument("--frames-protein", required=True, help="frames.faa of the sample, from `prepare`")
    p.add_argument("--member", required=True, help="the sample's record of the embedding plan (members/NAME.json)")


def _command(sub, name, handler, summary, description=None):
    p = sub.add_parser(name, help=summary, description=description or summary)
    p.set_defaults(handler=handler)
    return p


def _add_front(sub):
    p = _command(sub, "prepare", _prepare, "fragments and stop-free six-frame translations",
                 "Cut every sequence into fragments and keep the stop-free frames, as the original does.")
    p.add_argument("input", help="FASTA or FASTQ, plain or gzip (detected from content)")
    _fragment_size(p)
    p.add_argument("--out-dna", required=True, help="kept frames, nucleotides (for DNABERT-S)")
    p.add_argument("--out-protein", required=True, help="kept frames, proteins (for ESM-2)")
    p.add_argument("--out-fragments", help="the fragments themselves, as the original writes them")
    p.add_argument("--manifest", help="TSV with one row per input sequence")

    p = _command(sub, "plan", _plan, "plan the embeddings of several samples into pooled shards",
                 "Key every frame of every sample by content, leave out what the embedding store holds, "
                 "and cut the rest into shards balanced by ESM-2 tokens.")
    p.add_argument("--sample", nargs=3, action="append", required=True, metavar=("NAME", "FRAMES_FNA", "FRAMES_FAA"),
                   help="a sample and its frames from `prepare` (repeat for each sample)")
    p.add_argument("--esm2", required=True, help="fair-esm ESM-2 checkpoint file or model name")
    p.add_argument("--dnabert-s", required=True, help="DNABERT-S snapshot directory")
    p.add_argument("--models-dir", required=True, help="where converted models are kept (converted/)")
    p.add_argument("--store", required=True, help="embedding store directory (shared between runs)")
    p.add_argument("--device", default="auto", choices=DEVICES,
                   help="where the embedding jobs will run; auto: cuda when a GPU is visible here")
    p.add_argument("--tokens-per-shard", type=int, default=50_000_000, help="ESM-2 tokens per shard")
    p.add_argument("--out", required=True, help="the plan directory to write")


def _add_embed(sub):
    p = _command(sub, "embed", _embed, "embed one shard of a plan with ESM-2 and DNABERT-S into the store",
                 "Load both encoders once on the plan's device, embed the shard's frames, write them to the "
                 "embedding store and a receipt.")
    p.add_argument("plan", help="the plan directory")
    p.add_argument("shard", help="the shard's name (plan.json lists them)")
    p.add_argument("--esm2", required=True, help="fair-esm ESM-2 checkpoint file or model name")
    p.add_argument("--dnabert-s", required=True, help="DNABERT-S snapshot directory")
    p.add_argument("--models-dir", required=True, help="where converted models are kept (converted/)")
    p.add_argument("--esm2-tokens-per-batch", type=int,
                   help="token budget of one packed ESM-2 batch (default: 65536 on GPU, 4096 on CPU)")
    p.add_argument("--dnabert-tokens-per-batch", type=int,
                   help="token budget of one packed DNABERT-S batch (default: 65536 on GPU, 8192 on CPU)")
    p.add_argument("--out", required=True, help="the receipt to write (JSON)")

    p = _command(sub, "classify", _classify, "score a sample's frames with the VirNucPro classifier",
                 "Read the sample's features from the embedding store and write the original's prediction table.")
    _member_frames(p)
    p.add_argument("--model", required=True, help="original 300/500_model.pth, or our .safetensors classifier")
    p.add_argument("--models-dir", required=True, help="where converted models are kept (converted/)")
    _fragment_size(p)
    p.add_argument("--out", required=True, help="prediction table (the original's columns)")

    p = _command(sub, "features", _features, "export a sample's classifier features from the store",
                 "Write the DNABERT-S + ESM-2 features of a sample's frames to an HDF5 file (ids, embeddings).")
    _member_frames(p)
    p.add_argument("--out", required=True, help="feature file (HDF5)")

    p = _command(sub, "convert-model", _convert, "convert a model once into the form the steps load",
                 "ESM-2: fair-esm checkpoint -> float16 safetensors; classifier: original .pth -> safetensors. "
                 "Prints the converted file's path.")
    p.add_argument("kind", choices=["esm2", "classifier"], help="which model the file is")
    p.add_argument("source", help="the fair-esm .pt or the original 300/500_model.pth")
    p.add_argument("--models-dir", required=True, help="where converted models are kept (converted/)")


def _add_results(sub):
    p = _command(sub, "summarize", _summarize, "a sample's tables, viral regions, tracks, viral FASTA and plots",
                 "Per-fragment calls, per-sequence summary, viral regions, genome-browser tracks, the original's "
                 "files, the viral sequences, plots and table pages of one sample.")
    p.add_argument("--predictions", required=True, help="prediction table of the whole sample")
    p.add_argument("--manifest", required=True, help="sequences.tsv from `prepare`")
    p.add_argument("--fasta", required=True, help="the sample's input sequences")
    _fragment_size(p)
    p.add_argument("--out-dir", required=True, help="folder for the tables, viral.fna and plots/")
    p.add_argument("--threshold", type=float, default=0.5, help="viral fraction for a viral call")
    p.add_argument("--top-sequences", type=int, default=20, help="sequences in the along-sequence plot")
    p.add_argument("--sample", default="", help="the sample's name, for plot titles and tracks")
    p.add_argument("--max-gap-fragments", type=int, default=1,
                   help="viral regions: fragments allowed between two viral ones of a region")
    p.add_argument("--min-viral-fragments", type=int, default=2, help="viral regions: fewest viral fragments")

    p = _command(sub, "train", _train, "train the classifier on labelled training sets",
                 "The original recipe on the features of labelled training sets, read from the embedding store.")
    for label in ("viral", "other"):
        p.add_argument(f"--{label}", nargs=3, action="append", required=True,
                       metavar=("FRAMES_FNA", "FRAMES_FAA", "MEMBER_JSON"),
                       help=f"a {label} training set: its frames and its record of the embedding plan (repeatable)")
    _fragment_size(p)
    p.add_argument("--out-model", required=True, help="trained classifier (.safetensors)")
    p.add_argument("--metrics", required=True, help="held-out metrics (TSV)")
    p.add_argument("--seed", type=int, default=42, help="seed of the split, the initial weights and the batches")

    p = _command(sub, "download-model", _download, "fetch and verify a model file")
    p.add_argument("kind", choices=["esm2", "dnabert_s", "classifier"],
                   help="esm2: a fair-esm checkpoint; dnabert_s: the DNABERT-S snapshot; classifier: 300/500_model.pth")
    p.add_argument("output", help="file (or directory, for dnabert_s) to create, named as in models.dir")


def build_parser():
    parser = argparse.ArgumentParser(prog="virnucpro", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_front(sub)
    _add_embed(sub)
    _add_results(sub)
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
