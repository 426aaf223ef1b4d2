"""The `virnucpro` command: one subcommand per workflow step.

Each subcommand parses its arguments here and calls one package function; heavy modules (torch, h5py)
are imported inside the handlers so that `virnucpro prepare` starts fast.
"""

import argparse
import logging
import sys

from virnucpro import __version__
from virnucpro.errors import VirNucProError

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
    _add_embed_options(p, "16384 on GPU, 4096 on CPU")
    p.set_defaults(handler=_embed_protein)

    p = sub.add_parser("embed-dna", help="DNABERT-S embeddings of nucleotide frames (packed)")
    p.add_argument("frames", help="nucleotide FASTA from `prepare`")
    p.add_argument("--model", required=True, help="DNABERT-S snapshot directory")
    _add_embed_options(p, "65536 on GPU, 8192 on CPU")
    p.set_defaults(handler=_embed_dna)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
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
