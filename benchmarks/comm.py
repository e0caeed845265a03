"""Validate `catlip plan`'s collective model (catlip.plan.comm) with torch.distributed gloo on this machine.

Local processes (``--worlds``, default 2,3,4) time all-reduce and all-gather of float32 buffers at sizes from 0.5
to 64 MiB (fastest of ``--trials`` launches x ``--reps`` after a warm-up, a barrier before each; small messages get
more repetitions). The model is fitted on the first and last world size and predicts every point of the middle
one, which no fit sees. Three forms of it, each what one way of calling ``catlip plan`` costs collectives with:

- one bandwidth and a per-hop latency per collective (``--bandwidth-gbs``, ``--latency-us``);
- a bus-bandwidth curve by message size per collective, the latency inside it as nccl-tests measures it
  (``--nccl-tests`` with ``--nccl-tests-gather``);
- the all-reduce's curve for both collectives (``--nccl-tests`` alone).

All carry the host's own terms (``catlip.plan.comm.Host``, fitted with the rest): N ranks on fewer cores share
them (time x N / P, P the ranks the host runs at full speed), and once ranks outnumber the cores every hop waits
for its rank to be scheduled. GPUs run one rank each, so ``catlip plan`` has neither. A last check fits the
by-size form on every other size and predicts the sizes between by interpolation. Loopback gloo on a few CPU
cores is no NVLink: what this checks is the model's shape (bytes x 2(N-1)/N for all-reduce, (N-1)/N for
all-gather, read at the message's own size), not the presets.

    .venv/bin/python benchmarks/comm.py            # ~2 min; writes benchmarks/results/comm_gloo_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from catlip.plan.comm import KINDS, Host, fit_link  # noqa: E402
from catlip.plan.devices import Link  # noqa: E402


def _reps(nbytes: int, reps: int) -> int:
    """More repetitions for small messages, whose fastest time is the noisiest (about 16 MiB worth per size)."""
    return max(reps, round(reps * 16 * 2**20 / nbytes))


def _rank(rank: int, world: int, port: int, sizes: list[int], reps: int, queue) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    out = []
    for nbytes in sizes:
        n = nbytes // 4
        full = torch.ones(n)
        part = torch.ones(n // world)
        gathered = [torch.empty(n // world) for _ in range(world)]
        ops = {"all_reduce": lambda: dist.all_reduce(full), "all_gather": lambda: dist.all_gather(gathered, part)}
        for kind, op in ops.items():
            times = []
            for i in range(_reps(nbytes, reps) + 2):
                dist.barrier()
                t = time.perf_counter()
                op()
                if i >= 2:
                    times.append(time.perf_counter() - t)
            out.append((kind, nbytes, world, min(times)))  # the least disturbed: the machine is shared
    if rank == 0:
        queue.put(out)
    dist.barrier()
    dist.destroy_process_group()


def measure(world: int, sizes: list[int], reps: int) -> list[tuple[str, int, int, float]]:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, world, port, sizes, reps, queue)) for r in range(world)]
    for p in procs:
        p.start()
    result = queue.get(timeout=900)
    for p in procs:
        p.join(timeout=60)
    return result


def _fits(train: list, model: str, host: Host) -> dict[str, tuple[Link, Host]]:
    """Each collective's link under ``model`` and the host's per-hop wait, fitted on ``train`` at this host's
    sharing term."""
    if model == "one_bandwidth":  # what --bandwidth-gbs / --latency-us describe, per collective
        return {k: fit_link([pt for pt in train if pt[0] == k], host=host) for k in KINDS}
    if model == "all_reduce_curve_for_both":  # what --nccl-tests alone gives: the all-gather read off it too
        link, fitted = fit_link([pt for pt in train if pt[0] == "all_reduce"], per_size=True, host=host)
        curve = link.curve("all_reduce")
        return dict.fromkeys(KINDS, (Link("fitted", curve[-1][1], 0.0, tuple((k, curve) for k in KINDS)), fitted))
    return dict.fromkeys(KINDS, fit_link(train, per_size=True, host=host))  # one curve per collective


def _predict(pt: tuple, fits: dict) -> float:
    link, host = fits[pt[0]]
    return host.seconds(pt[0], pt[1], pt[2], link)


def _squared_error(train: list, model: str, host: Host) -> float:
    fits = _fits(train, model, host)
    fitted = [pt for pt in train if model != "all_reduce_curve_for_both" or pt[0] == "all_reduce"]
    return sum((_predict(pt, fits) / pt[3] - 1) ** 2 for pt in fitted)


def evaluate(points: list, fit: Callable[[tuple], bool], model: str, cores: int) -> dict:
    """Fit ``model`` on the points ``fit`` accepts (the host's sharing term by a scan, both collectives together),
    predict them all; the summary covers the points the fit did not see."""
    train = [pt for pt in points if fit(pt)]
    hosts = (Host(cores, p / 20) for p in range(20, 161))
    fits = _fits(train, model, min(hosts, key=lambda h: _squared_error(train, model, h)))
    rows = [{"kind": pt[0], "mib": round(pt[1] / 2**20, 3), "world": pt[2], "measured_s": pt[3],
             "predicted_s": (pred := _predict(pt, fits)), "error": pred / pt[3] - 1,
             "held_out": not fit(pt)} for pt in points]
    held = [r for r in rows if r["held_out"]]
    summary = {"held_out_points": len(held),
               "median_abs_error": statistics.median(abs(r["error"]) for r in held),
               "max_abs_error": max(abs(r["error"]) for r in held),
               "within_30pct": sum(abs(r["error"]) <= 0.30 for r in held)}
    described = {k: {"bus_gb_per_s_by_mib": [[b / 2**20, g] for b, g in link.curve(k)]} if link.curve(k) else
                 {"gb_per_s": link.gb_per_s, "latency_us": link.latency_us} for k, (link, _) in fits.items()}
    hosts_fitted = {k: {"cores": h.cores, "parallel_ranks": h.parallel, "wait_us_per_hop": h.wait_us}
                    for k, (_, h) in fits.items()}
    return {"host": hosts_fitted, "links": described, "rows": rows, "summary": summary}


def _measure_all(args) -> list[tuple[str, int, int, float]]:
    worlds = [int(w) for w in args.worlds.split(",")]
    sizes = [int(float(m) * 2**20) // 48 * 48 for m in args.sizes_mib.split(",")]  # divisible by 3 and 4 ranks
    best = {}
    for _ in range(args.trials):  # alternate the world sizes so a change in load hits them alike
        for w in worlds:
            for kind, nbytes, world, t in measure(w, sizes, args.reps):
                best[(kind, nbytes, world)] = min(t, best.get((kind, nbytes, world), t))
    return [(*key, t) for key, t in best.items()]


def _stored(path: str) -> list[tuple[str, int, int, float]]:
    """The measured points of an earlier result file (this script's, or the older one with its "ring" rows)."""
    data = json.loads(Path(path).read_text())
    rows = data.get("points") or [(r["kind"], round(r["mib"] * 2**20), r["world"], r["measured_s"])
                                  for r in data["ring"]["rows"]]
    return [tuple(r) for r in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worlds", default="2,3,4", help="rank counts; the first and last are fitted, the rest predicted")
    p.add_argument("--sizes-mib", default="0.5,1,2,4,8,16,32,64",
                   help="buffer sizes (all-gather: the gathered result)")
    p.add_argument("--reps", type=int, default=9, help="repetitions per size at 16 MiB and up (more below)")
    p.add_argument("--trials", type=int, default=3, help="passes over the world sizes; each point keeps its fastest")
    p.add_argument("--from", dest="source", default=None, help="refit the measurements of an earlier result file")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "comm_gloo_cpu.json"))
    args = p.parse_args()
    load = os.getloadavg()
    points = _stored(args.source) if args.source else _measure_all(args)
    worlds = sorted({pt[2] for pt in points})
    sizes = sorted({pt[1] for pt in points})
    fit_worlds = {worlds[0], worlds[-1]}
    source = json.loads(Path(args.source).read_text()) if args.source else {}
    cores = source.get("cores", len(os.sched_getaffinity(0)))
    models = {name: evaluate(points, lambda pt: pt[2] in fit_worlds, name, cores)
              for name in ("one_bandwidth", "bandwidth_by_size", "all_reduce_curve_for_both")}
    every_other = set(sizes[::2])
    models["between_sizes"] = evaluate(points, lambda pt: pt[1] in every_other, "bandwidth_by_size", cores)
    one, by_size = models["one_bandwidth"], models["bandwidth_by_size"]
    for r, q in zip(one["rows"], by_size["rows"]):
        print(f"{r['kind']:10s} {r['mib']:6.2f} MiB  N={r['world']}  measured {r['measured_s'] * 1e3:8.2f} ms  "
              f"one bandwidth {r['predicted_s'] * 1e3:8.2f} ms {r['error']:+6.1%}  by size "
              f"{q['predicted_s'] * 1e3:8.2f} ms {q['error']:+6.1%}{'  (held out)' if r['held_out'] else ''}")
    for name, model in models.items():
        host = model["host"]["all_reduce"]
        print(f"{name} (host runs {host['parallel_ranks']:.2f} ranks at full speed, a hop waits "
              f"{host['wait_us_per_hop']:.0f} us past {cores} ranks):", json.dumps(model["summary"]))
    measured = {k: source.get(k, getattr(args, k, None)) for k in ("trials", "reps")}
    measured["load_average_at_start"] = source.get("load_average_at_start", load)
    measured["load_average_at_end"] = source.get("load_average_at_end", os.getloadavg())
    result = {"backend": "gloo", "device": "CPU loopback", "cores": cores,
              **measured, "fit_worlds": sorted(fit_worlds), "refit_of": source.get("refit_of") or args.source,
              "points": points, **models}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
