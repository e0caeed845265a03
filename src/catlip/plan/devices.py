"""Device and interconnect presets of `catlip plan` (vendors' data-sheet figures; every one can be overridden)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from catlip.errors import CliError


Curve = tuple[tuple[float, float], ...]  # (message bytes, bus GB/s), in rising size


def interpolate(curve: Curve, message_bytes: float) -> float:
    """The bus bandwidth of a ``message_bytes`` message: log-log between measured sizes, the end values beyond."""
    if message_bytes <= curve[0][0]:
        return curve[0][1]
    if message_bytes >= curve[-1][0]:
        return curve[-1][1]
    i = next(i for i, (b, _) in enumerate(curve) if b >= message_bytes)
    (b0, g0), (b1, g1) = curve[i - 1], curve[i]
    w = math.log(message_bytes / b0) / math.log(b1 / b0)
    return math.exp((1 - w) * math.log(g0) + w * math.log(g1))


@dataclass(frozen=True)
class Link:
    """Per-GPU bandwidth one way (GB/s, 1e9 bytes) and the latency of one hop of a ring (microseconds).

    ``curves`` replace both for the collectives they name: ((collective, curve), ...), the bus bandwidth by message
    size as ``nccl-tests`` measures it. Small messages and messages that spill a cache move slower than a link's
    peak, so a collective reads its curve at its own message size; the measured time already holds the latency.
    """

    name: str
    gb_per_s: float
    latency_us: float
    curves: tuple[tuple[str, Curve], ...] = ()

    def curve(self, kind: str) -> Curve | None:
        return dict(self.curves).get(kind)


@dataclass(frozen=True)
class Device:
    """A GPU: dense bf16 peak, memory, HBM bandwidth, GPUs per node and the links inside and between nodes."""

    name: str
    peak_tflops: float | None  # None: "the calibration's own device", time taken as measured
    memory_mib: float
    hbm_tb_per_s: float
    per_node: int
    intra: Link
    inter: Link

    def link(self, gpus: int) -> Link:
        """The link a ring over ``gpus`` GPUs is limited by: NVLink inside one node, else the node's network."""
        return self.intra if gpus <= self.per_node else self.inter


# NVLink: A100 600 GB/s and H100 900 GB/s both directions together, per GPU. InfiniBand: one NIC per GPU
# (DGX A100: HDR 200 Gb/s; DGX H100: NDR 400 Gb/s). Latencies are typical per-hop figures, not data-sheet values.
LINKS = {
    "nvlink3": Link("nvlink3", 300.0, 3.0),
    "nvlink4": Link("nvlink4", 450.0, 3.0),
    "ib-hdr": Link("ib-hdr", 25.0, 5.0),
    "ib-ndr": Link("ib-ndr", 50.0, 5.0),
    "ib-xdr": Link("ib-xdr", 100.0, 5.0),
    "ethernet-100g": Link("ethernet-100g", 12.5, 15.0),
}

GPUS = {
    "a100-40gb": Device("A100-SXM4-40GB", 312.0, 40960, 1.555, 8, LINKS["nvlink3"], LINKS["ib-hdr"]),
    "a100-80gb": Device("A100-SXM4-80GB", 312.0, 81920, 2.039, 8, LINKS["nvlink3"], LINKS["ib-hdr"]),
    "h100-80gb": Device("H100-SXM5-80GB", 989.0, 81559, 3.35, 8, LINKS["nvlink4"], LINKS["ib-ndr"]),
    "h200": Device("H200-SXM-141GB", 989.0, 143771, 4.8, 8, LINKS["nvlink4"], LINKS["ib-ndr"]),
    "measured": Device("the calibration's device", None, math.inf, math.inf, 1, LINKS["nvlink3"], LINKS["ib-hdr"]),
}

# what the allocator, CUDA context and NCCL buffers leave of a GPU's memory for tensors
USABLE_MEMORY = 0.92


def check_positive(value: float | None, flag: str, *, zero: bool = False) -> None:
    """A command-line number that must be finite and > 0 (``zero``: >= 0); None is not given."""
    if value is not None and not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
        raise CliError(f"{flag} must be a finite number {'>=' if zero else '>'} 0, got {value}")


def get_device(name: str, *, inter: str | None = None, bandwidth_gb_s: float | None = None,
               latency_us: float | None = None, memory_gib: float | None = None,
               curves: dict[str, Curve] | None = None) -> Device:
    """Preset ``name`` with the inter-node link, its bandwidth / latency or the memory overridden, or every link
    replaced by measured bus-bandwidth ``curves`` (collective -> curve)."""
    if name not in GPUS:
        raise CliError(f"unknown --gpu {name!r}; choose from {', '.join(GPUS)}")
    dev = GPUS[name]
    if inter is not None:
        if inter not in LINKS:
            raise CliError(f"unknown --link {inter!r}; choose from {', '.join(LINKS)}")
        dev = replace(dev, inter=LINKS[inter])
    check_positive(bandwidth_gb_s, "--bandwidth-gbs")
    check_positive(memory_gib, "--memory-gib")
    check_positive(latency_us, "--latency-us", zero=True)
    if curves:
        given = [flag for flag, v in (("--link", inter), ("--bandwidth-gbs", bandwidth_gb_s),
                                      ("--latency-us", latency_us)) if v is not None]
        if given:
            raise CliError(f"an nccl-tests log measures the links' bandwidth and latency; leave out {given[0]}")
        measured = Link("nccl-tests", curves["all_reduce"][-1][1], 0.0, tuple(sorted(curves.items())))
        dev = replace(dev, intra=measured, inter=measured)
    elif bandwidth_gb_s is not None or latency_us is not None:  # an override applies to every hop of the ring
        links = [replace(lk, gb_per_s=bandwidth_gb_s or lk.gb_per_s,
                         latency_us=lk.latency_us if latency_us is None else latency_us)
                 for lk in (dev.intra, dev.inter)]
        dev = replace(dev, intra=links[0], inter=links[1])
    if memory_gib is not None:
        dev = replace(dev, memory_mib=memory_gib * 1024)
    return dev
