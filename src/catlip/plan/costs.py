"""Step time, memory and GPU-hours of one method on one data-parallel configuration.

compute   = (fixed + per-sample x B x FLOPs ratio) x peak ratio [x 4/3 with gradient checkpointing]
            measured on the calibration's device and backbone, scaled by the analytic training FLOPs per sample
            (target backbone / measured backbone) and the dense bf16 peaks (measured device / target GPU): the
            measured model-FLOPs utilisation is assumed to carry over to other GPUs, batch sizes and backbones.
all_reduce = ring all-reduce of every parameter's fp32 gradient, not hidden behind the backward (x (1-overlap)),
             at the link's bandwidth for one DDP bucket (``bucket_mib``).
all_gather = contrastive only: image and text embeddings of the global batch gathered forward and their gradients
             reduce-scattered backward, G x E x 4 bytes x 2 towers each way, one message per tower.
loss      = contrastive only: the similarity logits, B x G per direction ("local", open_clip and the paper) or one
            G x G matrix per rank ("global", catlip's ContrastiveMethod), as matmul FLOPs at the calibrated rate
            plus ~8 reads/writes of each fp32 logit at the HBM bandwidth. CatLIP's head and BCE are per-sample
            work inside ``compute``. (The calibration's own step already holds a B x B loss; counting it again is
            under 0.1 % of a step at the batches measured.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from catlip.errors import CliError

from . import comm
from .arch import TEXT, Tower, is_contrastive, towers
from .calibration import MIB, STATIC_BYTES_PER_PARAM, Calibration
from .devices import USABLE_MEMORY, Device

GRAD_BYTES = 4  # DDP reduces the fp32 gradients of fp32 master weights
EMBED_BYTES = 4  # F.normalize leaves the embeddings in fp32 under autocast
LOGIT_BYTES, LOGIT_PASSES, LOGIT_COPIES = 4, 8, 3  # logits, their softmax and gradient kept for the backward
CKPT_COMPUTE = 4 / 3  # recomputing the forward adds one forward (1/3 of forward + backward)


@dataclass(frozen=True)
class Setup:
    """What is planned: backbone, global batch, GPU and its count, and the modelling switches."""

    backbone: str
    global_batch: int
    gpus: int
    device: Device
    clip_logits: str = "local"  # "local": B x G per rank; "global": G x G per rank
    overlap: float = 0.0  # fraction of the all-reduce hidden behind the backward
    bucket_mib: float = 25.0  # DDP's gradient bucket (bucket_cap_mb): the all-reduce's message size

    @property
    def per_gpu(self) -> int:
        return self.global_batch // self.gpus


def _flops(tws: dict[str, Tower]) -> float:
    return sum(t.train_flops for t in tws.values())


def _logit_pairs(method: str, s: Setup, batch: int) -> tuple[float, int]:
    """(logit entries per matrix, matrices) a rank computes."""
    if not is_contrastive(method):
        return 0.0, 0
    return (float(batch) * s.global_batch, 2) if s.clip_logits == "local" else (float(s.global_batch) ** 2, 1)


def _speed(cal: Calibration, s: Setup) -> float:
    """Target-GPU seconds per calibration-device second."""
    if s.device.peak_tflops is None:
        return 1.0
    if cal.peak_tflops is None:
        raise CliError(f"the {cal.method} measurement comes from {cal.device!r}, whose peak FLOP/s is unknown; "
                       "plan with --gpu measured or measure on a GPU")
    return cal.peak_tflops / s.device.peak_tflops


def messages(method: str, s: Setup) -> dict[str, tuple[float, float]]:
    """Collective -> (bytes per step, bytes per message) for one GPU: the fp32 gradients in DDP buckets, and for a
    contrastive method the global batch's embeddings of both towers, one gathered tensor per tower."""
    grads = sum(t.params for t in towers(method, s.backbone).values()) * GRAD_BYTES
    out = {"all_reduce": (grads, min(grads, s.bucket_mib * MIB))}
    if is_contrastive(method):
        embed = s.global_batch * TEXT["embed_dim"] * EMBED_BYTES
        out["all_gather"] = (2 * embed, embed)
    return out


def step_terms(method: str, cal: Calibration, s: Setup, ckpt: bool) -> dict[str, float]:
    """Seconds per step: compute, all_reduce, all_gather, loss."""
    target, ref = towers(method, s.backbone), towers(method, cal.backbone)
    flops_ratio, speed, b = _flops(target) / _flops(ref), _speed(cal, s), s.per_gpu
    compute = (cal.fixed_s + cal.per_sample_s * b * flops_ratio) * speed * (CKPT_COMPUTE if ckpt else 1.0)
    flop_rate = _flops(ref) / cal.per_sample_s / speed  # achieved FLOP/s on the target GPU
    link, sent = s.device.link(s.gpus), messages(method, s)
    grads, bucket = sent["all_reduce"]
    terms = {"compute": compute, "all_reduce": comm.all_reduce_s(grads, s.gpus, link, bucket) * (1 - s.overlap),
             "all_gather": 0.0, "loss": 0.0}
    if "all_gather" in sent:  # gathered forward, its gradient reduce-scattered backward: twice the traffic
        embeds, per_tower = sent["all_gather"]
        terms["all_gather"] = 2 * comm.all_gather_s(embeds, s.gpus, link, per_tower)
        pairs, mats = _logit_pairs(method, s, b)
        matmul = 6 * pairs * mats * TEXT["embed_dim"]  # 2 FLOPs per multiply-add, x 3 for the backward
        traffic = pairs * mats * LOGIT_BYTES * LOGIT_PASSES / (s.device.hbm_tb_per_s * 1e12)
        terms["loss"] = matmul / flop_rate + traffic
    return terms


