"""`catlip <command>`: argument parsing only; each handler calls one library function.

Sections below belong to the stage they expose (labels, pretrain, evaluate, analysis). Handlers import lazily so
`catlip --help` and `catlip labels` start without importing torch.
"""

from __future__ import annotations

import argparse
import os
import sys


from catlip.defaults import V_TAU_DEFAULT

# Every user-fixable error is a CatlipError (catlip.errors); main() prints it as one line and returns 2.
from catlip.errors import CatlipError, CliError, one_line  # noqa: F401  (CliError: also imported from here)


def _group(sub: argparse._SubParsersAction, name: str, help: str, description: str,
           metavar: str = "SUBCOMMAND") -> argparse._SubParsersAction:
    """A command made of subcommands (`catlip vocab build`, `catlip import corenet`): one of them is required."""
    p = sub.add_parser(name, help=help, description=description)
    group = p.add_subparsers(dest=f"{name}_command", metavar=metavar)
    group.required = True
    return group


# ---------------------------------------------------------------- labels / vocab (owner: labels stage)


def _add_extractor_flags(p: argparse.ArgumentParser) -> None:
    # label sources, their flags and the methods' default sources come from the registries
    from catlip.labels import registry
    from catlip.methods.registry import METHODS

    sources = registry.SOURCES.values()
    p.add_argument("--labels", choices=registry.names(), default=None,
                   help="; ".join(f"{s.name}: {s.summary}, keys {s.key_format}" for s in sources).replace("%", "%%")
                   + f" (default: {registry.names()[0]})")
    labelled = {n: m.default_labels for n, m in METHODS.items() if m.uses_labels}
    p.add_argument("--method", choices=tuple(labelled), default=None,
                   help="alias for the method's label source: " + ", ".join(f"{n} = --labels {s}" for n, s in
                                                                             labelled.items()))
    for opt, flag in registry.cli_flags().items():
        name = "--" + opt.replace("_", "-")
        if isinstance(flag["default"], bool):
            p.add_argument(name, action="store_true", help=flag["help"])
        else:
            p.add_argument(name, choices=flag["choices"], type=type(flag["default"]), default=None, help=flag["help"])
    p.add_argument("--column", default=None, help="caption field of CSV/TSV/JSONL/.json inputs "
                   "(default: captions, caption, text, txt, title)")


def _labels_opts(args: argparse.Namespace) -> dict:
    """Set ``args.labels`` from --labels or --method (the method's default source); the extractor options."""
    from catlip.labels import registry
    from catlip.methods.registry import get as get_method

    implied = get_method(args.method).default_labels if args.method else None
    if args.labels and implied and args.labels != implied:
        raise CliError(f"--method {args.method} means --labels {implied}; give --labels {args.labels} alone")
    args.labels = args.labels or implied or registry.names()[0]
    flags = {opt: getattr(args, opt) for opt in registry.cli_flags()}
    return registry.flag_options(registry.get(args.labels), flags)


def _cmd_labels(args: argparse.Namespace) -> int:
    from catlip.labels import tools

    options = _labels_opts(args)
    if args.input:
        if args.captions:
            raise CliError("give captions as arguments or --input, not both")
        n, stats = tools.label_file(args.input, args.output, args.labels, options, column=args.column)
        print(f"labelled {n:,} captions; lines skipped: {stats.skipped:,}", file=sys.stderr)
        for message in stats.messages[:5]:
            print(f"  {message}", file=sys.stderr)
        return 0
    if not args.captions:
        raise CliError("give one or more captions, or --input FILE")
    tools.print_labels(args.captions, args.labels, options)
    return 0


