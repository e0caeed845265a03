"""SuperCLIP: CLIP's contrastive loss + method.superclip_weight x a SuperClass-style classification head.

The registry entry and its defaults; the loss equals the two parts computed by hand with ``catlip.losses``; a tiny
model over-fits one batch; a killed run resumes exactly and logs both parts; evaluation sees a text tower and a head.
(``tests/unit/test_registries.py`` also over-fits and resumes it with every label source.)
"""

from __future__ import annotations

import json

import pytest
import torch

from catlip import losses
from catlip.config import ConfigError, load_config
from catlip.methods import build_method
from catlip.methods import registry as methods_registry

V = 40
TINY = [
    "model.backbone=vit_tiny_patch16_224",
    "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}",
    "model.embed_dim=16", "model.text_width=32", "model.text_layers=1", "model.text_heads=2",
    "model.image_size=32", "data.context_length=16", "data.num_workers=0", "data.vocab_min_count=1",
    "train.log_every=1", "train.progress=false", "train.tensorboard=false", "method.name=superclip",
]


def _cfg(*extra):
    return load_config(None, [*TINY, *extra])


def _batch(n: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (n, 4), generator=g)
    ids[::2, 3] = -1  # padding
    return {"image": torch.randn(n, 3, 32, 32, generator=g), "text": torch.randint(1, 49406, (n, 16), generator=g),
            "label_ids": ids}


def test_registry_entry_and_defaults():
    spec = methods_registry.get("superclip")
    assert spec.inputs == ("image", "text", "label_ids") and spec.uses_text and spec.uses_labels
    assert spec.default_labels == "bpe" and spec.default_loss == "idf_softmax" and spec.zero_shot == "text"
    resolved = methods_registry.resolve(_cfg().method)
    assert resolved.source.name == "bpe" and resolved.loss == "idf_softmax"
    assert _cfg().method.superclip_weight == 1.0
    model = build_method(_cfg("method.superclip_weight=0.25"), V)
    assert model.name == "superclip" and model.inputs == spec.inputs and model.weight == 0.25
    assert model.idf is not None and model.head.fc.out_features == V and hasattr(model, "encode_text")
    # any label source and any classification loss, as the classification methods
    assert methods_registry.resolve(_cfg("method.labels=words", "method.loss=bce").method).loss == "bce"


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="superclip_weight must be >= 0"):
        build_method(_cfg("method.superclip_weight=-1"), V)
    with pytest.raises(ConfigError, match="not a classification loss"):
        build_method(_cfg("method.loss=clip"), V)
    with pytest.raises(ConfigError, match="non-empty label vocabulary"):
        build_method(_cfg(), 0)


@pytest.mark.parametrize("loss,weight", [("idf_softmax", 1.0), ("idf_softmax", 0.3), ("bce", 2.0)])
def test_loss_is_contrastive_plus_weight_times_classification(loss, weight):
    torch.manual_seed(0)
    model = build_method(_cfg(f"method.loss={loss}", f"method.superclip_weight={weight}"), V, zero_weight_ids=[0])
    model.train()
    batch = _batch()
    with torch.no_grad():
        out = model(batch)
        # the two parts by hand, from the towers and the head
        tokens = model.backbone.forward_features(batch["image"])
        image = model.image_proj(model.backbone.forward_head(tokens, pre_logits=True))
        text = model.text(batch["text"])
        contrastive = losses.clip_loss(image, text, model.scale())
        targets = torch.zeros(len(batch["image"]), V)
        for i, row in enumerate(batch["label_ids"].tolist()):
            for j in row:
                if j > 0:  # -1 padding; id 0 is a zero-weight (special) class
                    targets[i, j] = 1.0
        patches = tokens[:, model.backbone.num_prefix_tokens:].mean(1)  # mean patch token, CLS excluded
        logits = model.head.fc(model.head.norm(patches))
        if loss == "idf_softmax":  # IDF from this batch alone (the statistics were empty): log((N+1)/(df+1))
            idf = torch.log((len(targets) + 1) / (targets.sum(0) + 1))
            idf[0] = 0.0
            classification = losses.idf_softmax(logits, targets * idf)
        else:
            classification = losses.bce(logits, targets)
    assert torch.allclose(out["clip_loss"], contrastive, atol=1e-5)
    assert torch.allclose(out["cls_loss"], classification, atol=1e-5)
    assert torch.allclose(out["loss"], contrastive + weight * classification, atol=1e-5)
    assert torch.equal(out["targets"], targets)


