"""`catlip eval RUN --suite FILE|NAME`: a declared list of evaluation tasks, one JSON and one Markdown table.

A suite file (YAML, format in docs/eval_suite.md) names datasets (shard paths relative to ``data_root``) and tasks
(a kind = an evaluation subcommand, a dataset, that subcommand's flags as ``options``). Each task runs through its
own subcommand's parser and ``run`` (so ``options`` mean exactly what the flags mean) with one shared
``--cache-dir``: tasks reading the same split at the same size extract its features once.

Summary as DataComp does it: one main metric per task (:data:`KINDS`) and their plain mean over the tasks.
Resumable: ``OUT/results.json`` is rewritten after every task, and a task whose stored entry has the same
definition and the same encoder weights (their hash) is not run again. ``limit`` and ``holdout`` are served by
subset shards written once into the cache folder (the tasks read whole splits).

This module is also the task ``catlip eval`` itself (its flags, run and report are at the end); it imports only
the standard library at top level (``catlip --help`` reads it).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import tarfile
import time
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable

from catlip.errors import CliError, ConfigError, DataError
from catlip.evaluate.common.cli import CKPT_HELP, print_table
from catlip.evaluate.tasks import Task

DEFAULT_DATA_ROOT = "../shared/data"
SUITES_DIR = Path(__file__).resolve().parents[3] / "configs" / "suites"  # the repository's shipped suites


@dataclass(frozen=True)
class Kind:
    splits: tuple[str, ...]  # the dataset splits the task reads
    metric: str  # name of the main metric in the table
    value: Callable[[dict], float]  # the main metric from the subcommand's result, in [0, 1]


def _first_row(result: dict, protocol: str) -> dict:
    return next(r for r in result["rows"] if r["protocol"].startswith(protocol))


KINDS = {
    "zeroshot": Kind(("test",), "top-1", lambda r: r["top1"]),
    "probe": Kind(("train", "test"), "top-1", lambda r: _first_row(r, "logistic")["top1"]),
    "knn": Kind(("train", "test"), "top-1", lambda r: _first_row(r, "knn")["top1"]),
    "multilabel": Kind(("train", "test"), "mAP", lambda r: _first_row(r, "logistic")["mAP"]),
    # DataComp's retrieval number: the mean of image→text and text→image Recall@1
    "retrieval": Kind(("test",), "mean R@1", lambda r: (r["image_to_text"]["R@1"] + r["text_to_image"]["R@1"]) / 2),
}
# flags the suite sets from the dataset and the command line: a task's options may not
RESERVED = {"train", "test", "data", "classes", "cache-dir", "output", "o", "holdout"}


@dataclass
class Dataset:
    name: str
    train: str | None = None
    test: str | None = None
    classes: str | None = None
    holdout: int = 0  # the last N samples of train (shard order) are the test split


@dataclass
class SuiteTask:
    name: str
    kind: str
    dataset: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Suite:
    name: str
    path: str
    data_root: str
    datasets: dict[str, Dataset]
    tasks: list[SuiteTask]
    image_size: int | None = None


# ---------------------------------------------------------------- reading a suite file


def find_suite(spec: str) -> Path:
    """A suite file path, or the name of a shipped one (configs/suites/NAME.yaml, here or in the repository)."""
    path = Path(spec)
    if path.is_file():
        return path
    for folder in (Path("configs/suites"), SUITES_DIR):
        for candidate in (folder / f"{spec}.yaml", folder / spec):
            if candidate.is_file():
                return candidate
    shipped = sorted(p.stem for p in SUITES_DIR.glob("*.yaml")) if SUITES_DIR.is_dir() else []
    raise CliError(f"--suite {spec}: no such file and no shipped suite of that name (shipped: "
                   f"{', '.join(shipped) or 'none'})")


def load_suite(spec: str, data_root: str | None = None) -> Suite:
    """Read and check a suite file; ``data_root`` (e.g. ``--data-root``) replaces the file's."""
    import yaml

    path = find_suite(spec)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"suite {path}: cannot read it as YAML ({err})") from None
    where = f"suite {path}"
    _mapping(raw, where, required={"datasets", "tasks"}, allowed={"name", "data_root", "image_size"})
    root = data_root or raw.get("data_root") or DEFAULT_DATA_ROOT
    datasets = _datasets(raw["datasets"], where, Path(os.path.expanduser(str(root))))
    suite = Suite(str(raw.get("name") or path.stem), str(path), str(root), datasets,
                  _tasks(raw["tasks"], where, datasets), _image_size(raw.get("image_size"), where))
    _check_files(suite)
    return suite


