"""`catlip eval`: run a suite of evaluation tasks (zero-shot, probe, k-NN, retrieval, multi-label) over several
datasets, resumably, and summarise them in one table with the suite average (catlip.evaluate.suite)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from catlip.errors import CliError
from catlip.evaluate.tasks import Task
from catlip.evaluate.common.cli import CKPT_HELP


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help=CKPT_HELP)
    p.add_argument("--suite", required=True, metavar="FILE|NAME",
                   help="suite YAML (format: docs/eval_suite.md) or the name of a shipped one in configs/suites/ "
                   "(e.g. shared_small)")
    p.add_argument("--output", "-o", dest="out_dir", metavar="OUT_DIR",
                   help="folder for results.json, results.md and the feature cache; a re-run skips the tasks "
                   "stored there (default: RUN/eval/<suite name>)")
    p.add_argument("--limit", type=int, metavar="N", help="at most N images per split (the first ones in shard "
                   "order): a quick smoke run")
    p.add_argument("--data-root", help="folder the suite's dataset paths are relative to (default: the suite's "
                   "data_root, else ../shared/data)")
    p.add_argument("--cache-dir", help="feature and subset-shard cache (default: OUT_DIR/cache)")
    p.add_argument("--batch-size", type=int, help="images per batch (default: each task's)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="data-loading processes (default: min(4, CPU cores))")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from catlip.evaluate.suite import load_suite, run_suite

    if args.limit is not None and args.limit < 1:
        raise CliError("--limit must be >= 1")
    suite = load_suite(args.suite, args.data_root)
    out = args.out_dir or _default_out(args.checkpoint, suite.name)
    common = ["--workers", str(args.workers), "--device", args.device]
    common += ["--batch-size", str(args.batch_size)] if args.batch_size else []
    common += ["--no-progress"] if args.no_progress else []
    result = run_suite(args.checkpoint, suite, out, limit=args.limit, cache_dir=args.cache_dir, common=common)
    result["out_dir"] = str(out)
    return result


def _default_out(checkpoint: str, suite_name: str) -> str:
    if not Path(checkpoint).is_dir():
        raise CliError(f"{checkpoint} is not a run folder: give the output folder with -o OUT_DIR")
    return str(Path(checkpoint) / "eval" / suite_name)


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    from catlip.evaluate.suite import table_rows
    from catlip.evaluate.common.cli import print_table

    rows = [{**r, "status": result["tasks"].get(r["task"], {}).get("status", "")} for r in table_rows(result)]
    print(f"suite {result['suite']} on {result['checkpoint']} (weights {result['weights_id']}"
          f"{', at most %d images per split' % result['limit'] if result['limit'] else ''}; values in %)")
    print_table(rows, ["task", "kind", "dataset", "metric", "value", "status"])
    print(f"wrote {Path(result['out_dir']) / 'results.json'} and {Path(result['out_dir']) / 'results.md'}")


TASK = Task(
    name="eval",
    help="run an evaluation suite (zero-shot, probe, k-NN, retrieval, multi-label) and print one table",
    description="Run the tasks a suite file declares (docs/eval_suite.md; shipped: configs/suites/) over its "
    "datasets, sharing one feature cache, and write OUT_DIR/results.json and results.md: one main metric per task "
    "(top-1, mean R@1, mAP) and their average. Re-running skips the tasks already stored for the same weights, so "
    "an interrupted suite continues where it stopped.",
    add_arguments=add_arguments, run=run, report=report, order=5,
)
