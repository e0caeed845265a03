"""`catlip <command>`: argument parsing only; each handler calls one library function.

Sections below belong to the stage they expose (labels, pretrain, evaluate, analysis). Handlers import lazily so
`catlip --help` and `catlip labels` start without importing torch.
"""

from __future__ import annotations

import argparse
import sys


from catlip.errors import CatlipError


class CliError(CatlipError):
    """A command-line usage error the user can fix; printed as one line, exit code 2."""


# ---------------------------------------------------------------- labels / vocab (owner: labels stage)


def _add_labels_commands(sub: argparse._SubParsersAction) -> None:
    pass


# ---------------------------------------------------------------- pretrain / demo / export (owner: train stage)


def _add_train_commands(sub: argparse._SubParsersAction) -> None:
    pass


# ---------------------------------------------------------------- probe / finetune / zeroshot (owner: evaluate stage)


def _add_evaluate_commands(sub: argparse._SubParsersAction) -> None:
    pass


# ---------------------------------------------------------------- analyze (owner: analysis stage)


def _add_analysis_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="synset statistics of a caption corpus and its overlap with target label sets (report with plots)",
        description="Stream the captions of SHARDS_OR_FILES (webdataset .tar shards, captions.token.txt-style text, "
        "JSONL, CSV/TSV; globs and {000..005} brace patterns work), extract CatLIP synset labels and write "
        "OUT/summary.json, PNG plots and OUT/index.html: synset long tail, unique synsets vs captions seen, "
        "share kept vs V_tau, and for each --targets set the classes matched at path-similarity thresholds "
        "alpha and the samples per matched class (CatLIP Fig. 2-3).",
    )
    p.add_argument("--input", "-i", nargs="+", required=True, metavar="SHARDS_OR_FILES", help="caption sources")
    p.add_argument("--targets", "-t", nargs="+", default=[], metavar="SET",
                   help="target label sets: imagenet1k, imagenet12k, imagenet22k (timm's offline metadata), "
                   "a TSV 'index<TAB>wnid<TAB>name' or a file with one class name per line")
    p.add_argument("--vocab", help="vocabulary JSON: use its extractor options and match targets against its keys")
    p.add_argument("--out", "-o", required=True, help="report folder (created)")
    p.add_argument("--workers", type=int, default=1, help="processes, one input file at a time each (default 1)")
    p.add_argument("--column", help="caption column of CSV/TSV/JSONL inputs")
    p.add_argument("--min-count", type=int, default=1,
                   help="without --vocab: corpus synsets in fewer captions cannot match a target (default 1)")
    p.add_argument("--alphas", type=float, nargs="+", default=None, metavar="A",
                   help="path-similarity thresholds (default 1.0 0.9 ... 0.2)")
    p.add_argument("--top", type=int, default=50, help="rows of the most-frequent-synsets table (default 50)")
    p.add_argument("--unlabelled", type=int, default=20, help="captions without labels to show (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the unlabelled-caption sample")
    p.add_argument("--title", help="report title")
    p.add_argument("--note", default="", help="a sentence about the inputs, shown in the report")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_run_analyze)


def _run_analyze(args: argparse.Namespace) -> int:
    from catlip.analysis import analyze
    from catlip.analysis.coverage import DEFAULT_ALPHAS

    if args.workers < 1 or args.min_count < 1 or args.top < 0 or args.unlabelled < 0:
        raise CliError("--workers and --min-count must be >= 1, --top and --unlabelled >= 0")
    summary = analyze(args.input, args.out, targets=args.targets, vocab_path=args.vocab, workers=args.workers,
                      column=args.column, min_count=args.min_count, top=args.top,
                      alphas=args.alphas or DEFAULT_ALPHAS, unlabelled=args.unlabelled, seed=args.seed,
                      title=args.title, input_note=args.note, progress=not args.no_progress)
    c = summary["corpus"]
    print(f"{c['num_captions']:,} captions, {c['unique_synsets']:,} unique synsets -> {args.out}/index.html")
    for t in summary["targets"]:
        cov = ", ".join(f"alpha {r['alpha']:g}: {r['matched']}" for r in t["coverage"][:3])
        print(f"  {t['name']}: {t['num_targets']} classes ({t['num_unknown']} unknown); matched {cov}")
    return 0


# ---------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    from catlip import __version__

    parser = argparse.ArgumentParser(
        prog="catlip",
        description="Pre-train vision backbones by classification on image-text data (CatLIP, SuperClass) "
        "and compare with CLIP in the same trainer.",
    )
    parser.add_argument("--version", action="version", version=f"catlip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_labels_commands(sub)
    _add_train_commands(sub)
    _add_evaluate_commands(sub)
    _add_analysis_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CatlipError as err:
        print(f"catlip {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