def _mapping(value: Any, where: str, required: set[str], allowed: set[str]) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping with {', '.join(sorted(required))}")
    missing, unknown = required - set(value), set(value) - required - allowed
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(sorted(missing))}")
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (valid: "
                          f"{', '.join(sorted(required | allowed))})")
    return value


def _image_size(value: Any, where: str) -> int | None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ConfigError(f"{where}: image_size must be a positive integer, not {value!r}")
    return value


def _datasets(raw: Any, where: str, root: Path) -> dict[str, Dataset]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: datasets must map names to {{train, test, classes, holdout}}")
    out = {}
    for name, spec in raw.items():
        at = f"{where}: dataset {name}"
        _mapping(spec, at, required=set(), allowed={"train", "test", "classes", "holdout"})
        holdout = spec.get("holdout", 0)
        if not isinstance(holdout, int) or holdout < 0 or (holdout and (not spec.get("train") or spec.get("test"))):
            raise ConfigError(f"{at}: holdout takes a number of samples and a train split without a test split")
        paths = {k: _resolve(root, spec[k]) for k in ("train", "test", "classes") if spec.get(k)}
        if not paths.keys() & {"train", "test"}:
            raise ConfigError(f"{at}: give a train and/or a test split")
        out[str(name)] = Dataset(str(name), holdout=holdout, **paths)
    return out


def _resolve(root: Path, value: Any) -> str:
    text = str(value)
    if "://" in text or text.startswith("pipe:") or Path(text).is_absolute():
        return text
    return str(root / text)


def _tasks(raw: Any, where: str, datasets: dict[str, Dataset]) -> list[SuiteTask]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: tasks must be a list of {{name, kind, dataset, options}}")
    out: list[SuiteTask] = []
    for i, spec in enumerate(raw, 1):
        _mapping(spec, f"{where}: task {i}", required={"kind", "dataset"}, allowed={"name", "options"})
        task = SuiteTask(str(spec.get("name") or f"{spec['dataset']}-{spec['kind']}"), str(spec["kind"]),
                         str(spec["dataset"]), dict(spec.get("options") or {}))
        _check_task(task, f"{where}: task {task.name}", datasets, [t.name for t in out])
        out.append(task)
    return out


def _check_task(task: SuiteTask, at: str, datasets: dict[str, Dataset], earlier: list[str]) -> None:
    if task.name in earlier:
        raise ConfigError(f"{at}: a second task of that name (give each task its own name)")
    if task.kind not in KINDS:
        raise ConfigError(f"{at}: unknown kind {task.kind!r}; valid kinds: {', '.join(KINDS)}")
    if task.dataset not in datasets:
        raise ConfigError(f"{at}: unknown dataset {task.dataset!r}; the suite declares: {', '.join(datasets)}")
    ds = datasets[task.dataset]
    lacking = [s for s in KINDS[task.kind].splits if not _has_split(ds, s)]
    if lacking:
        raise ConfigError(f"{at}: a {task.kind} task needs the {' and '.join(lacking)} split of dataset {ds.name}")
    clash = sorted(_flag_name(k) for k in task.options if _flag_name(k) in RESERVED)
    if clash:
        raise ConfigError(f"{at}: options may not set {', '.join(clash)} (the suite sets them from the dataset and "
                          "the command line)")


def _has_split(ds: Dataset, split: str) -> bool:
    return bool(getattr(ds, split)) or (split == "test" and ds.holdout > 0)


