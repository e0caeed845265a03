"""`catlip tag`: a tiny CatLIP head trained on synthetic scenes whose caption plants one concept (the ground the
scene stands on: grass, sand or water) tags new scenes with that concept first; inputs and bad inputs."""

from __future__ import annotations

import io
import json

import pytest
import torch
from shards import write_tar  # tests/shards.py

from catlip.cli import main
from catlip.evaluate.caption.images import list_images
from catlip.evaluate.caption.tag import LabelNames, top_labels

from tiny import TINY_VIT  # noqa: E402  (tests/tiny.py)

TINY = TINY_VIT + """  head_bias_init: -3.0
  embed_dim: 16
  text_width: 32
  text_layers: 1
  text_heads: 2
data:
  context_length: 16
"""
GROUNDS = {"grass": "on the grass", "sand": "on the sand", "water": "on the water"}
COMMON = ["--workers", "0", "--no-progress", "--batch-size", "16"]


def scenes(seed: int, per_ground: int):
    """(ground, PNG bytes) of the first synthetic scenes standing on each of GROUNDS."""
    from catlip.data.synthetic import synthetic_sample

    counts = dict.fromkeys(GROUNDS, 0)
    i = 0
    while min(counts.values()) < per_ground:
        s = synthetic_sample(i, seed=seed, image_size=32)
        i += 1
        ground = next((g for g, where in GROUNDS.items() if s.captions[0].endswith(where)), None)
        if ground is None or counts[ground] >= per_ground:
            continue
        counts[ground] += 1
        buf = io.BytesIO()
        s.image.save(buf, format="PNG")
        yield ground, buf.getvalue()


