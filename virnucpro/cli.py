"""The `virnucpro` command: one subcommand per workflow step.

Each subcommand parses its arguments here and calls one package function; heavy modules (torch, h5py)
are imported inside the handlers so that `virnucpro prepare` starts fast.
"""

import argparse
import logging
import sys

from virnucpro import __version__
from virnucpro.errors import VirNucProError
from virnucpro.logs import DATE_FORMAT, LOG_FORMAT

log = logging.getLogger("virnucpro")


def _prepare(args):
    from virnucpro.prepare import prepare

    prepare(
        args.input,
        fragment_size=args.fragment_size,
        out_dna=args.out_dna,
        out_protein=args.out_protein,
        out_fragments=args.out_fragments,
        manifest=args.manifest,
    )


def _embed_protein(args):
    from virnucpro.esm2 import embed_protein

    embed_protein(
        args.frames,
        model=args.model,
        out=args.out,
        device=args.device,
        tokens_per_batch=args.tokens_per_batch,
    )


def _embed_dna(args):
    from virnucpro.dnabert import embed_dna

    embed_dna(
        args.frames,
        model_dir=args.model,
        out=args.out,
        device=args.device,
        tokens_per_batch=args.tokens_per_batch,
    )


def _merge(args):
    from virnucpro.features import merge_embeddings

    merge_embeddings(args.dna, args.protein, args.out)


def _classify(args):
    from virnucpro.classifier import classify

    classify(args.features, model=args.model, out=args.out, fragment_size=args.fragment_size)


def _convert_classifier(args):
    from virnucpro.classifier import convert_original

    convert_original(args.original, args.out)


def _summarize(args):
    from pathlib import Path

    from virnucpro.summary import summarize

    out = Path(args.out_dir)
    summarize(
        predictions=args.predictions,
        manifest=args.manifest,
        fasta=args.fasta,
        fragment_calls=out / "fragment_calls.tsv",
        sequence_summary=out / "sequence_summary.tsv",
        viral_fasta=out / "viral.fna",
        histogram=out / "plots" / "score_histogram.png",
        along=out / "plots" / "score_along_sequences.png",
        threshold=args.threshold,
        top_sequences=args.top_sequences,
        fragment_size=args.fragment_size,
    )


def _train(args):
    from virnucpro.train import train_classifier

    labelled = [(p, 1) for p in args.viral] + [(p, 0) for p in args.other]
    train_classifier(labelled, args.out_model, args.metrics, args.fragment_size, seed=args.seed)


def _download(args):
    from virnucpro.models import download_model

    download_model(args.kind, args.output)


def _add_embed_options(p, default_tokens):
    p.add_argument("--out", required=True, help="output HDF5 file (ids, embeddings)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--tokens-per-batch",
        type=int,
        default=None,
        help=f"token budget of one packed batch, special tokens included (default: {default_tokens})",
    )


def build_parser():
    parser = argparse.ArgumentParser(prog="virnucpro", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="fragments and stop-free six-frame translations")
    p.add_argument("input", help="FASTA or FASTQ, plain or gzip (detected from content)")
    p.add_argument("--fragment-size", type=int, required=True, choices=[300, 500])
    p.add_argument("--out-dna", required=True, help="kept frames, nucleotides (for DNABERT-S)")
    p.add_argument("--out-protein", required=True, help="kept frames, proteins (for ESM-2)")
    p.add_argument("--out-fragments", help="the fragments themselves, as the original writes them")
    p.add_argument("--manifest", help="TSV with one row per input sequence")
    p.set_defaults(handler=_prepare)

    p = sub.add_parser("embed-protein", help="ESM-2 embeddings of protein frames (packed)")
    p.add_argument("frames", help="protein FASTA from `prepare`")
    p.add_argument("--model", required=True, help="fair-esm checkpoint file or model name")
    _add_embed_options(p, "65536 on GPU, 4096 on CPU")
    p.set_defaults(handler=_embed_protein)

    p = sub.add_parser("embed-dna", help="DNABERT-S embeddings of nucleotide frames (packed)")
    p.add_argument("frames", help="nucleotide FASTA from `prepare`")
    p.add_argument("--model", required=True, help="DNABERT-S snapshot directory")
    _add_embed_options(p, "65536 on GPU, 8192 on CPU")
    p.set_defaults(handler=_embed_dna)

    p = sub.add_parser("merge", help="join DNABERT-S and ESM-2 embeddings into classifier features")
    p.add_argument("dna", help="DNABERT-S embeddings (HDF5)")
    p.add_argument("protein", help="ESM-2 embeddings (HDF5)")
    p.add_argument("--out", required=True, help="features (HDF5), DNABERT-S values first")
    p.set_defaults(handler=_merge)

    p = sub.add_parser("classify", help="score features with the VirNucPro classifier")
    p.add_argument("features", help="features (HDF5) from `merge`")
    p.add_argument("--model", required=True, help="converted classifier (.safetensors) or original .pth")
    p.add_argument("--out", required=True, help="prediction table (the original's columns)")
    p.add_argument("--fragment-size", type=int, required=True, choices=[300, 500])
    p.set_defaults(handler=_classify)

    p = sub.add_parser("convert-classifier", help="original 300/500_model.pth -> safetensors")
    p.add_argument("original", help="the original pickled classifier, named 300_model.pth or 500_model.pth")
    p.add_argument("--out", required=True, help="converted classifier (.safetensors)")
    p.set_defaults(handler=_convert_classifier)

    p = sub.add_parser("summarize", help="fragment and sequence tables, viral FASTA and plots")
    p.add_argument("--predictions", required=True, help="prediction table of the whole sample")
    p.add_argument("--manifest", required=True, help="sequences.tsv from `prepare`")
    p.add_argument("--fasta", required=True, help="the sample's input sequences")
    p.add_argument("--fragment-size", type=int, required=True, choices=[300, 500])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threshold", type=float, default=0.5, help="viral fraction for a viral call")
    p.add_argument("--top-sequences", type=int, default=20, help="sequences in the along-sequence plot")
    p.set_defaults(handler=_summarize)

    p = sub.add_parser("train", help="train the classifier on labelled feature files")
    p.add_argument("--viral", nargs="+", required=True, help="features (HDF5) of viral frames")
    p.add_argument("--other", nargs="+", required=True, help="features (HDF5) of non-viral frames")
    p.add_argument("--fragment-size", type=int, required=True, choices=[300, 500])
    p.add_argument("--out-model", required=True, help="trained classifier (.safetensors)")
    p.add_argument("--metrics", required=True, help="held-out metrics (TSV)")
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(handler=_train)

    p = sub.add_parser("download-model", help="fetch and verify a model file")
    p.add_argument("kind", choices=["esm2", "dnabert_s", "classifier"])
    p.add_argument("output", help="file (or directory, for dnabert_s) to create, named as in models.dir")
    p.set_defaults(handler=_download)
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
