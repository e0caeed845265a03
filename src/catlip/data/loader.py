"""Training batches: sources → (seeded) caption choice, labels, augmentation → padded id tensors.

Everything random about sample ``i`` in epoch ``e`` (which caption, the crop, the flip) comes from a generator
seeded by (seed, e, i), so a sample looks the same whichever worker or rank reads it and after any resume.
Bad samples (unreadable, truncated, zero-byte, non-image, decompression bombs, missing files, no caption) are
dropped from their batch and counted; the counts (and the first sample of each reason) travel with the batch to
the main process. A full pass over the data (one epoch's worth of samples on this process) without a single usable
sample is a ``DataError`` naming the reasons, the first bad sample and what the sources looked for, instead of an
endless loop; a ``data.train`` entry with more than ``data.max_skip_fraction`` of its samples skipped gets one
``DataWarning`` with the first batches.
"""

from __future__ import annotations

import contextlib
import random
import sys
import warnings
from collections import Counter

import torch
from PIL import Image

from catlip.data import fast_decode
from catlip.data.images import Skip, decode_or_skip, decode_rgb, read_skip
from catlip.data.sampler import BatchPlan, BatchSpec
from catlip.data.sources import open_sources, skip_summary
from catlip.data.transforms import normalize_uint8, train_transform
from catlip.errors import DataError


def _read_labels_file(path: str) -> dict[str, list[str]]:
    """caption -> label keys from `catlip labels --input ... --output FILE` ({"caption", "labels"} JSON lines).

    Captions missing from the file are labelled by the extractor; unreadable lines are ignored (the file is a
    cache of the extractor's own output, never the only source of labels).
    """
    import json

    known: dict[str, list[str]] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    known[rec["caption"]] = [str(k) for k in rec["labels"]]
                except (ValueError, KeyError, TypeError):
                    continue
    except OSError as err:
        from catlip.errors import DataError

        raise DataError(f"data.labels_file {path}: {err}") from None
    return known


def decode_image(data, max_pixels: int) -> Image.Image:
    """8-bit RGB image from encoded bytes or a PIL image: the shared decoder of :mod:`catlip.data.images`.

    16/32-bit and float images are scaled by their bit depth, transparency is composited on white. Raises
    ``Image.DecompressionBombError`` above ``max_pixels`` pixels, and Pillow's own errors for unreadable data.
    """
    return decode_rgb(data, max_pixels=max_pixels)


def read_sample(source, index: int):
    """(raw image, captions, class) of sample ``index``, or the reason it is skipped: missing_file, unreadable,
    empty_caption. The one place these reasons are decided (training loader and LiT's feature cache)."""
    try:
        raw, captions, cls = source.read(index)
    except OSError as err:
        return read_skip(err)
    if not captions:
        return Skip("empty_caption", "no caption")
    return raw, captions, cls


_MIN_EVIDENCE = 32  # samples of a source read before its skipped share is judged (data.max_skip_fraction)


class DataWarning(UserWarning):
    """Much of a data source is skipped (see ``data.max_skip_fraction``)."""


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return random.Random(f"catlip-sample:{seed}:{epoch}:{index}").getrandbits(62)


@contextlib.contextmanager
def _seeded(seed: int):
    """The CPU torch RNG seeded for one sample, restored afterwards.

    Only the CPU generator: ``torch.manual_seed`` would also (re)seed every CUDA device (in a num_workers=0 main
    process that reset the training step's CUDA RNG to the last sample's seed) and costs ~0.2 ms per call.
    """
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


