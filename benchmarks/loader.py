"""Training-loader throughput on web-like shards: decode + RandomResizedCrop(224) + flip + label lookup, per core.

Web shards hold 384-512 px JPEGs, which the loader decodes in full and crops to 224 px. This benchmark makes such
shards once (cached in ``--work``, default runs/loader_bench, never committed): the shared Flickr8k photos (128 px,
square: the source squashed them) upscaled to a random side in 384-512 (bicubic) and re-encoded as baseline JPEG at
quality 90, with their captions, plus a labels file (every caption's CatLIP synsets, extracted once) so that the
label step is the loader's lookup, not the tagger. It then starts the real training loader (TrainDataset,
BatchPlan, torch DataLoader) with 1 and with 2 workers for every decoder option at once and takes batches from them
in short rounds, in rotating order, so that changing load on the machine falls on every option alike. A round
counts the CPU time the workers spend to make again the batches it took (read from /proc once they are idle again)
plus the main process's: **images per CPU-second** ("per core"), which other load disturbs far less than wall-clock
rates (a round mostly takes batches the workers had prefetched, so its wall time means nothing; the load average
around the rounds is reported):

- ``reference``: today's path, ``data.decode=reference``: decode_rgb (full decode), torchvision's transform,
  float32 normalised in the worker;
- ``fast``: ``data.decode=fast``: the same crops from reduced-size JPEG decoding (Pillow ``draft``), torch's
  uint8 resize, uint8 batches (normalised on the training device: not counted here, as it is not CPU work there);
- ``simplejpeg`` / ``turbojpeg``: the fast path with that library's (scaled) decoder, only when it is installed.

Every row's ``ratio_to_reference`` divides by the reference row with the same worker count, measured in the same run.

    .venv/bin/python benchmarks/loader.py              # 2,000 images, 10 rounds of 5 batches of 64: a quiet machine
    .venv/bin/python benchmarks/loader.py --quick      # 48 images, 4 rounds of 3 batches of 16: that it runs
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CATLIP_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
SHARD_VERSION = 1  # bump when the shard recipe changes: cached shards of another version are rebuilt
SIDES, QUALITY, PER_SHARD = (384, 512), 90, 500


# ---------------------------------------------------------------------- shards (made once)


def source_samples(limit: int):
    """(key, jpg, txt, json) of the first ``limit`` Flickr8k training samples, in shard order."""
    for k in range(6):
        path = SHARED / "flickr8k" / f"flickr8k-train-{k:03d}.tar"
        members: dict[str, dict[str, bytes]] = {}
        with tarfile.open(path) as tf:
            for m in tf:
                key, _, ext = m.name.partition(".")
                members.setdefault(key, {})[ext] = tf.extractfile(m).read()
        for key, parts in members.items():
            if {"jpg", "txt", "json"} <= set(parts):
                yield key, parts["jpg"], parts["txt"], parts["json"]
                limit -= 1
                if limit == 0:
                    return


def upscaled(jpg: bytes, side: int) -> bytes:
    from PIL import Image

    from catlip.data.images import decode_rgb

    img = decode_rgb(jpg).resize((side, side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()


def make_shards(work: Path, images: int, seed: int = 0) -> dict:
    """Shards + labels file + vocabulary in ``work``, reused when ``work/manifest.json`` matches."""
    want = {"version": SHARD_VERSION, "images": images, "seed": seed, "sides": list(SIDES), "quality": QUALITY}
    manifest = work / "manifest.json"
    if manifest.exists() and {k: v for k, v in json.loads(manifest.read_text()).items() if k in want} == want:
        return json.loads(manifest.read_text())
    from catlip.labels import get_extractor

    work.mkdir(parents=True, exist_ok=True)
    rng, ex = random.Random(seed), get_extractor("synsets")
    t0, n, sizes, doc_freq, labels = time.perf_counter(), 0, [], Counter(), {}
    shard = None
    for n, (key, jpg, txt, meta) in enumerate(source_samples(images)):
        if n % PER_SHARD == 0:
            if shard is not None:
                shard.close()
            shard = tarfile.open(work / f"bench-{n // PER_SHARD:03d}.tar", "w")
        side = rng.randint(*SIDES)
        data = upscaled(jpg, side)
        sizes.append(len(data))
        for name, payload in ((f"{key}.jpg", data), (f"{key}.txt", txt), (f"{key}.json", meta)):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            shard.addfile(info, io.BytesIO(payload))
        for caption in json.loads(meta)["captions"]:
            if caption not in labels:
                labels[caption] = ex.extract(caption)
        doc_freq.update({k for c in json.loads(meta)["captions"] for k in labels[c]})
    shard.close()
    with open(work / "labels.jsonl", "w", encoding="utf-8") as f:
        for caption, keys in labels.items():
            f.write(json.dumps({"caption": caption, "labels": keys}) + "\n")
    keys = sorted(k for k, c in doc_freq.items() if c >= 2) or sorted(doc_freq)
    from catlip.labels.vocab import Vocabulary

    Vocabulary(labels="synsets", options=ex.options, keys=keys, counts=[doc_freq[k] for k in keys], names=keys,
               glosses=[""] * len(keys), num_captions=len(labels)).save(work / "vocab.json")
    info = {**want, "shards": sorted(p.name for p in work.glob("bench-*.tar")), "images_written": n + 1,
            "mean_jpeg_bytes": round(sum(sizes) / len(sizes)), "captions": len(labels), "classes": len(keys),
            "seconds_to_make": round(time.perf_counter() - t0, 1)}
    manifest.write_text(json.dumps(info, indent=1))
    return info


# ---------------------------------------------------------------------- decoder options


def external_decoders() -> dict:
    """name -> (header(data) -> (w, h), decode(data, s) -> HWC uint8 RGB at about 1/s) for installed libraries."""
    found = {}
    try:
        import simplejpeg

        def sj_header(data):
            h, w, _, _ = simplejpeg.decode_jpeg_header(data)
            return w, h

        def sj_decode(data, s):
            h, w = simplejpeg.decode_jpeg_header(data)[:2]
            return simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=-(-h // s), min_width=-(-w // s))

        found["simplejpeg"] = (sj_header, sj_decode)
    except ImportError:
        pass
    try:
        from turbojpeg import TJPF_RGB, TurboJPEG

        jpeg = TurboJPEG()
        found["turbojpeg"] = (lambda data: jpeg.decode_header(data)[:2],
                              lambda data, s: jpeg.decode(data, pixel_format=TJPF_RGB, scaling_factor=(1, s)))
    except (ImportError, RuntimeError, OSError):  # the package without its libturbojpeg raises on construction
        pass
    return found


def external_transform(kind: str, size: int, scale_min: float, header, decode):
    """The fast path with another library's decoder: same draws, same crop and resize, its scaled decode."""
    import torch
    from PIL import Image

    from catlip.data.fast_decode import FastTrainTransform, dct_scale

    class ExternalJpeg(FastTrainTransform):
        def _decode_crop(self, data, max_pixels):
            try:
                w, h = header(bytes(data))
                if w * h > max_pixels:
                    return None
                crop = self.draw(torch.empty(1, 1, 1).expand(3, h, w))  # get_params reads the size only
                arr = decode(bytes(data), dct_scale(crop.height, crop.width, self.size))
            except Exception:  # noqa: BLE001 - the reference path decides
                return None
            f = w / arr.shape[1]
            if f > 1 and min(crop.width, crop.height) / f < self.size:
                return None  # the library scaled further than the crop allows
            return self._crop_resize(Image.fromarray(arr), crop, 1 if f == 1 else f), crop.flip

    return ExternalJpeg(kind, size, scale_min)


