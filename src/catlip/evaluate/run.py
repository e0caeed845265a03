"""The evaluation procedures behind the tasks in ``catlip.evaluate.tasks`` (``catlip probe | knn | multilabel |
zeroshot | finetune``): load, evaluate, tabulate."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from torch import nn

from catlip.errors import CatlipError, CheckpointError, OutputError
from catlip.evaluate.classify.transfer_init import head_mapping as _coverage
from catlip.evaluate.common.cli import model_features as _features
from catlip.evaluate.common.cli import open_pair as _open_pair
from catlip.evaluate.common.cli import unlisted as _unlisted
from catlip.evaluate.common.datasets import ClassList, open_labelled
from catlip.evaluate.classify.linear import _random_linear
from catlip.evaluate.common.model import load_eval_model
from catlip.evaluate.classify.transfer_init import DEFAULT_ALPHA, transfer_init


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
