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
    pass


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
