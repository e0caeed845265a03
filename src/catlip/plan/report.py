"""`catlip plan` results: every (method, GPU count), the ratios between methods, as text or JSON."""

from __future__ import annotations

from .calibration import Calibration
from .costs import Setup, plan_one
from .devices import Device

TERMS = ("compute", "all_reduce", "all_gather", "loss")


def build(methods: list[str], gpus: list[int], backbone: str, global_batch: int, device: Device, samples: float,
          cals: dict[str, Calibration], **switches) -> dict:
    """Plans for every method x GPU count, and GPU-hour ratios to the first method: per count, each method's
    cheapest count, and (with as many counts as methods) method i on count i."""
    rows = [plan_one(m, cals[m], Setup(backbone, global_batch, n, device, **switches), samples)
            for m in methods for n in gpus]
    base, ratios = methods[0], []
    for other in methods[1:]:
        for n in gpus:
            a, b = (next(r for r in rows if r["method"] == m and r["gpus"] == n) for m in (base, other))
            ratios.append({"of": other, "to": base, "gpus": n, "gpu_hours_ratio": b["gpu_hours"] / a["gpu_hours"]})
        a, b = (min((r for r in rows if r["method"] == m), key=lambda r: r["gpu_hours"]) for m in (base, other))
        ratios.append({"of": other, "to": base, "gpus": f"{b['gpus']} vs {a['gpus']} GPUs (each method's cheapest)",
                       "gpu_hours_ratio": b["gpu_hours"] / a["gpu_hours"]})
    if len(gpus) == len(methods):  # one count per method, in order (Table 6b: CatLIP on 64, CLIP on 256)
        a = next(r for r in rows if r["method"] == base and r["gpus"] == gpus[0])
        for other, n in zip(methods[1:], gpus[1:]):
            b = next(r for r in rows if r["method"] == other and r["gpus"] == n)
            ratios.append({"of": other, "to": base, "gpus": f"{n} vs {gpus[0]} GPUs (paired in order)",
                           "gpu_hours_ratio": b["gpu_hours"] / a["gpu_hours"]})
    calibrated = {m: {"device": c.device, "backbone": c.backbone, "batch": c.batch, "fixed_s": c.fixed_s,
                      "per_sample_s": c.per_sample_s} for m, c in cals.items() if m in methods}
    links = {where: {"name": lk.name, "gb_per_s": lk.gb_per_s, "latency_us": lk.latency_us}
             if not lk.curves else {"name": lk.name, "bus_gb_per_s_by_bytes": {k: [list(p) for p in c]
                                                                            for k, c in lk.curves}}
             for where, lk in (("inside_node", device.intra), ("between_nodes", device.inter))}
    return {"backbone": backbone, "global_batch": global_batch, "gpu": device.name, "samples": samples,
            "switches": switches, "links": links, "calibration": calibrated, "plans": rows, "ratios": ratios}


def text(result: dict) -> str:
    """A table per plan plus the ratio lines."""
    out = [f"{result['backbone']}, global batch {result['global_batch']:,}, {result['gpu']}, "
           f"{result['samples']:.3g} samples per epoch"]
    head = f"{'method':8s} {'GPUs':>5s} {'B/GPU':>6s} {'fits':>11s} " + " ".join(f"{t:>10s}" for t in TERMS)
    out += [head + f" {'step s':>7s} {'GPU-h/epoch':>12s}  dominant", "-" * (len(head) + 32)]
    for r in result["plans"]:
        fits = f"{r['max_batch']}/{r['max_batch_ckpt']}" + ("*" if r["grad_checkpointing"] else "")
        out.append(f"{r['method']:8s} {r['gpus']:5d} {r['per_gpu_batch']:6d} {fits:>11s} "
                   + " ".join(f"{r['terms_s'][t]:10.4f}" for t in TERMS)
                   + f" {r['step_s']:7.3f} {r['gpu_hours']:12,.1f}  {r['dominant']}")
    out.append("fits: largest per-GPU batch without/with gradient checkpointing; * = checkpointing needed and "
               "costed (compute x 4/3). Terms in seconds per step.")
    out += _links_text(result)
    for q in result["ratios"]:
        where = q["gpus"] if isinstance(q["gpus"], str) else f"{q['gpus']} GPU{'s' if q['gpus'] > 1 else ''} each"
        out.append(f"GPU-hours {q['of']} / {q['to']}, {where}: {q['gpu_hours_ratio']:.2f}x")
    return "\n".join(out)


def _links_text(result: dict) -> list[str]:
    """One line per distinct (collective, link, message size): the bandwidth and latency it was costed with."""
    seen = {}
    for r in result["plans"]:
        for kind, used in r["links"].items():
            key = (kind, used["link"], round(used["message_mib"], 3))
            seen.setdefault(key, (used, []))[1].append(f"{r['method']}@{r['gpus']}")
    out = []
    for (kind, name, _), (used, where) in sorted(seen.items()):
        how = ("bus bandwidth measured, latency included" if used["latency_us"] is None
               else f"+ {used['latency_us']:g} us per hop")
        source = f" ({result['nccl_tests'][kind]['path']})" if used["latency_us"] is None and "nccl_tests" in result \
            else ""
        out.append(f"{kind} over {name}{source}: {used['message_mib']:.1f} MiB messages at {used['gb_per_s']:.1f} "
                   f"GB/s, {how} [{', '.join(where)}]")
    return out
