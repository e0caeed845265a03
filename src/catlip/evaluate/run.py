"""The evaluation procedures behind the tasks in ``catlip.evaluate.tasks`` (``catlip probe | knn | multilabel |
zeroshot | finetune``): load, evaluate, tabulate."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from catlip.errors import CatlipError, CheckpointError, OutputError
from catlip.evaluate.classify.transfer_init import head_mapping as _coverage
from catlip.evaluate.common.cli import model_features as _features
from catlip.evaluate.common.cli import open_pair as _open_pair
from catlip.evaluate.common.cli import unlisted as _unlisted
from catlip.evaluate.common.datasets import ClassList, open_labelled
from catlip.evaluate.common.features import default_device
from catlip.evaluate.classify.linear import (ProbeConfig, balanced_subset, knn_accuracy, ridge_probe, score,
                                             standardize_features, standardized_init, train_probe, _random_linear)
from catlip.evaluate.common.model import load_eval_model
from catlip.evaluate.classify.transfer_init import DEFAULT_ALPHA, transfer_init


def run_probe(checkpoint: str, train: str, test: str, classes: str | None = None, *,
              fractions: Sequence[float] = (1.0,), shots: Sequence[int] = (), inits: Sequence[str] = ("random",),
              knn: bool = True, multilabel: bool = False, alpha: float = DEFAULT_ALPHA, image_size: int | None = None,
              probe: ProbeConfig | None = None, seed: int = 0, raw_features: bool = False,
              allow_partial: bool = False, **opts: Any) -> dict[str, Any]:
    """Linear probes (logistic over an lr/wd grid; ridge for k-shot) and k-NN on frozen features.

    The linear probes read features standardized with the training split's statistics (the study's protocol,
    :func:`standardize_features`) unless ``raw_features``; k-NN reads the raw ones (cosine similarity)."""
    probe = probe or ProbeConfig(seed=seed)
    model = load_eval_model(checkpoint, image_size)
    train_data, test_data = _open_pair(train, test, classes, model.eval_transform(), multilabel, allow_partial)
    num_classes = train_data.num_classes
    result: dict[str, Any] = {"checkpoint": checkpoint, "method": model.method_name, "image_size": model.image_size,
                              "train": train, "test": test, "num_classes": num_classes,
                              "features": "raw" if raw_features else "standardized", "rows": [],
                              **(model.loaded or {})}
    result.update(_unlisted(train=train_data, test=test_data))
    mapping = None
    if "transfer" in inits:
        mapping = _coverage(model, train_data.classes, alpha, "--init transfer", Path(train).name)
        result["coverage"] = mapping[2].to_dict()
    encoder = model.encoder()
    wid = model.weights_id()
    result["weights_id"] = wid
    tr, te = _features(model, train_data, encoder, wid, opts), _features(model, test_data, encoder, wid, opts)
    result.update(train_images=len(tr), test_images=len(te), skipped={"train": tr.skipped, "test": te.skipped},
                  empty_classes=train_data.empty_classes)
    (ptr, pte), mean, std = (tr, te), None, None
    if not raw_features:
        (ptr, pte), mean, std = standardize_features(tr, te)
    starts = {"random": lambda: _random_linear(tr.x.shape[1], num_classes, seed)}
    if mapping is not None:
        starts["transfer"] = lambda: _transfer_start(mapping, seed, mean, std)
    probe_device = default_device(opts.get("device", "auto"))
    subsets = [(f"{_pct(f)} of train", balanced_subset(tr.y, fraction=f, seed=seed)) for f in fractions]
    subsets += [(f"{k}-shot", balanced_subset(tr.y, shots=k, seed=seed)) for k in shots]
    for label, idx in subsets:
        sub = ptr.subset(idx)
        for init in inits:
            fit = train_probe(sub, num_classes, probe, init=starts[init](), device=probe_device)
            result["rows"].append({"protocol": "logistic", "subset": label, "init": init, "n_train": len(idx),
                                   **score(fit.linear, pte), "lr": fit.lr, "weight_decay": fit.weight_decay})
        if label.endswith("-shot") and not multilabel:
            lin, info = ridge_probe(sub, num_classes)
            result["rows"].append({"protocol": "ridge", "subset": label, "init": "-", "n_train": len(idx),
                                   **score(lin, pte), "lambda": info["chosen"]["lambda"]})
    if knn and not multilabel:
        result["rows"].append({"protocol": "knn (k=20)", "subset": "100% of train", "init": "-", "n_train": len(tr),
                               **knn_accuracy(tr, te, num_classes)})
    return result


def _transfer_start(mapping, seed: int, mean: torch.Tensor | None, std: torch.Tensor | None) -> nn.Linear:
    """Transfer Init's classifier, re-expressed for standardized features when the probe reads those."""
    weight, bias, report = mapping
    linear = transfer_init(weight, bias, report, seed)
    if mean is None:
        return linear
    return standardized_init(linear, mean, std, torch.tensor([bool(m.rows) for m in report.classes]))


