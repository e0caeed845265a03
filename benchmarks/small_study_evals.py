"""Evaluations of benchmarks/small_study.py: CIFAR-10 probe, Flickr8k multi-label probe, caption retrieval and
Random vs Transfer Init. Each run's results are cached in ``<run>/eval.json`` (``<work>/eval-random.json`` for the
floor) together with the settings they depend on, so a resumed study re-evaluates only what changed."""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

# one probe protocol: `catlip probe` and the study standardise features with the same code
from catlip.evaluate.classify.linear import standardize as _standardize, standardized_init as _standardized_init

from small_study import HEAD_METHODS, Preset, say

EVAL_VERSION = 1  # bump when a probe changes, so cached results are recomputed
RETRIEVAL_VERSION = 2  # bump when caption retrieval changes (re-runs retrieval only)
TRANSFER_VERSION = 2  # bump when the Random vs Transfer Init protocol changes


class _InMemory(torch.utils.data.Dataset):
    def __init__(self, images, targets):
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.images[i], int(self.targets[i])


@dataclass
class Tasks:
    """The evaluation data, decoded once: CIFAR-10 subsets and the Flickr8k dev/test images with caption labels."""

    cifar: tuple  # (train LabelledData, test LabelledData)
    dev: object  # catlip.evaluate.caption.caption_tasks.CaptionedImages
    test: object
    dev_sets: list
    test_sets: list
    multilabel_ids: list[int]
    object_ids: list[int]
    vocab: object

    @classmethod
    def load(cls, p: Preset, data: Path, vocab, work: Path) -> "Tasks":
        from catlip.data.transforms import eval_transform
        from catlip.evaluate.caption import caption_tasks as ct

        t = time.perf_counter()
        cifar = (_cifar(data / "cifar10" / "cifar10-train-000.tar", p.probe_train, p.image_size),
                 _cifar(data / "cifar10" / "cifar10-test-000.tar", p.probe_test, p.image_size))
        dev = ct.load_captioned([data / "flickr8k" / "flickr8k-dev-000.tar"], eval_transform(p.image_size))
        test = ct.load_captioned([data / "flickr8k" / "flickr8k-test-000.tar"], eval_transform(p.image_size))
        dev_sets, test_sets = ct.caption_label_sets(dev.captions, vocab), ct.caption_label_sets(test.captions, vocab)
        ml = ct.frequent_ids(vocab, p.multilabel_k)
        # 10-shot probes need >= 10 training images per class; >= 8 test images keep per-class noise bounded
        objects = ct.object_classes(vocab, dev_sets, test_sets, k=p.object_k, min_train=max(p.shots) + 2,
                                    min_test=8 if p.object_k > 3 else 2)
        say(f"evaluation data ready in {time.perf_counter() - t:.0f}s: CIFAR-10 {len(cifar[0])}/{len(cifar[1])}, "
            f"Flickr8k dev {len(dev)} / test {len(test)}, objects {[vocab.names[i] for i in objects]}")
        return cls(cifar, dev, test, dev_sets, test_sets, ml, objects, vocab)

    def describe(self) -> dict:
        from catlip.evaluate.caption import caption_tasks as ct

        v = self.vocab
        ml_test = ct.multilabel_targets(self.test_sets, self.multilabel_ids)
        _, y_dev = ct.single_label_targets(self.dev_sets, self.object_ids)
        _, y_test = ct.single_label_targets(self.test_sets, self.object_ids)
        return {
            "cifar10": {"train": self.cifar[0].spec, "test": self.cifar[1].spec},
            "flickr_multilabel": {"classes": [v.names[i] for i in self.multilabel_ids],
                                  "keys": [v.keys[i] for i in self.multilabel_ids],
                                  "train_caption_counts": [v.counts[i] for i in self.multilabel_ids],
                                  "test_positives": ml_test.sum(0).int().tolist(),
                                  "train_images": len(self.dev), "test_images": len(self.test)},
            "flickr_objects": {"classes": [v.names[i] for i in self.object_ids],
                               "keys": [v.keys[i] for i in self.object_ids],
                               "train_caption_counts": [v.counts[i] for i in self.object_ids],
                               "train_per_class": torch.bincount(y_dev, minlength=len(self.object_ids)).tolist(),
                               "test_per_class": torch.bincount(y_test, minlength=len(self.object_ids)).tolist()},
            "retrieval": {"images": len(self.test), "captions": sum(len(c) for c in self.test.captions)},
            "skipped": {"dev": self.dev.skipped, "test": self.test.skipped},
        }

    def signature(self, p: Preset) -> str:
        text = json.dumps([EVAL_VERSION, p.probe_train, p.probe_test, p.probe_epochs, p.image_size, p.multilabel_k,
                           self.multilabel_ids, self.object_ids, p.shots, p.fractions, p.transfer_seeds])
        return hashlib.sha1(text.encode()).hexdigest()[:12]


