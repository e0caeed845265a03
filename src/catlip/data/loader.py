"""Training batches: sources → (seeded) caption choice, labels, augmentation → padded id tensors.

Everything random about sample ``i`` in epoch ``e`` (which caption, the crop, the flip) comes from a generator
seeded by (seed, e, i), so a sample looks the same whichever worker or rank reads it and after any resume.
Bad samples (unreadable, truncated, zero-byte, non-image, decompression bombs, missing files, no caption) are
dropped from their batch and counted; the counts travel with the batch to the main process.
"""

from __future__ import annotations

import random
from collections import Counter

import torch
from PIL import Image

from catlip.data.images import decode_rgb
from catlip.data.sampler import BatchPlan, BatchSpec
from catlip.data.sources import open_sources
from catlip.data.transforms import train_transform


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


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return random.Random(f"catlip-sample:{seed}:{epoch}:{index}").getrandbits(62)


class TrainDataset(torch.utils.data.Dataset):
    """Map-style dataset whose ``__getitems__`` turns a :class:`BatchSpec` into a collated batch."""

    def __init__(self, source, data_cfg, *, seed: int, vocab=None, want_labels: bool, want_text: bool):
        self.source, self.cfg, self.seed, self.vocab = source, data_cfg, seed, vocab
        self.want_labels, self.want_text = want_labels and vocab is not None, want_text
        self._extractor = None
        self._transforms: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.source)

    def _labels(self, caption: str) -> list[int]:
        if self._extractor is None:  # built lazily, inside each worker process
            from catlip.labels import get_extractor

            self._extractor = get_extractor(self.vocab.method, **dict(self.vocab.options))
            self._known = _read_labels_file(self.cfg.labels_file) if self.cfg.labels_file else {}
        keys = self._known.get(caption)
        return self.vocab.encode(keys if keys is not None else self._extractor.extract(caption))

    def _transform(self, res: int):
        if res not in self._transforms:
            self._transforms[res] = train_transform(self.cfg.augment, res, self.cfg.rrc_scale_min)
        return self._transforms[res]

    def load(self, index: int, epoch: int, res: int):
        """One sample as (image tensor, caption, label ids, class) or a skip reason string."""
        try:
            raw, captions, cls = self.source.read(index)
        except FileNotFoundError:
            return "missing_file"
        except OSError:
            return "unreadable"
        if not captions:
            return "empty_caption"
        try:
            img = decode_image(raw, self.cfg.max_image_pixels)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            return "decompression_bomb"
        except Exception:  # noqa: BLE001 - PIL raises many types for corrupt files; all mean "skip this one"
            return "corrupt_image"
        s = _sample_seed(self.seed, epoch, index)
        caption = random.Random(s).choice(captions)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            tensor = self._transform(res)(img)
        ids = self._labels(caption) if self.want_labels else []
        return tensor, caption, ids, cls

    def __getitems__(self, spec: BatchSpec) -> dict:
        skipped: Counter = Counter()
        rows = []
        for index in spec.indices:
            out = self.load(index, spec.epoch, spec.resolution)
            if isinstance(out, str):
                skipped[out] += 1
            else:
                rows.append(out)
        return collate(rows, skipped, spec, self.want_labels, self.want_text, self.cfg.context_length)

    def __getitem__(self, spec: BatchSpec) -> dict:
        return self.__getitems__(spec)


def collate(rows, skipped: Counter, spec: BatchSpec, want_labels: bool, want_text: bool, context_length: int):
    res = spec.resolution
    batch = {
        "image": torch.stack([r[0] for r in rows]) if rows else torch.zeros(0, 3, res, res),
        "class": torch.tensor([r[3] for r in rows], dtype=torch.int64),
        "_skipped": dict(skipped),
        "_samples_after": spec.samples_after,
        "_epoch": spec.epoch,
    }
    if want_labels:
        width = max([len(r[2]) for r in rows] + [1])
        ids = torch.full((len(rows), width), -1, dtype=torch.int64)
        for k, r in enumerate(rows):
            ids[k, : len(r[2])] = torch.tensor(r[2], dtype=torch.int64)
        batch["label_ids"] = ids
    if want_text:
        import open_clip

        batch["text"] = open_clip.tokenize([r[1] for r in rows], context_length=context_length)
    return batch


class TrainLoader:
    """Endless stream of batches from ``start_sample`` on; ``stats`` counts every skipped sample by reason."""

    def __init__(self, dataset: TrainDataset, plan: BatchPlan, *, start_sample: int, num_workers: int,
                 stats: Counter):
        self.dataset, self.plan, self.start_sample = dataset, plan, start_sample
        self.num_workers, self.stats = num_workers, stats
        self.samples_seen, self.epoch = start_sample, 0

    def __iter__(self):
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=self.plan.iter_from(self.start_sample), collate_fn=_identity,
            num_workers=self.num_workers, persistent_workers=False,
            prefetch_factor=2 if self.num_workers else None,
            # its own generator: creating the iterator must not consume the global RNG (exact resume)
            generator=torch.Generator().manual_seed(self.plan.seed),
        )
        for batch in loader:
            self.stats.update(batch.pop("_skipped"))
            self.samples_seen = batch.pop("_samples_after")
            self.epoch = batch.pop("_epoch")
            if len(batch["image"]) == 0:  # every sample of this batch was bad; move on
                continue
            yield batch


def _identity(batch):
    return batch


def build_train_loader(cfg, vocab, *, method_inputs, rank: int = 0, world_size: int = 1, start_sample: int = 0,
                       num_workers: int | None = None) -> TrainLoader:
    """The contract of docs/design.md: batches of ``image``, ``label_ids`` (padded -1), ``text`` (if wanted)."""
    stats: Counter = Counter()
    source = open_sources(cfg.data, seed=cfg.train.seed, stats=stats)
    dataset = TrainDataset(source, cfg.data, seed=cfg.train.seed, vocab=vocab,
                           want_labels="label_ids" in method_inputs, want_text="text" in method_inputs)
    plan = BatchPlan(len(source), cfg.data.batch_size, seed=cfg.train.seed, image_size=cfg.data.image_size,
                     world_size=world_size, rank=rank,
                     multiscale_sizes=cfg.data.multiscale_sizes if cfg.data.multiscale else None)
    workers = cfg.data.num_workers if num_workers is None else num_workers
    return TrainLoader(dataset, plan, start_sample=start_sample, num_workers=workers, stats=stats)