def _cmd_vocab_build(args: argparse.Namespace) -> int:
    from catlip.labels.corpus import expand_inputs
    from catlip.labels.tools import summarize_build
    from catlip.labels.vocab import build_vocabulary

    if args.min_count < 1 or (args.top_k is not None and args.top_k < 1) or args.workers < 1:
        raise CliError("--min-count, --top-k and --workers must be >= 1")
    # no caption at all is a DataError (exit 2) naming where captions were looked for
    options = _labels_opts(args)
    vocab, counts = build_vocabulary(expand_inputs(args.input), args.labels, options,
                                     min_count=args.min_count, top_k=args.top_k, workers=args.workers,
                                     column=args.column, progress=True)
    if len(vocab) == 0:  # a 0-class vocabulary cannot train anything: say why instead of writing it
        if not counts.doc_freq:
            raise CliError(f"none of the {vocab.num_captions:,} captions yields a {args.labels} label; "
                           f"nothing written to {args.output}")
        top_key, top_count = max(counts.doc_freq.items(), key=lambda kv: (kv[1], kv[0]))
        raise CliError(f"no label reaches --min-count {args.min_count} in {vocab.num_captions:,} captions (the most "
                       f"frequent, {top_key}, is in {top_count:,}); nothing written to {args.output}")
    vocab.save(args.output)
    print(summarize_build(vocab, counts) + f"\nwrote {args.output} ({len(vocab):,} classes, hash {vocab.hash})")
    return 0


def _cmd_vocab_show(args: argparse.Namespace) -> int:
    from catlip.labels.tools import format_vocab
    from catlip.labels.vocab import Vocabulary

    print(format_vocab(Vocabulary.load(args.vocab), top=args.top))
    return 0


def _add_labels_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("labels", help="extract label keys from captions (CatLIP synsets or SuperClass BPE ids)",
                       description="Print the labels of captions, or label a caption file into JSON lines.")
    p.add_argument("captions", nargs="*", help="captions to label; each prints a block of `key  name` lines")
    p.add_argument("--input", help="caption file: text, captions.token.txt, .jsonl, .csv/.tsv or .tar shard")
    p.add_argument("--output", help='with --input: write {"caption", "labels"} JSON lines here (default: stdout)')
    _add_extractor_flags(p)
    p.set_defaults(handler=_cmd_labels)

    vsub = _group(sub, "vocab", "build or inspect a label vocabulary", "Label vocabularies.")
    b = vsub.add_parser("build", help="count labels over caption files/shards and keep the frequent ones",
                        description="Count, per label key, the captions containing it (in parallel over files), "
                        "prune by --min-count (the paper's V_tau) and/or --top-k, and save a versioned JSON.")
    b.add_argument("--input", nargs="+", required=True, help="caption files or webdataset .tar shards")
    b.add_argument("--output", required=True, help="vocabulary JSON to write")
    b.add_argument("--min-count", type=int, default=V_TAU_DEFAULT, help="keep keys in at least this many captions, "
                   f"the paper's V_tau (default {V_TAU_DEFAULT})")
    b.add_argument("--top-k", type=int, default=None, help="keep at most this many keys (most frequent first)")
    b.add_argument("--workers", type=int, default=1, help="processes counting files in parallel (result identical)")
    _add_extractor_flags(b)
    b.set_defaults(handler=_cmd_vocab_build)
    s = vsub.add_parser("show", help="print a vocabulary's header and most frequent classes")
    s.add_argument("vocab", help="vocabulary JSON")
    s.add_argument("--top", type=int, default=20, help="how many classes to list (default 20)")
    s.set_defaults(handler=_cmd_vocab_show)


# ---------------------------------------------------------------- pretrain / demo / export (owner: train stage)


