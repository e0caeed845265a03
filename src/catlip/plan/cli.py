"""`catlip plan`: the parser (imports nothing heavy) and its handler."""

from __future__ import annotations

import argparse

from catlip.errors import CliError

DESCRIPTION = (
    "Predict what pre-training costs per epoch on a data-parallel cluster for each method: the largest per-GPU "
    "batch that fits (with and without gradient checkpointing), the step time split into compute, gradient "
    "all-reduce, CLIP's all-gather of embeddings and its logits, GPU-hours per epoch, their ratio and the dominant "
    "term. The compute term is a measured step (default: the committed single-H100 ViT-B/16 measurement) scaled "
    "by the analytic training FLOPs and the GPUs' bf16 peaks (docs/scaling.md).")


MAX_BATCH = 2**31  # far beyond any published global batch; it keeps the search for an even split quick
MAX_SAMPLES = 1.28e13  # beyond it a plan's GPU-hours are no longer a number anyone reads


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CliError(f"--gpus takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise CliError(f"--gpus needs GPU counts >= 1, got {text!r}")
    return values


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `catlip plan` on ``subparsers``; the handler is ``args.handler``."""
    p = subparsers.add_parser("plan", help="cost model: GPU-hours per epoch of CatLIP vs CLIP on a cluster",
                              description=DESCRIPTION)
    p.add_argument("--backbone", default="vit_base_patch16_224", help="timm ViT name (default vit_base_patch16_224)")
    p.add_argument("--methods", default="catlip,clip", help="comma-separated: catlip, clip, siglip (first = base)")
    p.add_argument("--global-batch", type=int, default=65536, help="images per optimizer step (default 65536)")
    p.add_argument("--gpus", default="64,256", help="comma-separated GPU counts to plan (default 64,256)")
    p.add_argument("--gpu", default="a100-80gb", help="GPU preset: a100-40gb, a100-80gb, h100-80gb, h200, "
                   "measured (the --measured file's own device)")
    p.add_argument("--samples", type=float, default=1.3e9, help="samples per epoch (default 1.3e9, DataComp-1.3B)")
    p.add_argument("--measured", default=None, help="train_step JSON to calibrate compute and memory with "
                   "(default: the committed H100 measurement)")
    p.add_argument("--link", default=None, help="inter-node link preset: ib-hdr, ib-ndr, ib-xdr, ethernet-100g")
    p.add_argument("--bandwidth-gbs", type=float, default=None, help="override every link's GB/s per GPU")
    p.add_argument("--nccl-tests", default=None, metavar="LOG",
                   help="all_reduce_perf's log from your cluster (nccl-tests, e.g. -b 1M -e 1G -f 2): its bus "
                        "bandwidth by message size replaces the links' bandwidth and latency, read at each "
                        "collective's message size")
    p.add_argument("--nccl-tests-gather", default=None, metavar="LOG",
                   help="all_gather_perf's log, for CLIP's all-gather of embeddings (default: the all_reduce log)")
    p.add_argument("--latency-us", type=float, default=None, help="override every link's per-hop latency")
    p.add_argument("--bucket-mib", type=float, default=25.0,
                   help="DDP gradient bucket, the all-reduce's message size (default 25, DDP's bucket_cap_mb)")
    p.add_argument("--memory-gib", type=float, default=None, help="override the GPU's memory")
    p.add_argument("--clip-logits", choices=("local", "global"), default="local",
                   help="local: B x G logits per rank (open_clip, the paper); global: G x G per rank (catlip's "
                        "ContrastiveMethod)")
    p.add_argument("--overlap", type=float, default=0.0, help="fraction of the all-reduce hidden by the backward")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=run)
    return p


def _logs(args: argparse.Namespace) -> dict | None:
    """Collective -> its nccl-tests log (the all-reduce's serves the all-gather too without its own), or None."""
    from . import nccl_tests

    if "" in (args.nccl_tests, args.nccl_tests_gather):
        raise CliError("--nccl-tests and --nccl-tests-gather take the path of a log, got an empty one")
    if args.nccl_tests is None:
        if args.nccl_tests_gather is not None:
            raise CliError("--nccl-tests-gather needs --nccl-tests (all_reduce_perf's log) too")
        return None
    reduce = nccl_tests.read(args.nccl_tests, "all_reduce")
    gather = reduce if args.nccl_tests_gather is None else nccl_tests.read(args.nccl_tests_gather, "all_gather")
    return {"all_reduce": reduce, "all_gather": gather}


def _measured_on(logs: dict, paths: dict, gpus: list[int], per_node: int) -> tuple[dict, list[str]]:
    """Where each curve came from (JSON), and notes where a log's rank count differs from a planned one."""
    record = {kind: {"path": paths[kind], "ranks": log.ranks} for kind, log in logs.items()}
    notes = []
    for path in dict.fromkeys(paths.values()):
        ranks = next(log.ranks for kind, log in logs.items() if paths[kind] == path)
        other = [n for n in gpus if n > 1 and n != ranks]
        if not other:
            continue
        if ranks is None:
            notes.append(f"note: {path} does not say on how many ranks it was measured")
            continue
        notes.append(f"note: {path} was measured on {ranks} ranks; its bus bandwidth includes that ring's latency, "
                     f"which grows with the rank count, so the {'/'.join(map(str, other))}-GPU plans carry the "
                     f"{ranks}-rank latency (measure on the count you plan)")
        if crossed := [n for n in other if (n <= per_node) != (ranks <= per_node)]:
            where = "inside one node" if ranks <= per_node else f"across nodes of {per_node} GPUs"
            notes.append(f"note: {path} measured a ring {where}; the {'/'.join(map(str, crossed))}-GPU plans run "
                         "over the other link (NVLink inside a node, the network between nodes) at the log's "
                         "bandwidth")
    return record, notes


def run(args: argparse.Namespace) -> int:
    import json

    from . import calibration, devices, report

    gpus = _ints(args.gpus)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or (bad := sorted(set(methods) - {"catlip", "clip", "siglip"})):
        raise CliError(f"catlip plan models the methods catlip, clip and siglip; got {args.methods!r}")
    if not 1 <= args.global_batch <= MAX_BATCH:
        raise CliError(f"--global-batch must be between 1 and {MAX_BATCH:,}, got {args.global_batch}")
    devices.check_positive(args.samples, "--samples")
    devices.check_positive(args.bucket_mib, "--bucket-mib")
    if args.samples > MAX_SAMPLES:
        raise CliError(f"--samples must be at most {MAX_SAMPLES:.3g} (a thousand DataComp-12.8B epochs), got "
                       f"{args.samples:g}")
    if not 0 <= args.overlap <= 1:
        raise CliError(f"--overlap must be in [0, 1], got {args.overlap}")
    if bad := [n for n in gpus if args.global_batch % n]:
        raise CliError(f"--global-batch {args.global_batch} does not split evenly over {bad[0]} GPUs")
    logs = _logs(args)
    device = devices.get_device(args.gpu, inter=args.link, bandwidth_gb_s=args.bandwidth_gbs,
                                latency_us=args.latency_us, memory_gib=args.memory_gib,
                                curves={k: log.curve for k, log in logs.items()} if logs else None)
    cals = calibration.load(args.measured)
    if "clip" in cals:  # same towers; its sigmoid loss over B x G pairs costs what CLIP's softmax does
        cals.setdefault("siglip", cals["clip"])
    if missing := [m for m in methods if m not in cals]:
        raise CliError(f"the calibration has no measurement of {', '.join(missing)} (it has {', '.join(cals)})")
    result = report.build(methods, gpus, args.backbone, args.global_batch, device, args.samples, cals,
                          clip_logits=args.clip_logits, overlap=args.overlap, bucket_mib=args.bucket_mib)
    notes = []
    if logs:
        paths = {"all_reduce": args.nccl_tests, "all_gather": args.nccl_tests_gather or args.nccl_tests}
        result["nccl_tests"], notes = _measured_on(logs, paths, gpus, device.per_node)
    print(json.dumps(result, indent=1) if args.json else "\n".join([report.text(result), *notes]))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m catlip.plan.cli ...`: the command on its own (errors as one line, exit 2, like `catlip`)."""
    import sys

    from catlip.errors import CatlipError, one_line

    parser = argparse.ArgumentParser(prog="catlip")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["plan", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.handler(args)
    except CatlipError as err:
        print(f"catlip plan: error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