def _cifar(path: Path, n: int, size: int):
    """The first ``n`` readable images of a shard (the shards are shuffled, so this is a random sample)."""
    from catlip.evaluate.common.datasets import LabelledData, eval_transform, open_labelled

    data = open_labelled(str(path), path.parent / "classes.txt", eval_transform(size))
    images, targets = [], []
    for img, target in data.dataset:
        if img is not None and target >= 0:
            images.append(img)
            targets.append(target)
        if len(images) == n:
            break
    return LabelledData(f"{path.name}[:{n}]@{size}", _InMemory(torch.stack(images), torch.tensor(targets)),
                        data.classes)


def recipe(overrides: list[str], work: Path) -> Path:
    """The pre-training recipe as a file, for the ``random:<recipe>`` floor (same architecture, random weights)."""
    from catlip.config import load_config, save_config

    path = work / "recipe.yaml"
    save_config(load_config(None, overrides), path)
    return path


# ---------------------------------------------------------------- features


@torch.no_grad()
def _encode(module, images: torch.Tensor, device: str, batch: int = 500) -> torch.Tensor:
    module.eval().to(device)
    out = [module(images[i:i + batch].to(device)).float().cpu() for i in range(0, len(images), batch)]
    return torch.cat(out)


def _probe(train_x, train_y, test_x, test_y, num_classes: int, epochs: int, seed: int = 0, init=None) -> dict:
    from catlip.evaluate.common.features import Features
    from catlip.evaluate.classify.linear import ProbeConfig, score, train_probe

    fit = train_probe(Features(train_x, train_y), num_classes, ProbeConfig(epochs=epochs, seed=seed), init=init)
    out = {**score(fit.linear, Features(test_x, test_y)), "lr": fit.lr, "weight_decay": fit.weight_decay}
    if test_y.dim() == 1:  # mean per-class recall: the in-domain object task is dominated by dogs
        from catlip.evaluate.common.metrics import per_class_accuracy

        with torch.no_grad():
            recalls = per_class_accuracy(fit.linear(test_x), test_y, num_classes)
        out["balanced"] = sum(recalls) / len(recalls)
    return out


# ---------------------------------------------------------------- one model


