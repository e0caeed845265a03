"""The one feature cache: what a frozen image encoder gives a data set, computed once, kept on disk.

Every entry is keyed by the encoder's weights (:func:`module_hash`), the data and the image size (with the
preprocessing), so changed weights or data are never read as valid; an entry whose files fail to load or disagree
with their key is computed again, never trusted; entries are read into memory, not memory-mapped, so a file replaced
or truncated under a running job cannot crash it. Two users share this module:

* evaluation (``catlip.evaluate.common.features.cached_features``): the features of a labelled set, one file
  ``<cache>/features-<weights>-<key>.safetensors`` per (weights, data spec, transform, classes) written with
  :func:`store_tensors` (a cache that cannot be written costs a warning, not the command);
* LiT's training set (``method.feature_cache``, :func:`open_feature_cache`): with the image tower locked, its output
  for an un-augmented image never changes, so the text tower trains at text speed on features read from here.

A training-set entry is one folder per (weights + pooling, data, image size, preprocessing, version) key under the
cache directory: ``features.safetensors`` (``features`` (N, D) float32 and ``status`` (N,) with 0 = usable, k > 0 =
skipped for reason ``reasons[k - 1]``) and ``samples.json`` (the captions of every sample, so training never opens
a shard). The data part of its key is a fingerprint (every source file's path, size and modification time, the
sample count); the superseded entry of the same data settings is removed, entries of other data sets in the same
folder stay. Features come from the evaluation transform (shorter side resized, center crop); augmentation is not
applied. A cached sample is trained exactly like a loaded one (:class:`CachedFeatureDataset`): same
:class:`~catlip.data.sampler.BatchPlan`, same caption choice per (seed, epoch, index), same skip counting, so a
resumed run continues at the exact sample.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from catlip.errors import DataError

VERSION = 2  # bump when the training-set layout or the feature recipe changes: older entries are rebuilt
log = logging.getLogger("catlip.evaluate")  # where its warnings went when only evaluation cached features


def module_hash(module: nn.Module) -> str:
    """16 hex chars over parameter names, shapes and values: the identity of a set of weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def feature_file(cache_dir: str | Path, weights_id: str, *key: object) -> Path:
    """The cache file of the features of weights ``weights_id`` over the data, size and settings named by ``key``."""
    digest = hashlib.sha256("|".join([weights_id, *map(str, key)]).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"features-{weights_id}-{digest}.safetensors"


def read_tensors(path: Path, names: tuple[str, ...]) -> dict[str, torch.Tensor] | None:
    """The tensors ``names`` of a cache file, copied into memory; None when the file is missing or damaged."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
        return {name: tensors[name].clone() for name in names}
    except Exception:  # noqa: BLE001 - any damage means: compute again
        return None


def store_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a cache file atomically; a cache that cannot be written (a full disk) costs a warning, not the run."""
    from catlip.atomic import staged
    from catlip.models.export import save_tensors

    try:
        with staged(path) as (tmp,):
            save_tensors({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata)
    except OSError as err:
        log.warning("feature cache %s not written (%s); the features are used uncached", path, err.strerror or err)


def encode(fn, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``fn(images)`` on ``device`` as float32 on the CPU: bf16 autocast on CUDA, as every cached feature is made."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return fn(images.to(device, non_blocking=True)).float().cpu()


def _files(part) -> list[Path]:
    """The files a source reads (shards; manifest and its images; folder images and sidecars)."""
    if hasattr(part, "paths"):
        return list(part.paths)
    if hasattr(part, "rows"):
        return [Path(part.path)] + [part.image_path(img) for img, _, _ in part.rows]
    if hasattr(part, "items"):
        return [f for pair in part.items for f in pair]
    return []


def data_id(data_cfg) -> str:
    """16 hex chars naming the training data by its settings (sources, keys, columns), whatever the files hold."""
    return hashlib.sha256(json.dumps([list(data_cfg.train), data_cfg.image_key, list(data_cfg.caption_keys),
                                      data_cfg.caption_column, data_cfg.image_column, data_cfg.synthetic_size,
                                      data_cfg.max_image_pixels]).encode()).hexdigest()[:16]


def data_fingerprint(source, data_cfg) -> str:
    """16 hex chars identifying the training data as read: its settings, sample counts, and every file's stat."""
    h = hashlib.sha256(data_id(data_cfg).encode())
    for part in getattr(source, "all_parts", [source]):
        h.update(f"{type(part).__name__}:{len(part)}".encode())
        for f in _files(part):
            try:
                st = os.stat(f)
                h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}".encode())
            except OSError:
                h.update(f"{f}|missing".encode())
    return h.hexdigest()[:16]


def weights_id(method) -> str:
    """The locked tower's weights and the pooling its features are read with."""
    return f"{module_hash(method.backbone)}-{getattr(method, 'image_pool', '')}"


@dataclass
class FeatureCache:
    path: Path
    features: torch.Tensor  # (N, D) float32; rows of skipped samples are zero
    status: torch.Tensor  # (N,) int64: 0 usable, k > 0 skipped for reasons[k - 1]
    reasons: list[str]
    captions: list[list[str]]
    meta: dict

    def __len__(self) -> int:
        return len(self.captions)


def _say(text: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"catlip: feature cache: {text}", file=sys.stderr)


class _EvalImages(torch.utils.data.Dataset):
    """(index, normalised image or None, captions, skip reason) of every sample, for the cache build."""

    def __init__(self, source, cfg):
        from catlip.data.transforms import Preprocess

        self.source, self.max_pixels = source, cfg.data.max_image_pixels
        self.transform = Preprocess.of(cfg).eval_transform()  # the tower's own resize, crop and mean/std

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        from catlip.data.images import decode_or_skip
        from catlip.data.loader import read_sample

        read = read_sample(self.source, i)  # skip reasons decided as the training loader decides them
        if isinstance(read, str):
            return i, None, [], str(read)
        raw, captions, _ = read
        img = decode_or_skip(raw, self.max_pixels)
        if isinstance(img, str):
            return i, None, list(captions), str(img)
        return i, self.transform(img), list(captions), ""


def _collate(rows):
    return rows


@torch.no_grad()
def compute(method, source, cfg, *, device: torch.device, batch_size: int = 256, progress: bool = True):
    """(features, status, reasons, captions) of every sample of ``source`` through ``method.image_features``."""
    from catlip.progress import progress_bar

    n = len(source)
    features, status = None, torch.zeros(n, dtype=torch.int64)
    reasons: list[str] = []
    captions: list[list[str]] = [[] for _ in range(n)]
    data = _EvalImages(source, cfg)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, num_workers=cfg.data.num_workers,
                                         collate_fn=_collate)
    was_training = method.training
    method.eval()
    bar = progress_bar(total=n, desc="feature cache", unit="img", disable=not progress, leave=False)
    for rows in loader:
        good = [r for r in rows if r[1] is not None]
        _record_skips(rows, status, reasons, captions)
        if good:
            out = encode(method.image_features, torch.stack([r[1] for r in good]), device)
            if features is None:  # the width is the tower's: known from its first output
                features = torch.zeros(n, out.shape[1])
            features[torch.tensor([r[0] for r in good])] = out
        bar.update(len(rows))
    bar.close()
    method.train(was_training)
    return (features if features is not None else torch.zeros(n, 0)), status, reasons, captions


def _record_skips(rows, status, reasons: list[str], captions: list[list[str]]) -> None:
    for i, _, caps, why in rows:
        captions[i] = caps
        if why:
            if why not in reasons:
                reasons.append(why)
            status[i] = reasons.index(why) + 1


def _write(entry: Path, features, status, reasons, captions, meta: dict) -> None:
    """Write the entry into a temporary folder, then rename it: a killed build leaves no half entry."""
    from catlip.models.export import save_tensors

    tmp = entry.with_name(entry.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_tensors({"features": features.contiguous(), "status": status}, tmp / "features.safetensors",
                 {"key": meta["key"]})
    (tmp / "samples.json").write_text(json.dumps({"meta": meta, "reasons": reasons, "captions": captions}))
    shutil.rmtree(entry, ignore_errors=True)
    os.replace(tmp, entry)


def _read(entry: Path, key: str) -> FeatureCache | None:
    """The entry, or None when it is missing, damaged or does not match ``key`` (then it is rebuilt)."""
    tensors = read_tensors(entry / "features.safetensors", ("features", "status"))
    if tensors is None:
        return None
    try:
        samples = json.loads((entry / "samples.json").read_text())
    except (OSError, ValueError):
        return None
    features, status = tensors["features"], tensors["status"]
    captions = samples.get("captions", [])
    meta = samples.get("meta", {})
    if meta.get("key") != key or len(captions) != len(features) or len(status) != len(features):
        return None
    return FeatureCache(entry, features, status, list(samples.get("reasons", [])), captions, meta)


def _stale_entries(root: Path, meta: dict) -> list[tuple[Path, str]]:
    """Entries this one supersedes, and what differs (weights, data, image size): those of the same data settings
    (``data_id``). Entries of other data sets stay, so one folder can serve several."""
    out = []
    for old in sorted(root.glob("*/samples.json")) if root.is_dir() else []:
        try:
            was = json.loads(old.read_text()).get("meta", {})
        except (OSError, ValueError):
            was = {}
        if was.get("key") == meta["key"] or was.get("data_id", meta["data_id"]) != meta["data_id"]:
            continue
        what = [k for k in ("weights", "data", "image_size", "version") if was.get(k) != meta[k]] or ["settings"]
        out.append((old.parent, " and ".join(what)))
    return out


def _default_preprocess() -> tuple:
    from catlip.config import DataConfig

    d = DataConfig()
    return d.mean, d.std, d.eval_resize


def open_feature_cache(method, source, cfg, root: str | Path, *, device: torch.device,
                       progress: bool = True, build: bool = True) -> FeatureCache:
    """The cache entry of these weights and data under ``root``: verified and reused, or (re)built."""
    root = Path(root)
    meta = {"version": VERSION, "weights": weights_id(method), "data_id": data_id(cfg.data),
            "data": data_fingerprint(source, cfg.data), "image_size": cfg.model.image_size, "samples": len(source)}
    if (cfg.data.mean, cfg.data.std, cfg.data.eval_resize) != tuple(_default_preprocess()):
        # only non-default preprocessing enters the key, so caches built before it was recorded stay valid
        meta["preprocess"] = [cfg.data.mean, cfg.data.std, cfg.data.eval_resize]
    meta["key"] = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    entry = root / meta["key"]
    found = _read(entry, meta["key"])
    if found is not None:
        _say(f"reusing {entry} ({len(found):,} samples; weights and data verified)")
        return found
    if not build:
        raise DataError(f"feature cache {entry} is missing or damaged")
    for old, what in _stale_entries(root, meta):
        _say(f"{old} is stale ({what} changed): removed, rebuilding")
        shutil.rmtree(old, ignore_errors=True)
    if entry.exists():
        _say(f"{entry} is damaged: rebuilding")
    features, status, reasons, captions = compute(method, source, cfg, device=device,
                                                  batch_size=max(cfg.data.batch_size, 64), progress=progress)
    if not bool((status == 0).any()):
        raise DataError(f"feature cache: none of the {len(source):,} samples of data.train={cfg.data.train} could "
                        f"be read ({dict(Counter(reasons[int(s) - 1] for s in status.tolist()))})")
    _write(entry, features, status, reasons, captions, meta)
    _say(f"wrote {entry} ({int((status == 0).sum()):,} of {len(source):,} samples usable)")
    return _read(entry, meta["key"])


class CachedFeatureDataset(torch.utils.data.Dataset):
    """The training dataset's batch contract with ``image_features`` (from the cache) in place of ``image``."""

    def __init__(self, cache: FeatureCache, source, *, seed: int, context_length: int):
        self.cache, self.source, self.seed, self.context_length = cache, source, seed, context_length

    def __len__(self) -> int:
        return len(self.cache)

    def _example(self, index: int, skip: str) -> str:
        return self.source.describe(index)

    def __getitems__(self, spec) -> dict:
        from catlip.data.loader import _sample_seed, tokenize_captions

        part_of = getattr(self.source, "part_index", lambda i: 0)
        keep, texts, skipped, tried, bad, examples = [], [], Counter(), Counter(), Counter(), {}
        for index in spec.indices:
            part, code = part_of(index), int(self.cache.status[index])
            tried[part] += 1
            if code:
                reason = self.cache.reasons[code - 1]
                skipped[reason] += 1
                bad[part, reason] += 1
                examples.setdefault((part, reason), self._example(index, reason))
                continue
            keep.append(index)
            texts.append(random.Random(_sample_seed(self.seed, spec.epoch, index)).choice(self.cache.captions[index]))
        dim = self.cache.features.shape[1]
        batch = {"image_features": self.cache.features[keep] if keep else torch.zeros(0, dim),
                 "text": tokenize_captions(texts, self.context_length) if texts
                 else torch.zeros(0, self.context_length, dtype=torch.int64),
                 "class": torch.full((len(keep),), -1, dtype=torch.int64),
                 "_skipped": dict(skipped), "_samples_after": spec.samples_after, "_epoch": spec.epoch,
                 "_skip_examples": examples, "_tried": dict(tried), "_bad": dict(bad)}
        return batch

    def __getitem__(self, spec) -> dict:
        return self.__getitems__(spec)


def cache_root(cfg, where: str) -> Path:
    """The folder of a cached input's entries: ``auto`` is the run's own ``feature_cache`` folder."""
    return Path(cfg.train.output_dir) / "feature_cache" if where == "auto" else Path(where)


def build_cached_loader(cfg, method, d, *, start_sample: int = 0):
    """The training loader of a method whose images the cache serves (``method.cached_inputs()``): built on the
    main process, the others wait, then read."""
    from catlip.data.loader import TrainLoader
    from catlip.data.sampler import BatchPlan
    from catlip.data.sources import open_sources
    from catlip.train import distributed as dd

    cached = method.cached_inputs()
    if set(cached) != {"image"}:  # the one input a frozen encoder gives: any other needs its own cache
        raise ValueError(f"the feature cache serves images only; {type(method).__name__} asks for {sorted(cached)}")
    stats: Counter = Counter()
    source = open_sources(cfg.data, seed=cfg.train.seed, stats=stats, image_size=cfg.model.image_size)
    root = cache_root(cfg, cached["image"])
    cache = None
    if d.is_main:
        cache = open_feature_cache(method, source, cfg, root, device=d.device, progress=cfg.train.progress)
    dd.barrier(d)
    if cache is None:
        cache = open_feature_cache(method, source, cfg, root, device=d.device, build=False)
    dataset = CachedFeatureDataset(cache, source, seed=cfg.train.seed, context_length=cfg.data.context_length)
    plan = BatchPlan(len(source), cfg.data.batch_size, seed=cfg.train.seed, image_size=cfg.model.image_size,
                     world_size=d.world_size, rank=d.rank)
    return TrainLoader(dataset, plan, start_sample=start_sample, num_workers=0, stats=stats,
                       max_skip_fraction=cfg.data.max_skip_fraction, device=d.device)