class TrainDataset(torch.utils.data.Dataset):
    """Map-style dataset whose ``__getitems__`` turns a :class:`BatchSpec` into a collated batch."""

    def __init__(self, source, data_cfg, *, seed: int, vocab=None, want_labels: bool, want_text: bool):
        self.source, self.cfg, self.seed, self.vocab = source, data_cfg, seed, vocab
        self.want_labels, self.want_text = want_labels and vocab is not None, want_text
        self._extractor = None
        self._transforms: dict[int, object] = {}
        self.decode = data_cfg.decode  # reference | fast | gpu (the loader may turn gpu into fast)

    def __len__(self) -> int:
        return len(self.source)

    def _labels(self, caption: str) -> list[int]:
        if self._extractor is None:  # built lazily, inside each worker process
            self._extractor = self.vocab.extractor()  # the labels layer's object: the data layer imports no labels
            self._known = _read_labels_file(self.cfg.labels_file) if self.cfg.labels_file else {}
        keys = self._known.get(caption)
        return self.vocab.encode(keys if keys is not None else self._extractor.extract(caption))

    def _transform(self, res: int):
        """data.decode=reference: the float transform; fast / gpu: a FastTrainTransform (uint8 out)."""
        if res not in self._transforms:
            if self.decode == "reference":  # normalised here; the fast path's uint8 is normalised per batch
                self._transforms[res] = train_transform(self.cfg.augment, res, self.cfg.rrc_scale_min,
                                                        self.cfg.mean, self.cfg.std)
            else:
                self._transforms[res] = fast_decode.FastTrainTransform(self.cfg.augment, res, self.cfg.rrc_scale_min)
        return self._transforms[res]

    def _image(self, raw, res: int, seed: int, gpu: bool = True):
        """The sample's augmented image (a tensor, or a GPU decode job), or the reason it is skipped."""
        transform = self._transform(res)
        if self.decode != "reference" and isinstance(raw, (bytes, bytearray, memoryview)):
            if gpu and self.decode == "gpu":
                with _seeded(seed):
                    job = fast_decode.gpu_job(raw, transform, self.cfg.max_image_pixels, seed)
                if job is not None:
                    return job
            with _seeded(seed):
                out = transform.fast(raw, self.cfg.max_image_pixels)
            if out is not None:
                return out
        # the reference decoder, which decides (and names) what is skipped, whatever data.decode says
        img = decode_or_skip(raw, self.cfg.max_image_pixels)
        if isinstance(img, Skip):
            return img
        with _seeded(seed):
            return transform(img)

    def load(self, index: int, epoch: int, res: int):
        """One sample as (normalised float image tensor, caption, label ids, class) or a skip reason string."""
        out = self.sample(index, epoch, res, gpu=False)
        if isinstance(out, str) or out[0].dtype != torch.uint8:
            return out
        return (normalize_uint8(out[0], self.cfg.mean, self.cfg.std), *out[1:])

    def sample(self, index: int, epoch: int, res: int, gpu: bool = True):
        """As :meth:`load`, but the image as the batch carries it: uint8 (data.decode=fast) or a GPU job."""
        read = read_sample(self.source, index)
        if isinstance(read, Skip):
            return read
        raw, captions, cls = read
        s = _sample_seed(self.seed, epoch, index)
        tensor = self._image(raw, res, s, gpu=gpu)
        if isinstance(tensor, str):
            return tensor
        if isinstance(tensor, fast_decode.GpuJob):
            tensor.index = index
        caption = random.Random(s).choice(captions)
        ids = self._labels(caption) if self.want_labels else []
        return tensor, caption, ids, cls

    def _example(self, index: int, skip: str) -> str:
        describe = getattr(self.source, "describe", None)
        where = describe(index) if describe is not None else f"sample {index}"
        error = getattr(skip, "error", "")
        return f"{where}: {error}" if error else where

    def __getitems__(self, spec: BatchSpec) -> dict:
        skipped: Counter = Counter()
        examples: dict[tuple[int, str], str] = {}  # (source part, reason) -> first such sample of this batch
        tried: Counter = Counter()  # samples per source part (data.train entry), for data.max_skip_fraction
        bad: Counter = Counter()  # (source part, reason) -> samples
        part_of = getattr(self.source, "part_index", None)
        rows = []
        for index in spec.indices:
            out = self.sample(index, spec.epoch, spec.resolution)
            part = part_of(index) if part_of is not None else 0
            tried[part] += 1
            if isinstance(out, str):
                reason = str(out)  # plain str keys: the counts go into checkpoints (weights_only loading)
                skipped[reason] += 1
                bad[part, reason] += 1
                if (part, reason) not in examples:
                    examples[part, reason] = self._example(index, out)
            else:
                rows.append(out)
        batch = collate(rows, skipped, spec, self.want_labels, self.want_text, self.cfg.context_length)
        batch.update(_skip_examples=examples, _tried=dict(tried), _bad=dict(bad))
        return batch

    def __getitem__(self, spec: BatchSpec) -> dict:
        return self.__getitems__(spec)