class _MeanToken(torch.nn.Module):
    """LayerNorm (parameter-free, as a fresh head's) of the mean patch token: what SuperClass's head reads."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, images):
        from catlip.models.backbone import average_pooled

        x = average_pooled(self.backbone, images)
        return torch.nn.functional.layer_norm(x, x.shape[-1:])


def feature_kind(model) -> str:
    """``mean_token`` when the probe reads LayerNorm(mean patch token) (SuperClass, SuperCLIP), else ``pooled``
    (the backbone's own pooled embedding: the CLS token of a ViT)."""
    head = model.encoder().head
    return "mean_token" if head is not None and type(head).__name__ == "AvgTokenHead" else "pooled"


def evaluate(spec: str, tasks: Tasks, p: Preset, work: Path, diverged: bool = False, pool: str = "") -> dict:
    """CIFAR-10 probe, Flickr8k multi-label probe and caption retrieval of one checkpoint (or ``random:``).

    ``pool="mean_token"`` probes a random-init backbone the way SuperClass's head reads it: each method is
    compared with the floor of the features it is probed on. The probes are cached in ``eval.json``, retrieval
    in ``retrieval.json`` (its own version: a change of caption scoring re-runs only retrieval)."""
    floor = spec.startswith("random:")
    stem = f"eval-random{'-' + pool if pool else ''}" if floor else "eval"
    folder = work if floor else Path(spec)
    probes, retrieval = folder / f"{stem}.json", folder / f"{stem}-retrieval.json"
    sig = tasks.signature(p)
    out = _cached(probes, sig)
    ret = _cached(retrieval, f"{sig}-r{RETRIEVAL_VERSION}")
    if diverged or (out is not None and out.get("diverged")):
        out = {"signature": sig, "diverged": True}
        probes.write_text(json.dumps(out))
        return out
    if out is not None and ret is not None:
        return {**out, "retrieval": ret}
    from catlip.evaluate.common.model import load_eval_model

    t = time.perf_counter()
    model = load_eval_model(spec)
    if out is None:
        enc = _MeanToken(model.backbone) if pool == "mean_token" else model.encoder()
        out = {"signature": sig, "features": pool or feature_kind(model), "cifar10": _cifar_probe(enc, tasks, p),
               "flickr_multilabel": _multilabel_probe(enc, tasks, p)}
        out["eval_s"] = round(time.perf_counter() - t, 1)
        probes.write_text(json.dumps(out, indent=1))
    if ret is None:
        ret = {"signature": f"{sig}-r{RETRIEVAL_VERSION}", **_retrieval(model, tasks, p)}
        retrieval.write_text(json.dumps(ret, indent=1))
    say(f"{Path(spec).name}: CIFAR-10 probe {out['cifar10']['top1'] * 100:.1f}%, Flickr8k mAP "
        f"{out['flickr_multilabel']['mAP'] * 100:.1f}, retrieval i2t R@1 {ret.get('i2t_R@1', float('nan')) * 100:.1f} "
        f"({time.perf_counter() - t:.0f}s)")
    return {**out, "retrieval": ret}


def _cached(path: Path, signature: str) -> dict | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data if data.get("signature") == signature else None


def head_stats(run_dir: str) -> dict | None:
    """Scale statistics of a classification head (what the SuperClass trend analysis reads): the LayerNorm gain
    of an average-token head, the classifier's row norms and bias spread."""
    from catlip.train.checkpoint import load_pretrained

    head = getattr(load_pretrained(run_dir).method, "head", None)
    if head is None:
        return None
    w, b = head.fc.weight.detach().float(), head.fc.bias.detach().float()
    out = {"fc_row_norm_mean": float(w.norm(dim=1).mean()), "fc_bias_std": float(b.std())}
    norm = getattr(head, "norm", None)
    if norm is not None:
        out["norm_gain_abs_mean"] = float(norm.weight.detach().abs().mean())
    return out


def _cifar_probe(enc, tasks: Tasks, p: Preset) -> dict:
    from catlip.evaluate.common.features import Features
    from catlip.evaluate.classify.knn import knn_accuracy

    tr, te = tasks.cifar
    xtr, xte = _encode(enc, tr.dataset.images, p.device), _encode(enc, te.dataset.images, p.device)
    ytr, yte = tr.dataset.targets, te.dataset.targets
    (ztr, zte), _, _ = _standardize(xtr, xte)
    res = _probe(ztr, ytr, zte, yte, 10, p.probe_epochs)
    res["knn_top1"] = knn_accuracy(Features(xtr, ytr), Features(xte, yte), 10)["top1"]
    res["feature_std"] = {"min": float(xtr.std(0).min()), "median": float(xtr.std(0).median()),
                          "max": float(xtr.std(0).max())}
    res["raw_probe_top1"] = _probe(xtr, ytr, xte, yte, 10, p.probe_epochs)["top1"]
    return res


def _multilabel_probe(enc, tasks: Tasks, p: Preset) -> dict:
    from catlip.evaluate.caption import caption_tasks as ct

    ytr = ct.multilabel_targets(tasks.dev_sets, tasks.multilabel_ids)
    yte = ct.multilabel_targets(tasks.test_sets, tasks.multilabel_ids)
    (ztr, zte), _, _ = _standardize(_encode(enc, tasks.dev.images, p.device), _encode(enc, tasks.test.images, p.device))
    return _probe(ztr, ytr, zte, yte, len(tasks.multilabel_ids), p.probe_epochs)


def _retrieval(model, tasks: Tasks, p: Preset) -> dict:
    """Flickr8k test image <-> caption retrieval: text tower for two-tower methods, head scoring for the rest."""
    from catlip.evaluate.caption import retrieval as rt
    from catlip.evaluate.common.features import ImageTower

    captions = [c for caps in tasks.test.captions for c in caps]
    owner = torch.tensor([i for i, caps in enumerate(tasks.test.captions) for _ in caps])
    mode = model.zero_shot_mode() if model.method_name != "random" else "chance"
    extra = {}
    if mode == "text":
        import open_clip

        images = _encode(ImageTower(model.method), tasks.test.images, p.device)
        texts = rt.encode_captions(model.method.encode_text, lambda t: open_clip.tokenize(t, model.context_length),
                                   captions, device=p.device)
        sim, label = rt.clip_similarity(images, texts), "text tower"
    elif mode == "head":
        sim, extra = _head_scores(model, tasks, captions, p)
        label = "head caption scoring"
    else:  # the random-init floor has neither tower nor head: chance level, from a seeded random similarity
        sim = torch.rand(len(tasks.test), len(captions), generator=torch.Generator().manual_seed(0))
        label = "chance (random scores)"
    rec = rt.recall_at_k(sim, owner)
    flat = {f"{'i2t' if d == 'image_to_text' else 't2i'}_{k}": v for d in rt.DIRECTIONS for k, v in rec[d].items()}
    return {"mode": label, **flat, "mean_recall": rec["mean_recall"], **extra}


def _head_scores(model, tasks: Tasks, captions: list[str], p: Preset) -> tuple[torch.Tensor, dict]:
    """Each caption scored by the mean over its labels of log p(label | image) - log p(label), the second term
    being the label's mean probability over the test images. Without it a caption naming only "dog" outranks
    every other caption for every image (image->text R@1 ~ 0); text->image rankings are the same either way,
    since the subtracted term is constant per caption. The raw mean log-probability is reported too."""
    from catlip.evaluate.caption import retrieval as rt

    weight, bias = model.head_weight("head caption scoring")
    labels = rt.caption_label_ids(captions, model.vocab)
    from catlip.evaluate.caption.head import head_activation

    activation = head_activation(model)
    feats = _encode(model.encoder(), tasks.test.images, p.device)
    raw = rt.head_caption_scores(feats, weight, bias, labels, activation=activation, reduce="mean")
    log_prior = rt.label_log_marginals(feats, weight, bias, activation=activation)
    owner = torch.tensor([i for i, caps in enumerate(tasks.test.captions) for _ in caps])
    rec = rt.recall_at_k(raw, owner)
    extra = {"captions_without_labels": sum(not ids for ids in labels), "scoring": "mean log p(l|x) - log p(l)",
             "raw_mean_logprob": {f"{'i2t' if d == 'image_to_text' else 't2i'}_{k}": v
                                  for d in rt.DIRECTIONS for k, v in rec[d].items()}}
    scores = rt.head_caption_scores(feats, weight, bias, labels, activation=activation, reduce="mean",
                                    log_prior=log_prior)
    return scores, extra


# ---------------------------------------------------------------- Random vs Transfer Init


def transfer(run_dir: str, tasks: Tasks, p: Preset, work: Path) -> dict:
    """Random vs Transfer Init probes on the in-domain object task and on CIFAR-10 (cached in the run)."""
    cache = Path(run_dir) / "transfer.json"
    sig = f"{tasks.signature(p)}-t{TRANSFER_VERSION}"
    cached = _cached(cache, sig)
    if cached is not None:
        return cached
    from catlip.evaluate.caption import caption_tasks as ct
    from catlip.evaluate.common.datasets import ClassList
    from catlip.evaluate.common.model import load_eval_model

    model = load_eval_model(run_dir)
    enc = model.encoder()
    i_dev, y_dev = ct.single_label_targets(tasks.dev_sets, tasks.object_ids)
    i_te, y_te = ct.single_label_targets(tasks.test_sets, tasks.object_ids)
    names = [tasks.vocab.names[i] for i in tasks.object_ids]
    objects = (_encode(enc, tasks.dev.images[i_dev], p.device), y_dev,
               _encode(enc, tasks.test.images[i_te], p.device), y_te, ClassList(names))
    tr, te = tasks.cifar
    cifar = (_encode(enc, tr.dataset.images, p.device), tr.dataset.targets,
             _encode(enc, te.dataset.images, p.device), te.dataset.targets, tr.classes)
    out = {"signature": sig, "objects": _transfer_rows(model, *objects, p, "flickr8k objects"),
           "cifar10": _transfer_rows(model, *cifar, p, "cifar10")}
    cache.write_text(json.dumps(out, indent=1))
    return out


def _transfer_rows(model, xtr, ytr, xte, yte, classes, p: Preset, dataset: str) -> dict:
    from catlip.evaluate.classify.linear import _random_linear, balanced_subset
    from catlip.evaluate.classify.transfer_init import map_classes, transfer_init
    from catlip.evaluate.classify.zeroshot import head_zero_shot
    from catlip.evaluate.common.features import Features

    weight, bias = model.head_weight("Transfer Init")
    report = map_classes(classes, model.vocab, dataset=dataset)
    mapped = torch.tensor([bool(m.rows) for m in report.classes])
    (ztr, zte), mean, std = _standardize(xtr, xte)
    out = {"coverage": report.to_dict(), "coverage_summary": report.summary(),
           "head_zero_shot": head_zero_shot(Features(xte, yte), weight, bias, report), "rows": []}
    subsets = [("shots", k) for k in p.shots] + [("fraction", f) for f in p.fractions]
    for kind, value in subsets:
        seeds = range(p.transfer_seeds) if not (kind == "fraction" and value == 1.0) else range(1)
        for seed in seeds:
            idx = balanced_subset(ytr, **{"shots" if kind == "shots" else "fraction": value}, seed=seed)
            for init in ("random", "transfer"):
                lin = (_standardized_init(transfer_init(weight, bias, report, seed), mean, std, mapped)
                       if init == "transfer" else _random_linear(ztr.shape[1], len(classes), seed))
                r = _probe(ztr[idx], ytr[idx], zte, yte, len(classes), p.probe_epochs, seed=seed, init=lin)
                out["rows"].append({kind: value, "seed": seed, "init": init, "n_train": len(idx), "top1": r["top1"],
                                    "balanced": r["balanced"]})
    out["summary"] = _summarise(out["rows"])
    return out


def _summarise(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        kind = "shots" if "shots" in r else "fraction"
        groups.setdefault((kind, r[kind], r["init"]), []).append(r)
    out = []
    for (k, v, i), rs in sorted(groups.items()):
        row = {"kind": k, "value": v, "init": i, "seeds": len(rs)}
        for metric in ("top1", "balanced"):
            xs = [r[metric] for r in rs]
            row[f"{metric}_mean"] = statistics.mean(xs)
            row[f"{metric}_std"] = statistics.stdev(xs) if len(xs) > 1 else 0.0
        out.append(row)
    return out


__all__ = ["Tasks", "evaluate", "transfer", "recipe", "HEAD_METHODS"]
