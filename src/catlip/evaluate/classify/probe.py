"""`catlip probe`: linear probes (logistic over an lr/wd grid; ridge for k-shot) + k-NN on frozen features.

:func:`run_probe` loads the checkpoint, opens both splits and computes their (cached) features; :func:`probe_rows`
is the procedure on those features. The training of one probe is ``classify.linear``, the k-NN row ``knn``'s. Torch is imported inside
the functions: ``catlip --help`` reads this module (``catlip.evaluate.tasks``).
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

from catlip.errors import CliError
from catlip.evaluate.common.cli import (DATA_HELP, add_common, add_limit, comma_list, eval_opts, model_features,
                                        open_pair, print_coverage, print_table, print_unlisted, unlisted)
from catlip.evaluate.tasks import Task
from catlip.labels.mapping import DEFAULT_ALPHA


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    add_limit(p)
    p.add_argument("--train", required=True, help=DATA_HELP)
    p.add_argument("--test", required=True, help=DATA_HELP)
    p.add_argument("--fractions", default="1", help="comma list of training-set fractions, e.g. 0.01,0.1,1")
    p.add_argument("--shots", default="", help="comma list of images per class, e.g. 1,5,10")
    p.add_argument("--init", default="random", help="random | transfer | random,transfer")
    p.add_argument("--epochs", type=int, default=30, help="probe epochs (paper: 30)")
    p.add_argument("--lrs", default="0.001,0.01,0.1", help="probe learning-rate grid (paper Table 7a: 0.00003)")
    p.add_argument("--wds", default="0,0.0001,0.01", help="probe weight-decay grid (paper: 0)")
    p.add_argument("--multilabel", action="store_true", help="multi-label targets (.json labels): BCE + mAP")
    p.add_argument("--no-knn", action="store_true", help="skip the k-NN evaluation")
    p.add_argument("--raw-features", action="store_true",
                   help="probe the raw features (default: standardized with the training split's mean and std, "
                   "as benchmarks/small_study.py does)")
    p.add_argument("--seed", type=int, default=0)


def probe_arguments(args: argparse.Namespace, *, multilabel: bool, knn: bool) -> dict[str, Any]:
    """Keyword arguments of :func:`run_probe` from the probe flags (shared with the multilabel task)."""
    from catlip.evaluate.classify.linear import ProbeConfig

    inits = comma_list(args.init, str, "--init")
    fractions = comma_list(args.fractions, float, "--fractions")
    if any(i not in ("random", "transfer") for i in inits) or any(not 0 < f <= 1 for f in fractions):
        raise CliError("--init takes random and/or transfer; --fractions values lie in (0, 1]")
    return dict(fractions=fractions, shots=comma_list(args.shots, int, "--shots"), inits=inits, knn=knn,
                multilabel=multilabel, alpha=args.alpha, image_size=args.image_size, seed=args.seed,
                raw_features=args.raw_features,
                probe=ProbeConfig(epochs=args.epochs, seed=args.seed, lrs=comma_list(args.lrs, float, "--lrs"),
                                  weight_decays=comma_list(args.wds, float, "--wds")),
                **eval_opts(args))


def run(args: argparse.Namespace) -> dict[str, Any]:
    return run_probe(args.checkpoint, args.train, args.test, args.classes,
                     **probe_arguments(args, multilabel=args.multilabel, knn=not args.no_knn))


def run_probe(checkpoint: str, train: str, test: str, classes: str | None = None, *,
              fractions: Sequence[float] = (1.0,), shots: Sequence[int] = (), inits: Sequence[str] = ("random",),
              knn: bool = True, multilabel: bool = False, alpha: float = DEFAULT_ALPHA, image_size: int | None = None,
              probe: Any = None, seed: int = 0, raw_features: bool = False, allow_partial: bool = False,
              **opts: Any) -> dict[str, Any]:
    """The checkpoint's features of ``train`` and ``test`` (``probe``: a ``ProbeConfig``), probed by :func:`probe`."""
    from pathlib import Path

    from catlip.evaluate.classify.transfer_init import head_mapping
    from catlip.evaluate.common.features import default_device
    from catlip.evaluate.common.model import load_eval_model

    model = load_eval_model(checkpoint, image_size)
    train_data, test_data = open_pair(train, test, classes, model.eval_transform(), multilabel, allow_partial)
    num_classes = train_data.num_classes
    result: dict[str, Any] = {"checkpoint": checkpoint, "method": model.method_name, "image_size": model.image_size,
                              "train": train, "test": test, "num_classes": num_classes,
                              "features": "raw" if raw_features else "standardized", "rows": [],
                              **(model.loaded or {})}
    result.update(unlisted(train=train_data, test=test_data))
    mapping = None
    if "transfer" in inits:
        mapping = head_mapping(model, train_data.classes, alpha, "--init transfer", Path(train).name)
        result["coverage"] = mapping[2].to_dict()
    encoder = model.encoder()
    wid = model.weights_id()
    result["weights_id"] = wid
    tr, te = model_features(model, train_data, encoder, wid, opts), model_features(model, test_data, encoder, wid, opts)
    result.update(train_images=len(tr), test_images=len(te), skipped={"train": tr.skipped, "test": te.skipped},
                  empty_classes=train_data.empty_classes)
    result["rows"] += probe_rows(tr, te, num_classes, fractions=fractions, shots=shots, inits=inits, transfer=mapping,
                                 knn=knn, multilabel=multilabel, config=probe, seed=seed, raw_features=raw_features,
                                 device=default_device(opts.get("device", "auto")))
    return result


