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