def collate(rows, skipped: Counter, spec: BatchSpec, want_labels: bool, want_text: bool, context_length: int):
    res = spec.resolution
    images, jobs = fast_decode.stack_images([r[0] for r in rows], res) if rows else (torch.zeros(0, 3, res, res), [])
    batch = {
        "image": images,
        "class": torch.tensor([r[3] for r in rows], dtype=torch.int64),
        "_skipped": dict(skipped),
        "_samples_after": spec.samples_after,
        "_epoch": spec.epoch,
    }
    if jobs:
        batch["_gpu_jobs"] = jobs  # (row, GpuJob): decoded on the device by the main process
    if want_labels:
        width = max([len(r[2]) for r in rows] + [1])
        ids = torch.full((len(rows), width), -1, dtype=torch.int64)
        for k, r in enumerate(rows):
            ids[k, : len(r[2])] = torch.tensor(r[2], dtype=torch.int64)
        batch["label_ids"] = ids
    if want_text:
        batch["text"] = tokenize_captions([r[1] for r in rows], context_length)
    return batch


CHARS_PER_TOKEN = 40  # above any CLIP BPE token's length: a caption cut here keeps all the tokens the model sees


def tokenize_captions(captions: list[str], context_length: int):
    """open_clip's tokens of each caption, read from its first ``context_length * CHARS_PER_TOKEN`` characters:
    BPE merges cost the square of a word's length, so one 1 MB caption in a web shard would stall a worker for
    seconds, and the context keeps only the first ``context_length`` tokens anyway."""
    import open_clip

    limit = context_length * CHARS_PER_TOKEN
    return open_clip.tokenize([c[:limit] for c in captions], context_length=context_length)