def run_knn(checkpoint: str, train: str, test: str, classes: str | None = None, *, k: int = 20,
            temperature: float = 0.07, image_size: int | None = None, allow_partial: bool = False,
            **opts: Any) -> dict[str, Any]:
    """Weighted k-NN (cosine, exp(s/T) votes) of the test images against the training images' frozen features."""
    model = load_eval_model(checkpoint, image_size)
    train_data, test_data = _open_pair(train, test, classes, model.eval_transform(), False, allow_partial)
    encoder, wid = model.encoder(), model.weights_id()
    tr, te = _features(model, train_data, encoder, wid, opts), _features(model, test_data, encoder, wid, opts)
    row = {"protocol": f"knn (k={k})", "subset": "100% of train", "init": "-", "n_train": len(tr),
           **knn_accuracy(tr, te, train_data.num_classes, k=k, temperature=temperature)}
    return {"checkpoint": checkpoint, "method": model.method_name, "image_size": model.image_size, "train": train,
            "test": test, "num_classes": train_data.num_classes, "weights_id": wid, "k": k,
            "temperature": temperature, "train_images": len(tr), "test_images": len(te),
            "skipped": {"train": tr.skipped, "test": te.skipped}, "rows": [row],
            **_unlisted(train=train_data, test=test_data), **(model.loaded or {})}


