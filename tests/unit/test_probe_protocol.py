"""One probe protocol: `catlip probe` standardizes features with the training split's statistics, as
benchmarks/small_study.py does, so both give the same top-1 on the same checkpoint and split; --raw-features
gives the raw-feature probe, and the JSON says which one ran."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from catlip.cli import main
from catlip.evaluate.common.datasets import open_labelled
from catlip.evaluate.classify.linear import standardize, standardized_init

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
from tiny import TINY_VIT as TINY  # noqa: E402  (tests/tiny.py)
KINDS = ("ball", "box", "car")  # synthetic labels 0..2
EPOCHS = 3


@pytest.fixture(scope="module")
def study():
    sys.path.insert(0, str(BENCHMARKS))
    import small_study_evals

    return small_study_evals


def _folder(root: Path, seed: int, per_class: int) -> Path:
    """The first ``per_class`` synthetic scenes of each of KINDS, as an image folder."""
    from catlip.data.synthetic import synthetic_sample

    counts, i = [0] * len(KINDS), 0
    while min(counts) < per_class:
        s = synthetic_sample(i, seed=seed, image_size=32)
        i += 1
        if s.label >= len(KINDS) or counts[s.label] >= per_class:
            continue
        counts[s.label] += 1
        (root / KINDS[s.label]).mkdir(parents=True, exist_ok=True)
        s.image.save(root / KINDS[s.label] / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol")
    (root / "tiny.yaml").write_text(TINY)
    return {"ckpt": f"random:{root / 'tiny.yaml'}", "train": _folder(root / "train", 1, 20),
            "test": _folder(root / "test", 2, 5), "root": root}


def _cli_probe(tiny, *extra) -> dict:
    out = tiny["root"] / "probe.json"
    # one batch of 500, like the study's encoder: the features are then bit-identical
    assert main(["probe", tiny["ckpt"], "--train", str(tiny["train"]), "--test", str(tiny["test"]), "--epochs",
                 str(EPOCHS), "--no-knn", "--workers", "0", "--no-progress", "--batch-size", "500", "-o", str(out),
                 *extra]) == 0
    return json.loads(out.read_text())


def _study_features(study, ckpt: str, folder: Path):
    """Features and targets the way the study computes them (``_encode`` over the decoded images)."""
    from catlip.evaluate.common.model import load_eval_model

    model = load_eval_model(ckpt)
    data = open_labelled(folder, transform=model.eval_transform())
    images, targets = zip(*(data.dataset[i] for i in range(len(data.dataset))))
    return study._encode(model.encoder(), torch.stack(images), "cpu"), torch.tensor(targets)


def test_cli_probe_and_study_probe_agree_on_a_tiny_run(tiny, study):
    xtr, ytr = _study_features(study, tiny["ckpt"], tiny["train"])
    xte, yte = _study_features(study, tiny["ckpt"], tiny["test"])
    (ztr, zte), _, _ = study._standardize(xtr, xte)
    study_std = study._probe(ztr, ytr, zte, yte, len(KINDS), EPOCHS)["top1"]
    study_raw = study._probe(xtr, ytr, xte, yte, len(KINDS), EPOCHS)["top1"]

    default = _cli_probe(tiny)
    assert default["features"] == "standardized" and default["train_images"] == 60 and default["test_images"] == 15
    assert default["rows"][0]["top1"] == study_std == 4 / 15
    raw = _cli_probe(tiny, "--raw-features")
    assert raw["features"] == "raw"
    assert raw["rows"][0]["top1"] == study_raw == 7 / 15  # the old CLI number, not comparable with the study's


def test_standardize_is_the_studys(study):
    gen = torch.Generator().manual_seed(0)
    train, test = torch.randn(30, 6, generator=gen) * 0.01 + 3, torch.randn(10, 6, generator=gen)
    train[:, 2] = 5.0  # a constant feature: its std is clamped, not divided by zero
    ours, mean, std = standardize(train, test)
    theirs, their_mean, their_std = study._standardize(train, test)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert torch.equal(mean, their_mean) and torch.equal(std, their_std) and std[2] == torch.tensor(1e-6)
    assert torch.allclose(ours[0].mean(0), torch.zeros(6), atol=1e-4)
    assert torch.allclose(ours[0].std(0)[[0, 1, 3, 4, 5]], torch.ones(5), atol=1e-4)


def test_standardized_transfer_init_keeps_the_logits_of_mapped_rows(study):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 5, generator=gen) * 4 + 2
    (z,), mean, std = standardize(x)
    rows = torch.tensor([True, False, True])
    raw = torch.nn.Linear(5, 3)
    ours = standardized_init(_copy(raw), mean, std, rows)
    theirs = study._standardized_init(_copy(raw), mean, std, rows)
    assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)
    with torch.no_grad():
        torch.testing.assert_close(ours(z)[:, rows], raw(x)[:, rows], rtol=1e-5, atol=1e-5)
        assert torch.equal(ours.weight[1], raw.weight[1])  # an unmapped row keeps its random init


def _copy(linear: torch.nn.Linear) -> torch.nn.Linear:
    out = torch.nn.Linear(linear.in_features, linear.out_features)
    out.load_state_dict(linear.state_dict())
    return out