def ignore_preemption_signals(_worker_id: int) -> None:
    """Workers leave SIGTERM / SIGUSR1 to the main process: a scheduler signals the whole process group, and a
    worker killed by it would end the run before the main process writes its pre-emption checkpoint. Workers still
    stop when the loader shuts them down, and exit by themselves when the main process is gone."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


class TrainLoader:
    """Endless stream of batches from ``start_sample`` on; ``stats`` counts every skipped sample by reason.

    One epoch's worth of samples (per process) without a usable one raises ``DataError`` (see the module
    docstring); ``examples`` keeps the first skipped sample per (source part, reason), ``tried`` / ``bad`` count
    the samples read per source part (position in ``data.train``) and the skipped ones per (part, reason).
    """

    def __init__(self, dataset: TrainDataset, plan: BatchPlan, *, start_sample: int, num_workers: int,
                 stats: Counter, max_skip_fraction: float = 0.5, device: str | torch.device = "cpu"):
        self.dataset, self.plan, self.start_sample = dataset, plan, start_sample
        self.device = torch.device(device)  # uint8 images (data.decode=fast / gpu) are normalised there
        self.num_workers, self.stats = num_workers, stats
        self.samples_seen, self.epoch = start_sample, 0
        self.max_skip_fraction = max_skip_fraction
        self.examples: dict[tuple[int, str], str] = {}
        self.tried: Counter = Counter()
        self.bad: Counter = Counter()
        self._skip_checked: set[int] = set()  # source parts whose skipped share has been judged

    def worker_batches(self) -> torch.utils.data.DataLoader:
        """The batches as the workers collate them (uint8 images and GPU jobs not yet on the device).

        One endless pass (the plan never ends), so persistent workers would change nothing; pinned memory where
        batches go to a CUDA device, for the non-blocking copy.
        """
        return torch.utils.data.DataLoader(
            self.dataset, batch_sampler=self.plan.iter_from(self.start_sample), collate_fn=_identity,
            num_workers=self.num_workers, persistent_workers=False,
            prefetch_factor=2 if self.num_workers else None, pin_memory=self.device.type == "cuda",
            # its own generator: creating the iterator must not consume the global RNG (exact resume)
            generator=torch.Generator().manual_seed(self.plan.seed),
            worker_init_fn=ignore_preemption_signals,
        )

    def __iter__(self):
        loader = self.worker_batches()
        # a run of empty batches: where it started (global samples), its skips, its first bad sample
        empty_from, empty_skips, empty_first, empty_need = self.samples_seen, Counter(), None, None
        first_epoch = None
        for batch in loader:
            skipped = batch.pop("_skipped")
            self.stats.update(skipped)
            examples = batch.pop("_skip_examples", {})
            for key, example in examples.items():
                self.examples.setdefault(key, example)
            self.tried.update(batch.pop("_tried", {}))
            self.bad.update(batch.pop("_bad", {}))
            self.samples_seen = batch.pop("_samples_after")
            self.epoch = batch.pop("_epoch")
            self._to_device(batch)
            first_epoch = self.epoch if first_epoch is None else first_epoch
            if batch_size(batch) == 0:  # every sample of this batch was bad; move on, but not forever
                empty_skips.update(skipped)
                if empty_first is None and examples:
                    empty_first = next(iter(examples.items()))
                if empty_need is None:
                    empty_need = self.plan.epoch_length(self.epoch)
                if self.samples_seen - empty_from >= empty_need:
                    raise DataError(self._no_batch_message(empty_skips, empty_first))
                continue
            empty_from, empty_skips, empty_first, empty_need = self.samples_seen, Counter(), None, None
            if len(self._skip_checked) < len(self._parts()):
                self._warn_skipped_sources(end_of_pass=self.epoch > first_epoch)
            yield batch

    def _to_device(self, batch: dict) -> None:
        """uint8 images → the device, GPU decode jobs done there, then normalised (float32) on the device."""
        jobs = batch.pop("_gpu_jobs", [])
        if "image" not in batch:  # cached image features (catlip.train.feature_cache): nothing to decode
            return
        if batch["image"].dtype != torch.uint8:
            return
        images = batch["image"].to(self.device, non_blocking=True)
        if jobs:
            images = self._decode_jobs(images, jobs, batch)
        data_cfg = self.dataset.cfg
        batch["image"] = normalize_uint8(images, data_cfg.mean, data_cfg.std)

    def _decode_jobs(self, images: torch.Tensor, jobs: list, batch: dict) -> torch.Tensor:
        """Decode the batch's JPEGs on the device; one the device fails on takes the CPU path (and may be skipped)."""
        failed = fast_decode.decode_jobs(images, jobs, images.shape[-1])
        by_row, drop = {row: job for row, job in jobs}, []
        for row in failed:
            job = by_row[row]
            out = self.dataset._image(job.data, images.shape[-1], job.seed, gpu=False)
            if isinstance(out, str):  # the reference decoder rejects it: skipped and counted as in a worker
                drop.append(row)
                part = self.dataset.source.part_index(job.index) if hasattr(self.dataset.source, "part_index") else 0
                self.stats[str(out)] += 1
                self.bad[part, str(out)] += 1
                self.examples.setdefault((part, str(out)), self.dataset._example(job.index, out))
            else:
                images[row] = out.to(images.device)
        if drop:
            keep = [k for k in range(len(images)) if k not in drop]
            for key in ("class", "label_ids", "text"):
                if key in batch:
                    batch[key] = batch[key][keep]
            images = images[keep]
        return images

    def _parts(self) -> list:
        source = self.dataset.source
        return list(getattr(source, "all_parts", [source]))

    def _no_batch_message(self, skips: Counter, first) -> str:
        source = self.dataset.source
        index = getattr(source, "index_skips", Counter())
        parts = self._parts()
        text = (f"no usable training sample in a full pass over data.train ({sum(skips.values()):,} samples read on "
                f"this process, every one skipped: {skip_summary(skips)})")
        if sum(index.values()):
            text += f"; skipped while indexing: {skip_summary(index)}"
        if first is not None:
            (_, reason), example = first
            text += f"; first: {reason} at {example}"
        looked = [p.looked_for() for p in parts if hasattr(p, "looked_for")]
        if looked:
            text += "; looked for: " + " | ".join(looked)
        return text.replace("\n", " ")

    def _warn_skipped_sources(self, end_of_pass: bool = False) -> None:
        """Warn once per data.train entry whose skipped share exceeds data.max_skip_fraction (main process).

        The share counts the samples dropped while indexing exactly and estimates the rest from the samples read
        so far; a source is judged once its index alone is over the limit, once ``_MIN_EVIDENCE`` of its samples
        (or all) were read, or at the end of the first pass, so the warning comes with the first batches.
        """
        if self.plan.rank != 0 or self.max_skip_fraction >= 1:
            return
        for k, part in enumerate(self._parts()):
            if k in self._skip_checked:
                continue
            index = Counter(getattr(part, "index_skips", {}))
            n, indexed_bad = len(part), sum(index.values())
            total = n + indexed_bad
            tried = self.tried[k]
            read_bad = Counter({reason: c for (p, reason), c in self.bad.items() if p == k})
            if total == 0:
                self._skip_checked.add(k)
                continue
            if not (end_of_pass or tried >= min(n, _MIN_EVIDENCE) or indexed_bad > self.max_skip_fraction * total):
                continue  # too few of its samples read yet to judge
            self._skip_checked.add(k)
            share = (indexed_bad + (n * sum(read_bad.values()) / tried if tried else 0)) / total
            if share <= self.max_skip_fraction:
                continue
            name = getattr(part, "name", f"data.train[{k}]")
            parts = []
            if indexed_bad:
                parts.append(f"{indexed_bad:,} of {total:,} while indexing ({skip_summary(index)})")
            if tried:
                parts.append(f"{sum(read_bad.values()):,} of the first {tried:,} read ({skip_summary(read_bad)})")
            first = next((f"{reason} at {ex}" for (p, reason), ex in self.examples.items() if p == k), None)
            first = first or next((f"{reason} at {ex}" for reason, ex in getattr(part, "examples", {}).items()), None)
            looked = part.looked_for() if hasattr(part, "looked_for") else name
            message = (f"data source {name}: about {share:.0%} of its samples are skipped, more than "
                       f"data.max_skip_fraction={self.max_skip_fraction:g} ({'; '.join(parts)})"
                       + (f"; first: {first}" if first else "") + f"; looked for: {looked}")
            warnings.warn(message.replace("\n", " "), DataWarning, stacklevel=2)


