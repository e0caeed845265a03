"""`catlip knn`: weighted k-nearest-neighbour accuracy on frozen features (cosine, exp(s/T) votes; DINO).

:func:`run_knn` loads the checkpoint and computes the (cached) features of both splits; :func:`knn_accuracy` is
the procedure on those features (``catlip probe`` adds its row too). Torch is imported inside the functions.
"""

from __future__ import annotations

import argparse
from typing import Any

from catlip.errors import CliError
from catlip.evaluate.common.cli import (DATA_HELP, add_common, add_limit, eval_opts, model_features, open_pair,
                                        print_table, print_unlisted, unlisted)
from catlip.evaluate.tasks import Task


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    add_limit(p)
    p.add_argument("--train", required=True, help=DATA_HELP + " (the neighbour bank)")
    p.add_argument("--test", required=True, help=DATA_HELP)
    p.add_argument("--k", type=int, default=20, help="neighbours (default 20)")
    p.add_argument("--temperature", type=float, default=0.07, help="vote weight exp(similarity / T) (default 0.07)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.k < 1 or args.temperature <= 0:
        raise CliError("--k must be >= 1 and --temperature > 0")
    return run_knn(args.checkpoint, args.train, args.test, args.classes, k=args.k, temperature=args.temperature,
                   image_size=args.image_size, **eval_opts(args))


def run_knn(checkpoint: str, train: str, test: str, classes: str | None = None, *, k: int = 20,
            temperature: float = 0.07, image_size: int | None = None, allow_partial: bool = False,
            **opts: Any) -> dict[str, Any]:
    """Weighted k-NN (cosine, exp(s/T) votes) of the test images against the training images' frozen features."""
    from catlip.evaluate.common.model import load_eval_model

    model = load_eval_model(checkpoint, image_size)
    train_data, test_data = open_pair(train, test, classes, model.eval_transform(), False, allow_partial)
    encoder, wid = model.encoder(), model.weights_id()
    tr, te = model_features(model, train_data, encoder, wid, opts), model_features(model, test_data, encoder, wid, opts)
    row = {"protocol": f"knn (k={k})", "subset": "100% of train", "init": "-", "n_train": len(tr),
           **knn_accuracy(tr, te, train_data.num_classes, k=k, temperature=temperature)}
    return {"checkpoint": checkpoint, "method": model.method_name, "image_size": model.image_size, "train": train,
            "test": test, "num_classes": train_data.num_classes, "weights_id": wid, "k": k,
            "temperature": temperature, "train_images": len(tr), "test_images": len(te),
            "skipped": {"train": tr.skipped, "test": te.skipped}, "rows": [row],
            **unlisted(train=train_data, test=test_data), **(model.loaded or {})}


def knn_accuracy(train, test, num_classes: int, k: int = 20, temperature: float = 0.07,
                 chunk: int = 1024) -> dict[str, float]:
    """Cosine k-NN of ``test`` against the bank ``train`` (``Features``) with neighbours weighted by
    exp(similarity / T) (the DINO protocol); top-1 and top-5."""
    import torch
    import torch.nn.functional as F

    from catlip.evaluate.common.metrics import topk_accuracy

    if train.y.dim() != 1:
        raise ValueError("k-NN accuracy needs single-label targets")
    with torch.no_grad():
        bank = F.normalize(train.x.float(), dim=1)
        k = min(k, bank.shape[0])
        votes_all = []
        for i in range(0, test.x.shape[0], chunk):
            q = F.normalize(test.x[i : i + chunk].float(), dim=1)
            sim, idx = (q @ bank.T).topk(k, dim=1)
            votes = torch.zeros(q.shape[0], num_classes)
            votes.scatter_add_(1, train.y[idx], (sim / temperature).exp())
            votes_all.append(votes)
        return topk_accuracy(torch.cat(votes_all), test.y)


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    print_unlisted(result)
    print_table(result["rows"], ["protocol", "subset", "n_train", "top1", "top5"])


TASK = Task(
    name="knn",
    help="k-nearest-neighbour accuracy on frozen features",
    description="Classify each test image by its k most similar training images (cosine similarity of the frozen "
    "features, votes weighted by exp(similarity / T), the DINO protocol); no training. `catlip probe` reports the "
    "same 20-NN row unless --no-knn.",
    add_arguments=add_arguments, run=run, report=report, order=20,
)