def _pretrain(root, name: str, overrides: list[str]) -> str:
    from catlip.config import load_config
    from catlip.train.loop import pretrain

    (root / "tiny.yaml").write_text(TINY)
    cfg = load_config(root / "tiny.yaml", [
        "data.vocab_min_count=1", "data.num_workers=0", "data.augment=none", "optim.warmup_steps=2",
        "optim.lr=0.003", f"train.output_dir={root / name}", "train.progress=false", "train.tensorboard=false",
        *overrides])
    return str(pretrain(cfg))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A CatLIP run on scenes captioned with their ground only ("the grass"), and new scenes to tag."""
    root = tmp_path_factory.mktemp("tag")
    members = []
    for i, (ground, png) in enumerate(scenes(seed=1, per_ground=16)):
        members += [(f"{i:04d}.png", png), (f"{i:04d}.txt", f"the {ground}".encode())]
    write_tar(root / "train-000.tar", members)
    run = _pretrain(root, "catlip", ["method.name=catlip", f"data.train=[{root / 'train-000.tar'}]",
                                     "data.batch_size=24", "optim.steps=40", "train.ckpt_every=40"])
    images = root / "images"
    images.mkdir()
    truth = {}
    for i, (ground, png) in enumerate(scenes(seed=2, per_ground=2)):
        (images / f"scene{i}.png").write_bytes(png)
        truth[str(images / f"scene{i}.png")] = ground
    return {"run": run, "images": images, "truth": truth, "root": root}


def test_tag_returns_the_planted_concept_first(planted, tmp_path, capsys):
    out, jsonl = tmp_path / "tags.json", tmp_path / "tags.jsonl"
    assert main(["tag", planted["run"], str(planted["images"]), "--top", "3", "--jsonl", str(jsonl),
                 "-o", str(out), *COMMON]) == 0
    result = json.loads(out.read_text())
    assert result["activation"] == "sigmoid" and result["labels"] == "synsets" and not result["skipped"]
    firsts = {img["image"]: img["tags"][0] for img in result["images"]}
    assert {k: v["name"] for k, v in firsts.items()} == planted["truth"]
    img = result["images"][0]
    top = img["tags"][0]
    assert top["key"].startswith("n") and top["lemmas"] and top["gloss"]
    assert [t["probability"] for t in img["tags"]] == sorted((t["probability"] for t in img["tags"]), reverse=True)
    assert top["probability"] > 2 * img["tags"][1]["probability"]
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [line["image"] for line in lines] == [img["image"] for img in result["images"]]
    printed = capsys.readouterr()
    assert top["gloss"][:30] in printed.out and "tagged 6 images, skipped 0" in printed.err


def test_undecodable_image_is_reported_and_the_rest_tagged(planted, tmp_path, capsys):
    good = sorted(planted["truth"])[:2]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "tags.json"
    assert main(["tag", planted["run"], good[0], str(broken), good[1], "--threshold", "0.2", "-o", str(out),
                 *COMMON]) == 0
    result = json.loads(out.read_text())
    assert [img["image"] for img in result["images"]] == good
    assert [s["image"] for s in result["skipped"]] == [str(broken)] and result["skipped"][0]["error"]
    assert all(t["probability"] >= 0.2 for img in result["images"] for t in img["tags"])
    err = capsys.readouterr().err
    assert f"skipped {broken}" in err and "tagged 2 images, skipped 1" in err


def test_shards_and_globs_are_inputs(planted, tmp_path):
    files = sorted(planted["truth"])
    shard = write_tar(tmp_path / "s-000.tar", [(f"{i:03d}.png", open(f, "rb").read()) for i, f in enumerate(files)]
                      + [("000.txt", b"a caption is not an image")])
    refs = list_images([str(shard), str(planted["images"] / "scene*.png")])
    assert len(refs) == 2 * len(files) and refs[0].name.endswith("000.png")
    out = tmp_path / "tags.json"
    assert main(["tag", planted["run"], str(shard), "-o", str(out), *COMMON]) == 0
    names = [img["tags"][0]["name"] for img in json.loads(out.read_text())["images"]]
    assert names == [planted["truth"][f] for f in files]


def test_missing_input_and_bad_flags_are_one_line_errors(planted, capsys):
    assert main(["tag", planted["run"], str(planted["images"] / "nothing-*.png"), *COMMON]) == 2
    assert main(["tag", planted["run"], str(planted["images"]), "--threshold", "2", *COMMON]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 2 and "no image found" in errors[0] and "--threshold" in errors[1]


def test_a_clip_checkpoint_cannot_tag(planted, tmp_path, capsys):
    run = _pretrain(tmp_path, "clip", ["method.name=clip", "data.synthetic_size=16", "data.batch_size=8",
                                       "optim.steps=1", "train.ckpt_every=1"])
    assert main(["tag", run, str(planted["images"]), *COMMON]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1
    assert "classification head" in errors[0] and "CatLIP" in errors[0] and "SuperClass" in errors[0]


def test_top_labels_skip_never_target_ids_and_apply_the_threshold():
    probs = torch.tensor([[0.9, 0.05, 0.6, 0.3], [0.1, 0.2, 0.3, 0.4]])
    assert top_labels(probs, never=[0], top=2, threshold=0.0) == [[(2, pytest.approx(0.6)), (3, pytest.approx(0.3))],
                                                                    [(3, pytest.approx(0.4)), (2, pytest.approx(0.3))]]
    assert top_labels(probs, never=[], top=10, threshold=0.35) == [[(0, pytest.approx(0.9)), (2, pytest.approx(0.6))],
                                                                     [(3, pytest.approx(0.4))]]


def test_bpe_labels_are_named_by_their_decoded_token():
    from catlip.labels.vocab import Vocabulary

    vocab = Vocabulary.full_bpe()
    dog = vocab.encode([str(i) for i in vocab.extractor().extract("dog")])[0]
    info = LabelNames(vocab).describe(dog)
    assert info["name"] == "dog" and "lemmas" not in info


def test_superclass_tags_are_bpe_tokens_with_softmax_probabilities(planted, tmp_path):
    run = _pretrain(tmp_path, "superclass", ["method.name=superclass", "data.synthetic_size=16",
                                             "data.batch_size=8", "optim.steps=2", "train.ckpt_every=2"])
    out = tmp_path / "tags.json"
    assert main(["tag", run, str(planted["images"]), "--top", "5", "-o", str(out), *COMMON]) == 0
    result = json.loads(out.read_text())
    assert result["activation"] == "softmax" and result["labels"] == "bpe"
    tags = result["images"][0]["tags"]
    assert len(tags) == 5 and sum(t["probability"] for t in tags) < 1.0
    assert all("lemmas" not in t and t["name"] and int(t["key"]) not in (0, 49406, 49407) for t in tags)


def test_a_reader_that_goes_away_ends_tag_quietly(planted, monkeypatch, capsys):
    """`catlip tag ... | head -1`: when the pipe closes, no traceback and the exit status of a SIGPIPE'd program."""
    import os
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone: every write now fails with EPIPE
    with open(write_end, "w", buffering=1) as closed_pipe:  # line-buffered: the first line hits the pipe
        monkeypatch.setattr(sys, "stdout", closed_pipe)
        assert main(["tag", planted["run"], str(planted["images"]), "--top", "3", *COMMON]) == 141
    assert "Traceback" not in capsys.readouterr().err
