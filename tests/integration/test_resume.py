"""Exact resume: 4 steps straight == 2 steps, a new process state, resume, 2 more (weights, optimizer, data)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from catlip.config import load_config
from catlip.errors import CheckpointError, VocabularyError
from catlip.train.loop import pretrain

TINY = [
    "model.backbone=vit_tiny_patch16_224",
    "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}",
    "model.drop_path_rate=0.1",  # uses the RNG, so the RNG state must be restored too
    "model.image_size=32", "data.batch_size=4", "data.num_workers=0",
    "data.synthetic_size=12",  # 3 batches per epoch: the resumed half crosses an epoch boundary
    "optim.steps=4", "optim.warmup_steps=2", "optim.lr=0.002",
    "train.ckpt_every=2", "train.log_every=1", "train.progress=false", "train.tensorboard=false",
]
CLIP = ["method.name=clip", "model.embed_dim=32", "model.text_width=32", "model.text_layers=1",
        "model.text_heads=2", "data.context_length=16"]


class StubVocab:
    """Stand-in for catlip.labels.vocab.Vocabulary (its real class is exercised by the labels tests)."""

    method, options = "catlip", {}

    def __init__(self, keys, tag="a"):
        self.keys, self.hash = list(keys), f"stub-{tag}-{len(keys)}"

    def __len__(self):
        return len(self.keys)

    def encode(self, keys):
        return [self.keys.index(k) for k in keys if k in self.keys]

    def extractor(self):  # the loader asks its vocabulary for the extractor, as Vocabulary answers
        from catlip.labels import get_extractor

        return get_extractor(self.method, **self.options)

    def save(self, path):
        path.write_text(json.dumps({"keys": self.keys}))


def catlip_vocab(tag="a"):
    from catlip.data.synthetic import synthetic_captions
    from catlip.labels import get_extractor

    ex = get_extractor("catlip")
    return StubVocab(sorted({k for caps in synthetic_captions(12) for c in caps for k in ex.extract(c)}), tag)


def _run(out, *extra, vocab=None):
    cfg = load_config(None, [*TINY, f"train.output_dir={out}", *extra])
    return pretrain(cfg, vocab=vocab)


def _final(run_dir, step=4):
    ck = run_dir / "checkpoints" / f"step_{step:07d}"
    return load_file(str(ck / "model.safetensors")), torch.load(ck / "train_state.pt", weights_only=True)


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_same_state(a, b):
    wa, sa = a
    wb, sb = b
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    oa, ob = sa["optimizer"]["state"], sb["optimizer"]["state"]
    assert oa.keys() == ob.keys()
    for k in oa:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(oa[k][name], ob[k][name]), (k, name)
    assert sa["samples_seen"] == sb["samples_seen"] == 16 and sa["epoch"] == sb["epoch"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("method", ["catlip", "clip"])
def test_four_steps_equal_two_plus_resume_plus_two(tmp_path, method):
    extra = CLIP if method == "clip" else []
    vocab = catlip_vocab() if method == "catlip" else None
    straight = _run(tmp_path / "straight", *extra, vocab=vocab)
    split = tmp_path / "split"
    _run(split, *extra, "train.stop_after=2", vocab=vocab)  # a "killed" run: the process state is gone
    assert sorted(p.name for p in (split / "checkpoints").iterdir()) == ["latest", "step_0000002"]
    _run(split, *extra, "train.resume=auto", vocab=vocab)
    _assert_same_state(_final(straight), _final(split))
    want, got = _metrics(straight), _metrics(split)
    assert [m["loss"] for m in want] == [m["loss"] for m in got]  # same samples, same order, same crops
    assert [m["samples"] for m in got] == [4, 8, 12, 16]


def test_resume_with_another_vocabulary_is_a_clear_error(tmp_path):
    _run(tmp_path, "train.stop_after=2", vocab=catlip_vocab("a"))
    with pytest.raises(VocabularyError, match="vocabulary"):
        _run(tmp_path, "train.resume=auto", vocab=catlip_vocab("b"))


def test_resume_with_another_model_is_a_clear_error(tmp_path):
    _run(tmp_path, *CLIP, "train.stop_after=2")
    with pytest.raises(CheckpointError, match="model.text_layers"):
        _run(tmp_path, *CLIP, "model.text_layers=2", "train.resume=auto")


def test_broken_latest_falls_back_to_the_previous_checkpoint(tmp_path):
    _run(tmp_path, *CLIP, "optim.steps=4", "train.keep_checkpoints=3")
    latest = tmp_path / "checkpoints" / "step_0000004" / "model.safetensors"
    latest.write_bytes(latest.read_bytes()[:100])  # truncated by a crash / full disk
    with pytest.warns(UserWarning, match="skipped broken checkpoint"):
        _run(tmp_path, *CLIP, "optim.steps=6", "train.resume=auto")
    assert [m["step"] for m in _metrics(tmp_path)] == [1, 2, 3, 4, 5, 6]  # the rolled-back steps are replaced


def test_a_fresh_run_never_overwrites_an_existing_one(tmp_path):
    _run(tmp_path, *CLIP, "train.stop_after=2")
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        _run(tmp_path, *CLIP)