def probe_rows(train, test, num_classes: int, *, fractions: Sequence[float] = (1.0,), shots: Sequence[int] = (),
               inits: Sequence[str] = ("random",), transfer: tuple | None = None, knn: bool = True,
               multilabel: bool = False, config: Any = None, seed: int = 0, raw_features: bool = False,
               device: Any = "cpu") -> list[dict[str, Any]]:
    """The probe on frozen ``Features``: per training subset (``fractions`` of each class, ``shots`` images per
    class; class-balanced, seeded) one logistic probe per start in ``inits`` (``random``, or ``transfer`` from
    ``transfer`` = (head weight, head bias, class mapping)), a ridge probe for k-shot subsets, and the 20-NN row.

    The linear probes read features standardized with the training split's statistics (the study's protocol,
    ``linear.standardize_features``) unless ``raw_features``; k-NN reads the raw ones (cosine similarity)."""
    from catlip.evaluate.classify.knn import knn_accuracy
    from catlip.evaluate.classify.linear import (ProbeConfig, _random_linear, balanced_subset, ridge_probe, score,
                                                 standardize_features, train_probe)

    config = config or ProbeConfig(seed=seed)
    (ptr, pte), mean, std = (train, test), None, None
    if not raw_features:
        (ptr, pte), mean, std = standardize_features(train, test)
    starts = {"random": lambda: _random_linear(train.x.shape[1], num_classes, seed)}
    if transfer is not None:
        starts["transfer"] = lambda: _transfer_start(transfer, seed, mean, std)
    rows = []
    subsets = [(f"{_pct(f)} of train", balanced_subset(train.y, fraction=f, seed=seed)) for f in fractions]
    subsets += [(f"{k}-shot", balanced_subset(train.y, shots=k, seed=seed)) for k in shots]
    for label, idx in subsets:
        sub = ptr.subset(idx)
        for init in inits:
            fit = train_probe(sub, num_classes, config, init=starts[init](), device=device)
            rows.append({"protocol": "logistic", "subset": label, "init": init, "n_train": len(idx),
                         **score(fit.linear, pte), "lr": fit.lr, "weight_decay": fit.weight_decay})
        if label.endswith("-shot") and not multilabel:
            lin, info = ridge_probe(sub, num_classes)
            rows.append({"protocol": "ridge", "subset": label, "init": "-", "n_train": len(idx),
                         **score(lin, pte), "lambda": info["chosen"]["lambda"]})
    if knn and not multilabel:
        rows.append({"protocol": "knn (k=20)", "subset": "100% of train", "init": "-", "n_train": len(train),
                     **knn_accuracy(train, test, num_classes)})
    return rows


def _transfer_start(mapping, seed: int, mean, std):
    """Transfer Init's classifier, re-expressed for standardized features when the probe reads those."""
    import torch

    from catlip.evaluate.classify.linear import standardized_init
    from catlip.evaluate.classify.transfer_init import transfer_init

    weight, bias, report = mapping
    linear = transfer_init(weight, bias, report, seed)
    if mean is None:
        return linear
    return standardized_init(linear, mean, std, torch.tensor([bool(m.rows) for m in report.classes]))


def _pct(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    print_unlisted(result)
    print_coverage(result)
    metric = ["mAP"] if result.get("multilabel", getattr(args, "multilabel", False)) else ["top1", "top5"]
    print_table(result["rows"], ["protocol", "subset", "init", "n_train", *metric])


def linear_probe(train, test, num_classes: int, config=None, *, init=None, device="cpu",
                 standardize: bool = False) -> dict[str, Any]:
    """One logistic probe on frozen ``Features``: fit (lr/wd grid on a validation split), score on ``test``.

    ``standardize``: z-score both sets with the training mean/std first (one lr grid then fits any backbone's
    feature scale; the demo uses it). Returns the test metrics plus the chosen ``lr`` and ``weight_decay``.
    """
    from catlip.evaluate.classify.linear import score, standardize_features, train_probe

    if standardize:
        (train, test), _, _ = standardize_features(train, test)
    fit = train_probe(train, num_classes, config, init=init, device=device)
    return {**score(fit.linear, test), "lr": fit.lr, "weight_decay": fit.weight_decay}


TASK = Task(
    name="probe",
    help="linear probe (+ k-NN) on frozen features",
    description="Train linear classifiers on frozen features over fractions / k-shot subsets of the training set "
    "(lr/wd grid picked on a validation split; ridge for k-shot) and report test accuracy, plus 20-NN accuracy. "
    "--init transfer starts from the pre-trained head (CatLIP Transfer Init).",
    add_arguments=add_arguments, run=run, report=report, order=10,
)