def batch_size(batch: dict) -> int:
    """Samples in a training batch: its images, or the cached image features that stand in for them."""
    return len(batch["image"] if "image" in batch else batch["image_features"])


def _identity(batch):
    return batch


def _device(cfg, device) -> torch.device:
    """The training device: the one the trainer picks from ``train.device`` unless given."""
    if device is not None:
        return torch.device(device)
    import os

    from catlip.runtime import pick_device

    return pick_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))


def _gpu_decode_notice(cfg, dataset: TrainDataset, device: torch.device, rank: int) -> None:
    """data.decode=gpu without CUDA (or for an augmentation it does not cover): one line, then the CPU path."""
    why = ("CUDA is not available" if device.type != "cuda"
           else f"data.augment={cfg.data.augment} is decoded on the CPU" if cfg.data.augment != "rrc_flip" else "")
    if not why:
        return
    if device.type != "cuda":
        dataset.decode = "fast"
    if rank == 0:
        print(f"catlip: data.decode=gpu: {why}; using the CPU fast path (data.decode=fast)", file=sys.stderr)


def build_train_loader(cfg, vocab, *, method_inputs, rank: int = 0, world_size: int = 1, start_sample: int = 0,
                       num_workers: int | None = None, device: str | torch.device | None = None) -> TrainLoader:
    """The contract of docs/design.md: batches of ``image``, ``label_ids`` (padded -1), ``text`` (if wanted).

    ``image`` is float32 and normalised; with data.decode=fast or gpu it is already on ``device`` (default: the
    device the trainer picks from ``train.device``), where it was normalised from uint8.
    """
    stats: Counter = Counter()
    source = open_sources(cfg.data, seed=cfg.train.seed, stats=stats, image_size=cfg.model.image_size)
    dataset = TrainDataset(source, cfg.data, seed=cfg.train.seed, vocab=vocab,
                           want_labels="label_ids" in method_inputs, want_text="text" in method_inputs)
    plan = BatchPlan(len(source), cfg.data.batch_size, seed=cfg.train.seed, image_size=cfg.model.image_size,
                     world_size=world_size, rank=rank,
                     multiscale_sizes=cfg.data.multiscale_sizes if cfg.data.multiscale else None)
    workers = cfg.data.num_workers if num_workers is None else num_workers
    device = _device(cfg, device)
    if cfg.data.decode == "gpu":
        _gpu_decode_notice(cfg, dataset, device, rank)
    return TrainLoader(dataset, plan, start_sample=start_sample, num_workers=workers, stats=stats,
                       max_skip_fraction=cfg.data.max_skip_fraction, device=device)