def _add_train_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="pre-train a backbone (CatLIP, SuperClass, CLIP, SigLIP) from a recipe",
                       description="Pre-train from a YAML recipe (configs/*.yaml) plus section.key=value overrides; "
                       "unknown keys are errors. Resume an interrupted run with train.resume=auto (its logs then "
                       "restart at the checkpoint's step). Under torchrun every process runs this same command.")
    p.add_argument("--config", "-c", default=None, help="recipe YAML (default: built-in defaults)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved configuration (every key, defaults filled in) as YAML and exit without "
                   "training; `catlip config keys` lists the keys with their meaning")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. optim.steps=2000 train.output_dir=runs/x")
    p.set_defaults(handler=_cmd_pretrain)

    p = sub.add_parser("lit", help="LiT: lock a run's image tower and train a text tower on it (zero-shot, retrieval)",
                       description="Locked-image text tuning: the backbone of RUN (its newest valid checkpoint, or "
                       "one checkpoint folder) is locked, a projection and an open_clip text transformer are trained "
                       "with CLIP's loss on image-caption data, in the pre-training loop (checkpoints, exact resume "
                       "with train.resume=auto, logs, torchrun). The result is a two-tower run that `catlip "
                       "zeroshot`, `catlip retrieval` and `catlip export --format open_clip` use like a CLIP run. "
                       "method.feature_cache=auto computes the locked tower's features once and trains at text speed.")
    p.add_argument("run", metavar="RUN", help="pre-training run dir (CatLIP, SuperClass, CLIP, ...) or checkpoint dir")
    p.add_argument("--config", "-c", default=None, help="LiT recipe YAML, e.g. configs/lit_tiny_cpu.yaml")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved LiT configuration (the tower's architecture and preprocessing copied "
                   "in) as YAML and exit without training")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="e.g. train.output_dir=runs/lit method.feature_cache=auto method.unlocked_blocks=1")
    p.set_defaults(handler=_cmd_lit)

    p = sub.add_parser("demo", help="CPU demo: CatLIP pre-training of a tiny ViT, then a probe vs random init",
                       description="Builds a vocabulary from the embedded synthetic captions (or --data shards), "
                       "pre-trains a tiny ViT with CatLIP, and prints linear-probe accuracy of the frozen backbone "
                       "against the same backbone at random init. A few minutes on 2 CPU cores; no download.")
    p.add_argument("--data", default=None, help="webdataset shards instead of the synthetic set, "
                   "e.g. 'flickr8k-train-{000..005}.tar'")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: 1200)")
    p.add_argument("--output", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--probe-size", type=int, default=2000, help="probe training images (test: half as many)")
    p.add_argument("--probe-train", default=None, help="labelled shards/folder for the probe (with --data)")
    p.add_argument("--probe-test", default=None, help="labelled test shards/folder for the probe")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="extra config overrides")
    p.set_defaults(handler=_cmd_demo)

    p = sub.add_parser("export", help="write a run's backbone for timm (or its two towers for open_clip)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Export the backbone of a run (its newest valid checkpoint) or of one checkpoint\n"
                       "folder, with a timm config: architecture, model_args, and a pretrained_cfg holding the\n"
                       "run's preprocessing (mean/std, input_size, interpolation, crop_pct, crop_mode).\n\n"
                       "-o backbone.safetensors writes backbone.safetensors + backbone.json; load with any timm:\n"
                       "  cfg = json.load(open('backbone.json'))\n"
                       "  model = timm.create_model(cfg['architecture'], pretrained=True,\n"
                       "      pretrained_cfg_overlay=dict(cfg['pretrained_cfg'], file='backbone.safetensors'),\n"
                       "      **cfg['model_args'])\n\n"
                       "-o backbone (a folder) writes timm's layout, model.safetensors + config.json; load with a\n"
                       "timm that reads local folders:\n"
                       "  model = timm.create_model('local-dir:backbone', pretrained=True)\n\n"
                       "Either way the model is headless (num_classes=0) and\n"
                       "timm.data.resolve_data_config({}, model=model) gives the training preprocessing;\n"
                       "catlip.models.load_backbone(path) loads either layout the same way.\n\n"
                       "--format open_clip -o DIR writes a two-tower run (clip, siglip, superclip, lit) for\n"
                       "open_clip: open_clip_config.json + open_clip_model.safetensors + catlip-<DIR name>.json\n"
                       "(the model config alone, for open_clip.add_model_config) in DIR;\n"
                       "  model, _, preprocess = open_clip.create_model_and_transforms('local-dir:DIR')\n"
                       "(docs/open_clip_export.md).")
    p.add_argument("checkpoint", metavar="RUN_OR_CKPT", help="run dir or checkpoints/step_XXXXXXX dir")
    p.add_argument("--output", "-o", required=True,
                   help="timm: X.safetensors (weights + X.json beside it) or a folder (model.safetensors + "
                        "config.json); open_clip: a folder")
    p.add_argument("--ema", action="store_true", help="export the EMA weights (if the run kept them)")
    p.add_argument("--format", choices=("timm", "open_clip"), default="timm",
                   help="timm: the backbone (default); open_clip: image + text towers, -o is a folder")
    p.set_defaults(handler=_cmd_export)


