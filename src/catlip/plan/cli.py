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
                   help="an nccl-tests log from your cluster (all_reduce_perf -b 1M -e 1G -f 2): its bus bandwidth "
                        "by message size replaces every link's, read at each collective's message size")
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


def run(args: argparse.Namespace) -> int:
    import json

    from . import calibration, comm, devices, report

    gpus = _ints(args.gpus)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or (bad := sorted(set(methods) - {"catlip", "clip", "siglip"})):
        raise CliError(f"catlip plan models the methods catlip, clip and siglip; got {args.methods!r}")
    if args.global_batch < 1 or args.samples <= 0 or args.bucket_mib <= 0 or not 0 <= args.overlap <= 1:
        raise CliError("--global-batch, --samples and --bucket-mib must be > 0 and --overlap in [0, 1]")
    if bad := [n for n in gpus if args.global_batch % n]:
        raise CliError(f"--global-batch {args.global_batch} does not split evenly over {bad[0]} GPUs")
    curve = comm.read_nccl_tests(args.nccl_tests) if args.nccl_tests else ()
    device = devices.get_device(args.gpu, inter=args.link, bandwidth_gb_s=args.bandwidth_gbs,
                                latency_us=args.latency_us, memory_gib=args.memory_gib, curve=curve)
    cals = calibration.load(args.measured)
    if "clip" in cals:  # same towers; its sigmoid loss over B x G pairs costs what CLIP's softmax does
        cals.setdefault("siglip", cals["clip"])
    if missing := [m for m in methods if m not in cals]:
        raise CliError(f"the calibration has no measurement of {', '.join(missing)} (it has {', '.join(cals)})")
    result = report.build(methods, gpus, args.backbone, args.global_batch, device, args.samples, cals,
                          clip_logits=args.clip_logits, overlap=args.overlap, bucket_mib=args.bucket_mib)
    print(json.dumps(result, indent=1) if args.json else report.text(result))
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