def _check_files(suite: Suite) -> None:
    """Every dataset a task uses exists before the first task runs (hours may pass before the last one)."""
    from catlip.data import formats

    for ds in (suite.datasets[n] for n in dict.fromkeys(t.dataset for t in suite.tasks)):
        for split in ("train", "test", "classes"):
            spec = getattr(ds, split)
            if not spec or "://" in spec or spec.startswith("pipe:"):
                continue
            files = formats.expand_urls(spec) if split != "classes" else [spec]
            missing = [f for f in files if not Path(f).exists()]
            if missing:
                raise DataError(f"suite {suite.path}: dataset {ds.name}: {split} not found: {missing[0]}"
                                f"{f' (+{len(missing) - 1} more)' if len(missing) > 1 else ''} (data_root "
                                f"{suite.data_root}; set it with --data-root)")


# ---------------------------------------------------------------- task command lines


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # a bad option is a suite-file error, not an exit from inside the suite
        raise ConfigError(message)


def _flag_name(key: str) -> str:
    return str(key).replace("_", "-")


def option_argv(options: dict[str, Any]) -> list[str]:
    """``{epochs: 10, no_knn: true, lrs: [0.01, 0.1]}`` -> ``--epochs 10 --no-knn --lrs 0.01,0.1``."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + _flag_name(key)
        if value is True:
            argv.append(flag)
        elif value not in (False, None):
            argv += [flag, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    return argv


def task_args(task: SuiteTask, checkpoint: str, splits: dict[str, str | None], common: list[str],
              where: str) -> argparse.Namespace:
    """The parsed command line of ``catlip <kind> ...`` for this task, through the subcommand's own parser."""
    from catlip.evaluate.tasks import get

    parser = _Parser(prog=f"catlip {task.kind}", add_help=False)
    get(task.kind).add_arguments(parser)
    accepted = {o for a in parser._actions for o in a.option_strings}
    argv = [checkpoint]
    for split in KINDS[task.kind].splits:
        argv += ["--data" if "--data" in accepted else f"--{split}", str(splits[split])]
    if splits.get("classes") and "--classes" in accepted:
        argv += ["--classes", str(splits["classes"])]
    argv += [a for i, a in enumerate(common) if _accepted(common, i, accepted)]
    try:
        return parser.parse_args(argv + option_argv(task.options))
    except ConfigError as err:
        raise ConfigError(f"{where}: task {task.name}: options: {err}") from None


def _accepted(common: list[str], i: int, accepted: set[str]) -> bool:
    """Whether ``common[i]`` (a flag or the value after one) is for a flag this subcommand has."""
    flag = common[i] if common[i].startswith("--") else common[i - 1]
    return flag in accepted


# ---------------------------------------------------------------- splits, --limit and holdout


def task_splits(ds: Dataset, limit: int | None, folder: Path) -> dict[str, str | None]:
    """The split specs a task reads: the dataset's own, or subset shards when ``limit`` or ``holdout`` asks."""
    out: dict[str, str | None] = {"classes": ds.classes or _classes_beside(ds.train or ds.test)}
    ranges = _ranges(ds)
    for split, (source, start, stop) in ranges.items():
        if limit:
            stop = start + limit if stop is None else min(stop, start + limit)
        if start == 0 and stop is None:
            out[split] = source
        else:
            out[split] = _subset(source, start, stop, folder / f"{ds.name}-{split}")
    return out


def _ranges(ds: Dataset) -> dict[str, tuple[str, int, int | None]]:
    if not ds.holdout:
        return {s: (getattr(ds, s), 0, None) for s in ("train", "test") if getattr(ds, s)}
    total = _count(ds.train)
    if ds.holdout >= total:
        raise ConfigError(f"dataset {ds.name}: holdout {ds.holdout} leaves none of its {total} samples to train on")
    return {"train": (ds.train, 0, total - ds.holdout), "test": (ds.train, total - ds.holdout, total)}