def _pct(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def run_zeroshot(checkpoint: str, test: str, classes: str | None = None, *, mode: str = "auto",
                 alpha: float = DEFAULT_ALPHA, use_bias: bool = True, image_size: int | None = None,
                 templates: str | None = None, classnames: str | None = None, allow_partial: bool = False,
                 **opts: Any) -> dict[str, Any]:
    """Zero-shot top-1/top-5 and mean per-class recall (CLIP_benchmark's metrics): from the classification head
    (methods with a label source; classes mapped by the vocabulary's label source) or the text tower (CLIP, SigLIP,
    LiT; class embeddings averaged over the ``templates`` set: openai | simple | short | a file). ``classnames``:
    the names to use instead of the dataset's (``imagenet`` or a file); ``mode="auto"``: the method registry's."""
    from catlip.evaluate.common.templates import load_templates, name_warnings, resolve_classnames
    from catlip.evaluate.classify.zeroshot import clip_class_embeddings, clip_zero_shot, head_zero_shot

    model = load_eval_model(checkpoint, image_size)
    if mode == "auto":
        mode = model.zero_shot_mode()
    from catlip.methods.registry import ZERO_SHOT_MODES

    if mode not in ZERO_SHOT_MODES:
        raise CatlipError(f"--mode must be auto, {' or '.join(ZERO_SHOT_MODES)}, not {mode!r}")
    _, test_data = _open_pair(None, test, classes, model.eval_transform(), False, allow_partial)
    names = resolve_classnames(classnames, test_data.classes.names)
    result: dict[str, Any] = {"checkpoint": checkpoint, "method": model.method_name, "mode": mode, "test": test,
                              "num_classes": test_data.num_classes, "classnames": names.source,
                              "class_names": list(names.names), **_unlisted(test=test_data), **(model.loaded or {})}
    if mode == "head":
        own = test_data.classes.wnids
        target = test_data.classes if classnames is None else ClassList(
            list(names.names), [w or o for w, o in zip(names.wnids, own)])
        weight, bias, report = _coverage(model, target, alpha, "head zero-shot", Path(test).name)
        feats = _features(model, test_data, model.encoder(), model.weights_id(), opts)
        result.update(head_zero_shot(feats, weight, bias, report, use_bias), coverage=report.to_dict())
    else:
        method = model.method
        if method is None or not hasattr(method, "encode_text"):
            from catlip.methods.registry import titles

            raise CheckpointError(f"text zero-shot needs a {titles('text', sep='/')} checkpoint; {checkpoint} (method "
                                  f"{model.method_name}) has no text tower (use --mode head)")
        import open_clip

        from catlip.evaluate.caption.retrieval import ImageTower

        prompts = load_templates(templates)  # a bad template file fails before any image is encoded
        result.update(templates=prompts.name, num_templates=len(prompts), warnings=name_warnings(names.names))
        feats = _features(model, test_data, ImageTower(method), "clip-" + model.weights_id(), opts)
        emb = clip_class_embeddings(method.encode_text, lambda t: open_clip.tokenize(t, model.context_length),
                                    names.names, prompts.templates, device=next(method.parameters()).device)
        result.update(clip_zero_shot(feats, emb))
    result.update(test_images=len(feats), skipped=feats.skipped)
    return result


def run_finetune(checkpoint: str, train: str, test: str | None, classes: str | None = None, *,
                 config: str | None = None, overrides: Sequence[str] = (), save: str | None = None,
                 progress: bool = True, allow_partial: bool = False) -> dict[str, Any]:
    """Fine-tune the whole network with a ``configs/finetune_*.yaml`` recipe; optionally save the weights."""
    from catlip.evaluate.classify.finetune import finetune, load_finetune_config

    cfg = load_finetune_config(config, list(overrides))
    model = load_eval_model(checkpoint, cfg.image_size or None)
    size = model.image_size
    train_data = open_labelled(train, classes, model.train_transform(cfg.rrc_scale_min), cfg.multilabel,
                               shuffle=cfg.shuffle_buffer, seed=cfg.seed, allow_partial=allow_partial)
    test_data = open_labelled(test, train_data.classes, model.eval_transform(), cfg.multilabel,
                              allow_partial=allow_partial) if test else None
    result: dict[str, Any] = {"checkpoint": checkpoint, "method": model.method_name, "train": train, "test": test,
                              "num_classes": train_data.num_classes, "image_size": size,
                              **_unlisted(train=train_data, test=test_data), **(model.loaded or {})}
    encoder = model.encoder()
    if cfg.init == "transfer":
        weight, bias, report = _coverage(model, train_data.classes, cfg.alpha, "init: transfer", Path(train).name)
        linear = transfer_init(weight, bias, report, cfg.seed)
        result["coverage"] = report.to_dict()
    else:
        linear = _random_linear(encoder.num_features, train_data.num_classes, cfg.seed)
    out = finetune(encoder, linear, train_data, test_data, cfg, progress=progress)
    trained = out.pop("model")
    if save:
        _save_weights(trained, save)
        result["saved"] = save
    result.update(out)
    return result


def _save_weights(model: nn.Module, path: str) -> None:
    from catlip.atomic import staged
    from catlip.models.export import save_tensors

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    try:
        with staged(Path(path)) as (tmp,):
            save_tensors(state, tmp, {"format": "pt"})
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