def test_zero_weight_is_clip_and_every_parameter_learns():
    torch.manual_seed(0)
    model = build_method(_cfg(), V)
    out = model(_batch())
    out["loss"].backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)] == []
    model = build_method(_cfg("method.superclip_weight=0"), V)
    out = model(_batch())
    assert torch.allclose(out["loss"], out["clip_loss"])


def test_tiny_model_over_fits_one_batch():
    torch.manual_seed(0)
    model = build_method(_cfg(), V)
    batch = _batch()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    first = None
    for _ in range(80):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first or {k: out[k].item() for k in ("loss", "clip_loss", "cls_loss")}
    out = model(batch)
    # the softmax over IDF-weighted soft targets cannot go below their entropy: measure the excess over it
    w = model.idf.weights(model.targets(batch["label_ids"]))
    t = w / w.sum(1, keepdim=True).clamp_min(1e-30)
    floor = (-(t * t.clamp_min(1e-30).log()).sum() / len(t)).item()
    assert out["clip_loss"].item() < 0.1 * first["clip_loss"], (first, out["clip_loss"])
    assert out["cls_loss"].item() - floor < 0.1 * (first["cls_loss"] - floor), (first, out["cls_loss"], floor)


RESUME = ["data.train=[synthetic]", "data.synthetic_size=12", "data.batch_size=4", "model.drop_path_rate=0.1",
          "optim.steps=4", "optim.warmup_steps=2", "optim.lr=0.002", "train.ckpt_every=2",
          "method.superclip_weight=0.5"]


def _run(out, *extra):
    from catlip.train.loop import pretrain

    return pretrain(load_config(None, [*TINY, *RESUME, f"train.output_dir={out}", *extra]))


@pytest.mark.slow
def test_resumes_exactly_and_logs_both_parts(tmp_path):
    from safetensors.torch import load_file

    from catlip.evaluate.common.model import load_eval_model

    straight, split = tmp_path / "straight", tmp_path / "split"
    _run(straight)
    _run(split, "train.stop_after=2")
    _run(split, "train.resume=auto")
    ck = "checkpoints/step_0000004/model.safetensors"
    wa, wb = load_file(str(straight / ck)), load_file(str(split / ck))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(k.startswith("head.fc.") for k in wa) and any(k.startswith("idf.") for k in wa)
    assert any(k.startswith("text.") for k in wa)
    logs = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (straight, split)]
    assert [r["loss"] for r in logs[0]] == [r["loss"] for r in logs[1]] and len(logs[0]) == 4
    for r in logs[0]:
        assert r["loss"] == pytest.approx(r["clip_loss"] + 0.5 * r["cls_loss"], rel=1e-5)
    assert json.loads((split / "vocab.json").read_text())["labels"] == "bpe"
    model = load_eval_model(str(split))
    assert model.method_name == "superclip" and model.zero_shot_mode() == "text"
    weight, _ = model.head_weight("head zero-shot")  # the head is there too (`catlip zeroshot --mode head`)
    assert weight.shape[0] == len(model.vocab)
    assert model.method.weight == 0.5


def test_recipes():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs"
    c = load_config(root / "superclip_vit_b16.yaml")  # hustvl/SuperCLIP superclip_vit_b16_s512m_bs16k
    assert (c.method.name, c.method.superclip_weight, methods_registry.resolve(c.method).source.name) == \
        ("superclip", 1.0, "bpe")
    assert (c.optim.lr, c.optim.betas, c.optim.eps, c.optim.weight_decay, c.optim.warmup_steps) == \
        (1e-3, [0.9, 0.98], 1e-6, 0.2, 500)
    assert c.data.batch_size * 64 * c.optim.steps == 512_000_000 and c.model.backbone == "vit_base_patch16_224"
    assert (c.model.embed_dim, c.model.text_width, c.model.text_layers, c.data.context_length) == (512, 512, 12, 77)
    tiny = load_config(root / "superclip_tiny_cpu.yaml")
    base = load_config(root / "tiny_cpu.yaml")
    assert tiny.method.name == "superclip" and tiny.model.text_layers < base.model.text_layers
    assert (tiny.model.backbone_kwargs, tiny.optim, tiny.model.image_size) == \
        (base.model.backbone_kwargs, base.optim, base.model.image_size)