def _classes_beside(spec: str | None) -> str | None:
    """The class file next to the first shard: found there by the reader, but not next to a subset shard."""
    from catlip.data import formats, specs

    found = specs.classify(spec) if spec else None
    if found is None or found.kind != specs.SHARDS or formats.is_remote(spec):
        return None
    from catlip.evaluate.common.class_files import class_file_beside

    guess = class_file_beside(found.path.parent)
    return str(guess) if guess else None


def _shard_paths(spec: str) -> list[Path]:
    from catlip.data import formats, specs

    found = specs.resolve(spec, "--limit and holdout data", (specs.SHARDS,))
    return [formats.local_shard(u, formats.default_shard_cache()) for u in found.paths]


def _samples(spec: str, read: bool):
    from catlip.data import formats

    for path in _shard_paths(spec):
        yield from formats.TarScan(path, read=(lambda ext: read))


def _count(spec: str) -> int:
    return sum(1 for _ in _samples(spec, read=False))


def _subset(spec: str, start: int, stop: int | None, stem: Path) -> str:
    """A shard of samples ``[start, stop)`` of ``spec`` in shard order, written once (named by its content)."""
    stamp = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in _shard_paths(spec)]
    digest = hashlib.sha256(json.dumps([stamp, start, stop]).encode()).hexdigest()[:12]
    target = stem.with_name(f"{stem.name}-{digest}.tar")
    if target.is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    with tarfile.open(tmp, "w") as out:
        for sample in islice(_samples(spec, read=True), start, stop):
            for ext, (name, _, _) in sample.members.items():
                info = tarfile.TarInfo(name)
                info.size = len(sample.data[ext])
                out.addfile(info, io.BytesIO(sample.data[ext]))
    os.replace(tmp, target)
    return str(target)


# ---------------------------------------------------------------- running