# ---------------------------------------------------------------------- measurement


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (clock ticks → seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Stream:
    """One decoder option with its DataLoader workers running: batches are taken in short timed rounds."""

    def __init__(self, work: Path, decoder: str, workers: int, args):
        from catlip.config import load_config
        from catlip.data import build_train_loader
        from catlip.labels.vocab import Vocabulary

        self.decoder, self.workers = decoder, workers
        mode = decoder if decoder in ("reference", "fast") else "fast"
        cfg = load_config(None, [f"model.image_size={args.size}", f"data.batch_size={args.batch}",
                                 "data.augment=rrc_flip", f"data.rrc_scale_min={args.scale_min}",
                                 f"data.labels_file={work / 'labels.jsonl'}", f"data.decode={mode}"])
        cfg.data.train = [str(path) for path in sorted(work.glob("bench-*.tar"))]
        loader = build_train_loader(cfg, Vocabulary.load(work / "vocab.json"), method_inputs=("image", "label_ids"),
                                    num_workers=workers, device="cpu")
        if decoder not in ("reference", "fast"):  # set before the workers fork, so they use it
            header, decode = external_decoders()[decoder]
            loader.dataset._transforms[args.size] = external_transform("rrc_flip", args.size, args.scale_min,
                                                                       header, decode)
        self.it = iter(loader.worker_batches())
        for _ in range(args.warmup * workers + 1):  # worker start, tagger and labels file loading, first batches
            self.dtype = str(next(self.it)["image"].dtype).replace("torch.", "")
        self.pids = [w.pid for w in self.it._workers]
        self.rounds: list[dict] = []

    def worker_cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def idle(self, timeout: float = 30.0) -> None:
        """Wait until the workers have refilled the prefetch queue and stopped (their CPU time stands still)."""
        last, still, t0 = self.worker_cpu(), 0, time.perf_counter()
        while still < 3 and time.perf_counter() - t0 < timeout:
            time.sleep(0.03)
            now = self.worker_cpu()
            still, last = (still + 1 if now == last else 0), now

    def round(self, batches: int) -> None:
        """Take ``batches`` batches; the CPU time is what the workers spend to make that many again."""
        self.idle()
        cpu0, main0, n = self.worker_cpu(), time.process_time(), 0
        for _ in range(batches):
            n += len(next(self.it)["image"])
        main = time.process_time() - main0
        self.idle()
        self.rounds.append({"images": n, "worker_cpu": self.worker_cpu() - cpu0, "main_cpu": main})

    def last_rate(self) -> float:
        r = self.rounds[-1]
        return r["images"] / max(1e-9, r["worker_cpu"] + r["main_cpu"])

    def result(self) -> dict:
        n = sum(r["images"] for r in self.rounds)
        worker, main = sum(r["worker_cpu"] for r in self.rounds), sum(r["main_cpu"] for r in self.rounds)
        per_round = sorted(r["images"] / (r["worker_cpu"] + r["main_cpu"]) for r in self.rounds
                           if r["worker_cpu"] + r["main_cpu"] > 0)
        return {"decoder": self.decoder, "workers": self.workers, "images": n, "rounds": len(self.rounds),
                "worker_cpu_seconds": round(worker, 2), "main_cpu_seconds": round(main, 2),
                "img_per_s_per_core": round(n / (worker + main), 1),
                "img_per_s_per_worker_cpu": round(n / worker, 1) if worker else None,
                "per_round_min_median_max": [round(per_round[0], 1), round(per_round[len(per_round) // 2], 1),
                                             round(per_round[-1], 1)] if per_round else None,
                "batch_dtype": self.dtype}


def measure(work: Path, decoders: list[str], workers: list[int], args) -> list[dict]:
    """Every (decoder, workers) stream in turn, round after round (the order rotates), so that changing load on
    the machine falls on every option alike; the load average is sampled around every round."""
    import torch

    torch.set_num_threads(1)  # what a DataLoader worker uses
    streams = [Stream(work, d, w, args) for w in workers for d in decoders]
    loads = [os.getloadavg()[0]]
    for k in range(args.rounds):
        for stream in streams[k % len(streams):] + streams[:k % len(streams)]:
            stream.round(args.round_batches)
            loads.append(os.getloadavg()[0])
        print(f"round {k + 1}/{args.rounds} (images/CPU-s): "
              + ", ".join(f"{s.decoder}/{s.workers}w {s.last_rate():.0f}" for s in streams), flush=True)
    rows = [s.result() for s in streams]
    for row in rows:
        row["load_average_1min_min_max"] = [round(min(loads), 2), round(max(loads), 2)]
    return rows


def scale_shares(work: Path, args, draws: int = 2000) -> dict:
    """How often the fast path decodes at each DCT scale on these shards (header reads and draws only)."""
    import torch
    from PIL import Image

    from catlip.data.fast_decode import FastTrainTransform, dct_scale

    ft, sizes = FastTrainTransform("rrc_flip", args.size, args.scale_min), []
    for path in sorted(work.glob("bench-*.tar")):
        with tarfile.open(path) as tf:
            sizes += [Image.open(tf.extractfile(m)).size for m in tf if m.name.endswith(".jpg")]
    counts: Counter = Counter()
    for k in range(draws):
        torch.manual_seed(k)
        w, h = sizes[k % len(sizes)]
        crop = ft.draw(torch.empty(1, 1, 1).expand(3, h, w))
        counts[dct_scale(crop.height, crop.width, args.size)] += 1
    return {f"1/{s}": round(c / draws, 4) for s, c in sorted(counts.items())}


def environment() -> dict:
    import PIL
    import torch
    import torchvision
    from PIL import features

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "pillow": PIL.__version__,
            "libjpeg_turbo": features.version("libjpeg_turbo"), "external_decoders": sorted(external_decoders()),
            "load_average": [round(x, 2) for x in os.getloadavg()], "commit": commit.stdout.strip(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def add_ratios(rows: list[dict]) -> None:
    ref = {r["workers"]: r["img_per_s_per_core"] for r in rows if r["decoder"] == "reference"}
    for r in rows:
        r["ratio_to_reference"] = round(r["img_per_s_per_core"] / ref[r["workers"]], 2) if r["workers"] in ref else None


def plot(rows: list[dict], out: Path, quick: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    decoders = list(dict.fromkeys(r["decoder"] for r in rows))
    workers = sorted({r["workers"] for r in rows})
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(decoders) * len(workers) / 2, 3.4))
    width = 0.8 / len(workers)
    for j, w in enumerate(workers):
        vals = [next((r["img_per_s_per_core"] for r in rows if r["decoder"] == d and r["workers"] == w), 0)
                for d in decoders]
        bars = ax.bar([i + j * width for i in range(len(decoders))], vals, width, label=f"{w} worker(s)")
        for bar, d in zip(bars, decoders):
            ratio = next((r["ratio_to_reference"] for r in rows if r["decoder"] == d and r["workers"] == w), None)
            if ratio:
                ax.annotate(f"{ratio:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                            va="bottom", fontsize=7)
    ax.set_xticks([i + width * (len(workers) - 1) / 2 for i in range(len(decoders))], decoders)
    ax.set_ylabel("images / CPU-second")
    ax.set_title("decode + RandomResizedCrop + flip + labels" + (" (--quick)" if quick else ""), fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="48 images, 4 short rounds: checks that it runs")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "loader_bench", help="cache of the made shards")
    p.add_argument("--out", type=Path, default=RESULTS / "loader.json", help="result JSON (a PNG next to it)")
    p.add_argument("--images", type=int, default=None, help="photos in the shards (default 2000; quick 48)")
    p.add_argument("--workers", default="1,2", help="DataLoader worker counts")
    p.add_argument("--decoders", default="", help="subset of reference,fast,simplejpeg,turbojpeg (default: all "
                                                   "available)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--scale-min", type=float, default=0.08, help="RandomResizedCrop scale (timm/torchvision default)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 64; quick 16)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per option (default 10; quick 4)")
    p.add_argument("--round-batches", type=int, default=None, help="batches per round (default 5; quick 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches per worker")
    args = p.parse_args()
    quick = args.quick
    args.images = args.images or (48 if quick else 2000)
    args.batch = args.batch or (16 if quick else 64)
    args.rounds = args.rounds or (4 if quick else 10)
    args.round_batches = args.round_batches or (3 if quick else 5)
    if not (SHARED / "flickr8k" / "flickr8k-train-000.tar").exists():
        sys.exit(f"loader benchmark: {SHARED / 'flickr8k'} is absent (set CATLIP_SHARED_DATA)")
    sys.path.insert(0, str(ROOT / "src"))
    work = args.work / f"n{args.images}"
    shards = make_shards(work, args.images)
    available = ["reference", "fast", *external_decoders()]
    decoders = [d for d in (args.decoders.split(",") if args.decoders else available) if d]
    unknown = [d for d in decoders if d not in available]
    if unknown:
        p.error(f"decoder(s) {', '.join(unknown)} not available here (available: {', '.join(available)})")
    rows = measure(work, decoders, [int(x) for x in args.workers.split(",")], args)
    add_ratios(rows)
    result = {"what": "decode + RandomResizedCrop + flip + label lookup (labels file): images per CPU-second of "
                      "the DataLoader workers + main process, summed over interleaved rounds; fast/simplejpeg/"
                      "turbojpeg rows hand uint8 batches to the device, where they are normalised (not counted)",
              "quick": quick, "image_size": args.size, "rrc_scale": [args.scale_min, 1.0], "batch": args.batch,
              "rounds": args.rounds, "batches_per_round": args.round_batches,
              "reference": "data.decode=reference (decode_rgb + the torchvision transform + float normalisation in "
                           "the worker); per-sample seeding reseeds only the CPU generator in every mode, so the "
                           "~0.2 ms torch.manual_seed cost that the loader had before is not part of any ratio",
              "shards": {**{k: v for k, v in shards.items() if k != "shards"},
                         "work": str(work.relative_to(ROOT)) if work.is_relative_to(ROOT) else str(work),
                         "dct_scale_share": scale_shares(work, args)},
              "environment": environment(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(rows, args.out.with_suffix(".png"), quick)
    print(f"{'decoder':<12}{'workers':>8}{'img/s/core':>12}{'per round (min, median, max)':>30}{'ratio':>7}")
    for r in rows:
        print(f"{r['decoder']:<12}{r['workers']:>8}{r['img_per_s_per_core']:>12}"
              f"{str(r['per_round_min_median_max']):>30}{r['ratio_to_reference'] or '':>7}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