def _add_import_commands(sub: argparse._SubParsersAction) -> None:
    isub = _group(sub, "import", "turn a released pre-trained model into a catlip run (CatLIP's corenet files)",
                  "Import pre-trained models published outside catlip as ordinary catlip runs.", metavar="FORMAT")
    c = isub.add_parser(
        "corenet", help="a CatLIP ViT checkpoint of corenet (the paper's released ViT-B/L/H) + its vocabulary",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert a corenet CatLIP checkpoint (the paper's ViT-B/16, L/16, H/16 or any width and depth,\n"
        "inferred from the tensors) and its synset vocabulary pickle into a catlip run directory that\n"
        "probe, knn, multilabel, zeroshot, tag, retrieval, finetune, segment, detect and lit read.\n"
        "The checkpoint is read with torch.load(weights_only=True) and the pickle with a reader that\n"
        "builds plain dicts only: files carrying code are refused, never run. The run records corenet's\n"
        "evaluation preprocessing (shorter side 232 -> centre crop 224, bilinear, [0, 1] pixels).\n"
        "Nothing is downloaded: where the released files are published is in docs/pretrained.md.\n\n"
        "  catlip import corenet vit_base.pt --vocab datacomp_1_2B_vocab.pkl -o runs/catlip_vit_b16\n"
        "  catlip tag runs/catlip_vit_b16 photo.jpg")
    c.add_argument("checkpoint", metavar="CKPT", help="corenet .pt state dict (plain, or wrapped in model/state_dict/ema)")
    c.add_argument("--vocab", metavar="VOCAB.pkl", default=None,
                   help="the released synset vocabulary pickle (class i = entry i); without it the head has no names "
                   "(probe, knn and finetune still work)")
    c.add_argument("--output", "-o", required=True, help="run directory to create (must not exist, or be empty)")
    c.set_defaults(handler=_cmd_import_corenet)


def _cmd_import_corenet(args: argparse.Namespace) -> int:
    from catlip.train.import_corenet import import_corenet

    out = import_corenet(args.checkpoint, args.output, args.vocab)
    a, cfg = out["architecture"], out["config"]
    print(f"corenet CatLIP ViT from {args.checkpoint} ({out['state_dict']}): width {a['width']}, {a['depth']} "
          f"blocks, {a['heads']} heads, patch 16 at {a['image_size']} px, {a['num_classes']:,} classes")
    if out["dropped"]:
        print(f"  left out {len(out['dropped'])} training-only tensors (RangeAugment: neural_augmentor.*)")
    vocab = out["vocab"]
    if vocab is not None:
        print(f"  vocabulary: {len(vocab):,} WordNet synsets ({', '.join(vocab.names[:8])}, ...)")
    else:
        print("  no --vocab: the head's classes have no names (tag, zeroshot and transfer init need them)")
    print(f"  preprocessing: shorter side {cfg.data.eval_resize} -> centre crop {cfg.model.image_size}, bilinear, "
          "pixels in [0, 1] (mean 0, std 1); position table: corenet's 1-D stretch at other sizes")
    print(f"wrote {out['run']}")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from catlip.methods.registry import load_config

    cfg = load_config(args.config, args.overrides)  # a ConfigError is a CatlipError: one line, exit 2
    return _print_config(cfg) if args.print_config else _train(cfg)


def _print_config(cfg) -> int:
    """The resolved config as YAML on stdout (a recipe `--config` reads back); warnings on stderr."""
    from catlip.config import dump_config, schedule_warnings

    for warning in schedule_warnings(cfg):
        print(f"catlip: warning: {warning}", file=sys.stderr)
    sys.stdout.write(dump_config(cfg))
    return 0


def _add_config_commands(sub: argparse._SubParsersAction) -> None:
    csub = _group(sub, "config", "list the configuration keys of recipes (type, default, meaning)",
                  "Configuration of `catlip pretrain` / `catlip lit` recipes.")
    k = csub.add_parser("keys", help="every key with its type, default and meaning (from catlip/config.py)",
                        description="List every configuration key, generated from the dataclasses of "
                        "catlip/config.py and their comments. `catlip pretrain --print-config` prints one "
                        "resolved configuration.")
    k.add_argument("--markdown", action="store_true", help="print docs/config.md (the same list as tables)")
    k.set_defaults(handler=_cmd_config_keys)


def _cmd_config_keys(args: argparse.Namespace) -> int:
    from catlip import config_keys

    sys.stdout.write(config_keys.markdown() if args.markdown else config_keys.format_keys())
    return 0


def _train(cfg) -> int:
    """Run the trainer on ``cfg`` and print the run dir (once: under torchrun every process runs the handler)."""
    from catlip.train.loop import pretrain

    run_dir = pretrain(cfg)
    if os.environ.get("RANK", "0") == "0":
        print(run_dir)
    return 0


def _cmd_lit(args: argparse.Namespace) -> int:
    from catlip.train.lit import lit_config

    cfg = lit_config(args.run, args.config, args.overrides)
    return _print_config(cfg) if args.print_config else _train(cfg)


def _cmd_demo(args: argparse.Namespace) -> int:
    from catlip.demo import run_demo

    run_demo(data=args.data, steps=args.steps, output=args.output, probe_size=args.probe_size,
             probe_train=args.probe_train, probe_test=args.probe_test, threads=args.threads, extra=args.overrides)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from catlip.models.export import export_backbone
    from catlip.train.checkpoint import load_pretrained

    if args.format == "open_clip" and args.output.endswith(".safetensors"):  # before loading the run
        raise CliError("--format open_clip writes a folder (open_clip's local-dir: layout); give -o a folder name")
    trained = load_pretrained(args.checkpoint, ema=args.ema)
    print(f"checkpoint: {trained.describe()}", file=sys.stderr)
    if args.format == "open_clip":
        return _export_open_clip(trained, args.output)
    from catlip.data.transforms import Preprocess

    spec = export_backbone(trained.method, args.output, preprocess=Preprocess.of(trained.config))
    if args.output.endswith(".safetensors"):
        sidecar = args.output[: -len(".safetensors")] + ".json"
        print(f"wrote {args.output} + {sidecar} (timm {timm_architecture(spec)}); load: cfg = json.load("
              f"open({sidecar!r})); timm.create_model(cfg['architecture'], pretrained=True, pretrained_cfg_overlay="
              f"dict(cfg['pretrained_cfg'], file={args.output!r}), **cfg['model_args'])")
    else:
        folder = os.path.normpath(args.output)  # "out/" must not print as "out//model.safetensors"
        print(f"wrote {os.path.join(folder, 'model.safetensors')} + config.json (timm {timm_architecture(spec)}); "
              f"load: timm.create_model('local-dir:{folder}', pretrained=True)")
    return 0


# timm kwargs that change how a model trains, not which network it is: left out of the announced architecture
_TRAINING_ONLY_KWARGS = ("drop_rate", "drop_path_rate", "attn_drop_rate", "proj_drop_rate", "pos_drop_rate",
                         "patch_drop_rate")


def timm_architecture(spec: dict) -> str:
    """The timm name with the kwargs that override its architecture: a patch-8, 48 px export of
    vit_tiny_patch16_224 reads ``vit_tiny_patch16_224(patch_size=8, img_size=48)``, not the bare name."""
    args = ", ".join(f"{k}={v!r}" for k, v in spec["kwargs"].items() if k not in _TRAINING_ONLY_KWARGS)
    return f"{spec['name']}({args})" if args else spec["name"]


def _export_open_clip(trained, output: str) -> int:
    from catlip.models.openclip_export import export_open_clip

    from catlip.models.export import preprocessing

    data, size = trained.config.data, trained.config.model.image_size
    pre = preprocessing(size, data.mean, data.std, data.eval_resize)
    out = export_open_clip(trained.method, output, image_size=size, context_length=data.context_length,
                           preprocess=pre)
    vision = out["model_cfg"]["vision_cfg"]
    output = os.path.normpath(output)
    print(f"wrote {out['weights']} + {out['config']} + {out['model_config']} (open_clip CustomTextCLIP, ViT "
          f"width {vision['width']} x {vision['layers']} layers, patch {vision['patch_size']}, pool "
          f"{vision['pool_type']}); load: model, _, preprocess = open_clip.create_model_and_transforms("
          f"'local-dir:{output}'); tokenizer = open_clip.get_tokenizer('local-dir:{output}') -- or by name: "
          f"open_clip.add_model_config({out['model_config']!r}); open_clip.create_model_and_transforms("
          f"{out['name']!r}, pretrained={out['weights']!r}, image_interpolation='bilinear')")
    return 0


# ---------------------------------------------------------------- evaluation tasks (owner: evaluate stage)


def _add_evaluate_commands(sub: argparse._SubParsersAction) -> None:
    """One subcommand per evaluation task (probe, knn, multilabel, zeroshot, finetune, ...): catlip.evaluate.tasks."""
    from catlip.evaluate.tasks import tasks

    for task in tasks():
        p = sub.add_parser(task.name, help=task.help, description=task.description)
        task.add_arguments(p)
        p.set_defaults(handler=_evaluation_handler(task.name))


def _evaluation_handler(name: str):
    def handler(args: argparse.Namespace) -> int:
        from catlip.evaluate.tasks import run_task

        run_task(name, args)
        return 0

    return handler


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
    print(f"{c['num_captions']:,} captions, {c['unique_synsets']:,} unique synsets -> {os.path.join(args.out, 'index.html')}")
    for t in summary["targets"]:
        cov = ", ".join(f"alpha {r['alpha']:g}: {r['matched']}" for r in t["coverage"][:3])
        print(f"  {t['name']}: {t['num_targets']} classes ({t['num_unknown']} unknown); matched {cov}")
    return 0


# ---------------------------------------------------------------- shards (owner: data stage)


def _add_shards_commands(sub: argparse._SubParsersAction) -> None:
    ssub = _group(sub, "shards", "pre-process webdataset shards (resize the images)",
                  "Tools that rewrite webdataset .tar shards.")
    r = ssub.add_parser("resize", help="rewrite shards with every image's longer side at most --max-side",
                        description="Rewrite webdataset shards (one output shard per input, same file and member "
                        "names, same order) with each image member scaled down so its longer side is at most "
                        "--max-side (aspect kept, never upscaled; JPEG/WebP re-encoded at --quality, PNG stays "
                        "PNG); every other member and every image already small enough is copied byte for byte, "
                        "and corrupt images are counted and copied unchanged. Shards run in parallel "
                        "(--workers); a re-run skips the shards already finished (OUT/resize_manifest.json).")
    r.add_argument("inputs", nargs="+", metavar="SRC", help="shards: paths, globs, {000..005} patterns or folders")
    r.add_argument("--out", "-o", required=True, help="output folder (not a source shard's folder)")
    r.add_argument("--max-side", type=int, required=True, metavar="N", help="longest image side in pixels")
    r.add_argument("--workers", type=int, default=1, metavar="K", help="shards rewritten in parallel (default 1)")
    r.add_argument("--quality", type=int, default=90, metavar="Q", help="JPEG/WebP quality, 1..100 (default 90)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(handler=_cmd_shards_resize)


def _cmd_shards_resize(args: argparse.Namespace) -> int:
    from catlip.data.resize import report, resize_shards

    summary = resize_shards(args.inputs, args.out, args.max_side, quality=args.quality, workers=args.workers,
                            progress=not args.no_progress)
    print(report(summary))
    return 1 if any(r.error for r in summary["results"]) else 0


# ---------------------------------------------------------------- plan (owner: plan stage)


def _add_plan_commands(sub: argparse._SubParsersAction) -> None:
    from catlip.plan.cli import add_parser  # argparse + catlip.errors only: no torch

    add_parser(sub)


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
    _add_config_commands(sub)
    _add_import_commands(sub)
    _add_evaluate_commands(sub)
    _add_analysis_commands(sub)
    _add_shards_commands(sub)
    _add_plan_commands(sub)
    return parser


TORCH_FREE = ("labels", "vocab", "config", "plan")  # commands that never import torch: nothing to wait for


def _say_starting(args: argparse.Namespace) -> None:
    """On a terminal, one line before torch is imported: on a loaded machine that import alone takes tens of
    seconds, and a silent prompt reads as a hang. Logs and pipes do not get it (their first line stays the
    command's own)."""
    if args.command in TORCH_FREE or getattr(args, "print_config", False) or "torch" in sys.modules:
        return
    if sys.stderr.isatty():
        print(f"catlip {args.command}: starting (loading PyTorch) ...", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse gives every positional its values at the first run of positionals, so KEY=VALUE overrides
        # written after an option (`catlip lit RUN --config X a=b`) arrive here; they are overrides all the same
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*(args.overrides or []), *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _say_starting(args)
    try:
        return int(args.handler(args) or 0)
    except CatlipError as err:
        # Any user-fixable error, wherever it is raised (config, building the method or backbone, data, checkpoint,
        # vocabulary, run dir, `finetune --set`): one line, exit 2. Other exceptions are bugs: traceback.
        print(f"catlip {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`catlip tag ... | head`): stop quietly, as a program killed by SIGPIPE would
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