def links_used(method: str, s: Setup) -> dict[str, dict]:
    """What each collective of a step was costed with: the link, the message size and its bandwidth."""
    link = s.device.link(s.gpus)
    if s.gpus <= 1:
        return {}
    return {kind: {"link": link.name, "message_mib": message / MIB, "gb_per_s": comm.bandwidth(kind, link, message),
                   "latency_us": None if link.curve(kind) else link.latency_us}
            for kind, (_, message) in messages(method, s).items()}


def memory_mib(method: str, cal: Calibration, s: Setup, batch: int, ckpt: bool) -> float:
    """Peak MiB per GPU at per-GPU ``batch``: weights + optimizer + activations (+ gathered embeddings, logits)."""
    target, ref = towers(method, s.backbone), towers(method, cal.backbone)
    params = sum(t.params for t in target.values())
    ref_params = sum(t.params for t in ref.values())
    static = cal.mem_fixed_mib + (params - ref_params) * STATIC_BYTES_PER_PARAM / MIB
    static += params * GRAD_BYTES / MIB if s.gpus > 1 else 0.0  # DDP's gradient buckets
    per_unit = cal.mem_per_sample_mib / sum(t.activation_units for t in ref.values())  # MiB per layer x token x width
    if ckpt:  # kept: each block's fp32 input; recomputed: one block's activations at a time
        act = sum(4 * t.activation_units / MIB + per_unit * t.activation_units / t.layers for t in target.values())
    else:
        act = per_unit * sum(t.activation_units for t in target.values())
    pairs, mats = _logit_pairs(method, s, batch)
    gathered = s.global_batch * TEXT["embed_dim"] * EMBED_BYTES * 2 * 2 / MIB if mats else 0.0
    return static + act * batch + gathered + pairs * mats * LOGIT_BYTES * LOGIT_COPIES / MIB


def max_batch(method: str, cal: Calibration, s: Setup, ckpt: bool) -> int:
    """Largest per-GPU batch whose peak memory fits the GPU's usable memory (at this global batch)."""
    limit = s.device.memory_mib * USABLE_MEMORY
    if math.isinf(limit):
        return s.global_batch
    m0, m1 = memory_mib(method, cal, s, 0, ckpt), memory_mib(method, cal, s, 1, ckpt)
    if m1 <= m0:  # a calibration without a per-sample memory term: only the fixed part can run out
        return s.global_batch if m0 <= limit else 0
    return max(0, int((limit - m0) // (m1 - m0)))


def smallest_divisor_from(n: int, low: int) -> int:
    """The smallest divisor of ``n`` that is >= ``low``: a GPU count that splits the global batch evenly."""
    divisors = {d for i in range(1, math.isqrt(n) + 1) if n % i == 0 for d in (i, n // i)}
    return min(d for d in divisors if d >= low)


def plan_one(method: str, cal: Calibration, s: Setup, samples: float) -> dict:
    """One (method, GPU count): what fits, the step's terms, GPU-hours per epoch and the dominant term."""
    fit, fit_ckpt = max_batch(method, cal, s, False), max_batch(method, cal, s, True)
    if fit_ckpt < 1:
        static = memory_mib(method, cal, s, 0, True) / 1024
        raise CliError(f"{method} on {s.device.name}: not one image per GPU fits, even with gradient checkpointing "
                       f"({static:.1f} GiB before the first image, of {s.device.memory_mib / 1024:.1f} GiB)")
    if s.per_gpu > fit_ckpt:
        need = smallest_divisor_from(s.global_batch, math.ceil(s.global_batch / fit_ckpt))
        raise CliError(f"{method} on {s.gpus} x {s.device.name}: {s.per_gpu} per GPU does not fit (at most {fit} "
                       f"without and {fit_ckpt} with gradient checkpointing); use at least {need} GPUs")
    ckpt = s.per_gpu > fit
    terms = step_terms(method, cal, s, ckpt)
    step = sum(terms.values())
    steps = math.ceil(samples / s.global_batch)
    return {"method": method, "gpus": s.gpus, "per_gpu_batch": s.per_gpu, "max_batch": fit, "max_batch_ckpt": fit_ckpt,
            "grad_checkpointing": ckpt, "memory_gib": memory_mib(method, cal, s, s.per_gpu, ckpt) / 1024,
            "terms_s": terms, "step_s": step, "steps_per_epoch": steps, "gpu_hours": steps * step * s.gpus / 3600,
            "images_per_s_per_gpu": s.per_gpu / step, "dominant": max(terms, key=terms.get),
            "links": links_used(method, s)}