def task_key(task: SuiteTask, suite: Suite, limit: int | None) -> str:
    """Everything that decides a task's number except the weights: a stored result with another key is stale."""
    spec = {"kind": task.kind, "dataset": asdict(suite.datasets[task.dataset]), "options": task.options,
            "limit": limit, "image_size": suite.image_size}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_suite(checkpoint: str, suite: Suite, out_dir: str | Path, *, limit: int | None = None,
              cache_dir: str | Path | None = None, common: list[str] | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the suite's tasks not already in ``out_dir/results.json`` for these weights; write the JSON after each
    task and ``results.md`` at the end. ``common``: flags given to every task that has them (``--workers 0``)."""
    out, common = Path(out_dir), list(common or [])
    cache = Path(cache_dir) if cache_dir else out / "cache"
    common += ["--cache-dir", str(cache)] + (["--image-size", str(suite.image_size)] if suite.image_size else [])
    _check_options(suite, checkpoint, common)
    _check_subsets(suite, limit)
    wid = _weights_id(checkpoint, suite.image_size)
    done = _reusable(suite, _stored(out / "results.json", wid), limit)
    result = {"suite": suite.name, "suite_file": suite.path, "data_root": suite.data_root, "checkpoint": checkpoint,
              "weights_id": wid, "limit": limit, "tasks": done}
    for i, task in enumerate(suite.tasks, 1):
        head = f"[{i}/{len(suite.tasks)}] {task.name} ({task.kind}, {task.dataset})"
        if task.name in done:
            log(f"{head}: {done[task.name]['metric']} {100 * done[task.name]['value']:.2f} (stored result, not run "
                "again)")
            continue
        log(f"{head}: running")
        entry = _run_task(task, suite, checkpoint, limit, cache, common, task_key(task, suite, limit))
        log(f"{head}: {entry['metric']} {100 * entry['value']:.2f} ({entry['seconds']:.1f} s)")
        done[task.name] = entry
        # suite order, and the stored results of later tasks kept, should the suite be stopped during the next one
        result["tasks"] = {t.name: done[t.name] for t in suite.tasks if t.name in done}
        _write(result, out)
    _write(result, out, markdown=True)
    return result


def _reusable(suite: Suite, stored: dict[str, dict], limit: int | None) -> dict[str, dict]:
    """The stored entries of tasks whose definition has not changed since, in suite order."""
    return {t.name: {**stored[t.name], "status": "stored"} for t in suite.tasks
            if stored.get(t.name, {}).get("key") == task_key(t, suite, limit)}


def _check_subsets(suite: Suite, limit: int | None) -> None:
    """Every split that ``--limit`` or ``holdout`` cuts is made of shards, before the first task runs."""
    from catlip.data import specs

    for ds in (suite.datasets[n] for n in dict.fromkeys(t.dataset for t in suite.tasks)):
        for split in (("train",) if ds.holdout else ()) + (("train", "test") if limit else ()):
            spec = getattr(ds, split)
            if spec:
                specs.resolve(spec, f"dataset {ds.name}: --limit and holdout data", (specs.SHARDS,))


def _check_options(suite: Suite, checkpoint: str, common: list[str]) -> None:
    """Every task's options parse before the first task runs (its data paths stand in for the real splits)."""
    for task in suite.tasks:
        ds = suite.datasets[task.dataset]
        stand_in = {"train": ds.train, "test": ds.test or ds.train, "classes": ds.classes}
        task_args(task, checkpoint, stand_in, common, f"suite {suite.path}")


def _weights_id(checkpoint: str, image_size: int | None) -> str:
    from catlip.evaluate.common.model import load_eval_model

    return load_eval_model(checkpoint, image_size).weights_id()


def _stored(path: Path, weights_id: str) -> dict[str, dict]:
    """The entries of an earlier run of these weights (a results.json of other weights is overwritten)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(old, dict) or old.get("weights_id") != weights_id:
        return {}
    return {k: v for k, v in (old.get("tasks") or {}).items() if isinstance(v, dict) and "value" in v}


def _run_task(task: SuiteTask, suite: Suite, checkpoint: str, limit: int | None, cache: Path, common: list[str],
              key: str) -> dict[str, Any]:
    from catlip.evaluate.tasks import get

    kind = KINDS[task.kind]
    splits = task_splits(suite.datasets[task.dataset], limit, cache / "subsets")
    args = task_args(task, checkpoint, splits, common, f"suite {suite.path}")
    start = time.perf_counter()
    detail = get(task.kind).run(args)
    value = float(kind.value(detail))
    return {"kind": task.kind, "dataset": task.dataset, "metric": kind.metric, "value": value, "key": key,
            "seconds": round(time.perf_counter() - start, 2), "status": "ran", "result": detail}


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The suite average (a plain mean over tasks, as DataComp averages its tasks) and the task count."""
    values = [t["value"] for t in result["tasks"].values()]
    return {"average": sum(values) / len(values) if values else float("nan"), "tasks_done": len(values)}


def _write(result: dict[str, Any], out: Path, markdown: bool = False) -> None:
    from catlip.evaluate.common.cli import write_json

    result.update(summary(result))
    stable = {**result, "tasks": {k: {f: v for f, v in t.items() if f != "status"}
                                  for k, t in result["tasks"].items()}}
    write_json(stable, str(out / "results.json"))
    if markdown:
        (out / "results.md").write_text(markdown_table(result), encoding="utf-8")


def table_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """One row per task plus the average, values as percentages with two decimals."""
    rows = [{"task": name, "kind": t["kind"], "dataset": t["dataset"], "metric": t["metric"],
             "value": f"{100 * t['value']:.2f}"} for name, t in result["tasks"].items()]
    rows.append({"task": "average", "kind": "", "dataset": "", "metric": f"mean of {len(rows)} tasks",
                 "value": f"{100 * result['average']:.2f}"})
    return rows


def markdown_table(result: dict[str, Any]) -> str:
    cols = ["task", "kind", "dataset", "metric", "value"]
    lines = [f"# {result['suite']}: `{result['checkpoint']}`", "",
             f"Weights `{result['weights_id']}`" + (f", at most {result['limit']} images per split" if result["limit"]
                                                     else "") + "; values in %.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table_rows(result):
        cells = [f"**{row[c]}**" if row["task"] == "average" and row[c] else row[c] for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the command: `catlip eval`


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
