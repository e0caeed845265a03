"""Methods end to end on tiny models: targets, IDF statistics, gradients, and over-fitting one batch."""

from __future__ import annotations

import math

import pytest
import torch

from catlip.config import Config, ConfigError
from catlip.errors import DataError
from catlip.methods import BPE_SPECIAL_IDS, build_method
from catlip.methods.targets import IDFStats, multi_hot

V = 12


def tiny_config(method: str, **method_fields) -> Config:
    cfg = Config()
    cfg.method.name = method
    for key, value in method_fields.items():
        setattr(cfg.method, key, value)
    cfg.model.backbone = "vit_tiny_patch16_224"
    cfg.model.backbone_kwargs = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
    cfg.model.embed_dim, cfg.model.text_width, cfg.model.text_layers, cfg.model.text_heads = 16, 32, 2, 2
    cfg.model.image_size, cfg.data.context_length = 32, 8
    return cfg


def tiny_batch(batch_size: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    label_ids = torch.full((batch_size, 4), -1, dtype=torch.long)
    for i in range(batch_size):
        n = 1 + i % 3
        label_ids[i, :n] = torch.randperm(V, generator=g)[:n]
    text = torch.zeros(batch_size, 8, dtype=torch.long)
    text[:, 0] = 49406
    text[:, 1:5] = torch.randint(1, 49405, (batch_size, 4), generator=g)
    text[:, 5] = 49407
    return {"image": torch.randn(batch_size, 3, 32, 32, generator=g), "label_ids": label_ids, "text": text}


def test_multi_hot_ignores_padding_and_repeats():
    ids = torch.tensor([[2, 0, 2, -1], [-1, -1, -1, -1], [4, 3, 1, 0]])
    dense = multi_hot(ids, 5)
    assert dense.tolist() == [[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 0, 1, 1]]
    with pytest.raises(DataError, match="outside the vocabulary"):
        multi_hot(torch.tensor([[5]]), 5)


def test_idf_statistics_from_hand_worked_batches():
    stats = IDFStats(4, zero_weight_ids=[3])
    # Documents: {0, 1}, {1}, {} -> df = [1, 2, 0, 0], N = 3 (the empty caption is still a document).
    stats.update(multi_hot(torch.tensor([[0, 1, 1], [1, -1, -1], [-1, -1, -1]]), 4))
    assert stats.doc_freq.tolist() == [1, 2, 0, 0] and stats.num_docs.item() == 3
    stats.update(multi_hot(torch.tensor([[2, 3], [0, -1]]), 4))
    assert stats.doc_freq.tolist() == [2, 2, 1, 1] and stats.num_docs.item() == 5
    expected = [math.log(6 / 3), math.log(6 / 3), math.log(6 / 2), 0.0]  # class 3 is a zero-weight special id
    assert stats.idf().tolist() == pytest.approx(expected, rel=1e-6)
    assert set(stats.state_dict()) == {"doc_freq", "num_docs"}


def test_idf_momentum_decays_old_counts():
    stats = IDFStats(2, momentum=0.5)
    stats.update(torch.tensor([[1.0, 0.0]]))
    stats.update(torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    assert stats.doc_freq.tolist() == [0.5, 2.0] and stats.num_docs.item() == 2.5


def test_superclass_updates_idf_before_weighting_and_only_in_training():
    torch.manual_seed(0)
    method = build_method(tiny_config("superclass"), V)
    batch = {"image": torch.randn(3, 3, 32, 32), "label_ids": torch.tensor([[0, 1], [1, -1], [-1, -1]])}
    with torch.no_grad():
        method.head.fc.weight.zero_()
        method.head.fc.bias.zero_()
    out = method(batch)
    assert method.idf.doc_freq[:3].tolist() == [1, 2, 0] and method.idf.num_docs.item() == 3
    # Zero logits: each labelled sample costs log V, the unlabelled one 0; the mean is over all 3 samples.
    assert out["loss"].item() == pytest.approx(2 * math.log(V) / 3, rel=1e-5)
    method.eval()
    method(batch)
    assert method.idf.num_docs.item() == 3
    assert "idf.doc_freq" in method.state_dict() and "idf.num_docs" in method.state_dict()


def test_superclass_idf_state_survives_state_dict_round_trip():
    torch.manual_seed(0)
    cfg = tiny_config("superclass")
    trained = build_method(cfg, V)
    trained(tiny_batch())
    fresh = build_method(cfg, V)
    fresh.load_state_dict(trained.state_dict())
    assert torch.equal(fresh.idf.doc_freq, trained.idf.doc_freq) and fresh.idf.num_docs.item() == 8


def test_superclass_over_full_bpe_table_zero_weights_special_tokens():
    torch.manual_seed(0)
    method = build_method(tiny_config("superclass"), 49408)
    batch = {"image": torch.randn(2, 3, 32, 32), "label_ids": torch.tensor([[49406, 320, 49407], [0, 49407, -1]])}
    out = method(batch)
    assert out["targets"][0].nonzero().flatten().tolist() == [320]
    assert out["targets"][1].sum().item() == 0
    assert method.idf_weights()[list(BPE_SPECIAL_IDS)].tolist() == [0.0, 0.0, 0.0]


def test_catlip_loss_at_zero_head_is_v_log2():
    torch.manual_seed(0)
    method = build_method(tiny_config("catlip"), V)
    with torch.no_grad():
        method.classifier.weight.zero_()
        method.classifier.bias.zero_()
    assert method(tiny_batch())["loss"].item() == pytest.approx(V * math.log(2), rel=1e-6)


def test_catlip_head_bias_init_from_config():
    cfg = tiny_config("catlip")
    cfg.model.head_bias_init = -4.0
    weight, bias = build_method(cfg, V).head_weight()
    assert weight.shape == (V, 32) and torch.all(bias == -4.0)


@pytest.mark.parametrize("method", ["catlip", "superclass", "clip", "siglip"])
def test_every_parameter_receives_a_gradient(method):
    torch.manual_seed(0)
    model = build_method(tiny_config(method), V)
    out = model(tiny_batch())
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []
    if method in ("clip", "siglip"):
        assert model.inputs == ("image", "text")
        assert out["image_features"].shape == out["text_features"].shape == (8, 16)
        assert model.logit_scale.grad.abs().item() > 0
    else:
        assert model.inputs == ("image", "label_ids") and out["logits"].shape == (8, V)


def entropy_floor(model, batch) -> float:
    """The least idf_softmax can reach on ``batch``: the mean entropy of its soft targets (current IDF)."""
    weights = model.idf.weights(model.targets(batch["label_ids"]))
    targets = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-30)
    return (-(targets * targets.clamp_min(1e-30).log()).sum() / targets.shape[0]).item()


@pytest.mark.parametrize(
    "method,loss",
    [("catlip", ""), ("superclass", ""), ("clip", ""), ("siglip", ""), ("superclass", "asl"),
     ("superclass", "two_way"), ("catlip", "soft_margin")],
)
def test_method_overfits_one_batch(method, loss):
    torch.manual_seed(0)
    model = build_method(tiny_config(method, loss=loss), V)
    batch = tiny_batch()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    losses = []
    for _ in range(80):
        value = model(batch)["loss"]
        opt.zero_grad()
        value.backward()
        opt.step()
        losses.append(value.item())
    first, final = losses[0], model(batch)["loss"].item()
    if model.name == "superclass" and model.loss_name == "idf_softmax":
        # Soft multi-label targets cannot be matched below their entropy: measure the excess over it.
        floor = entropy_floor(model, batch)
        first, final = first - floor, final - floor
    assert final < first / 20, (first, final)


def test_bad_method_and_loss_names_are_config_errors():
    with pytest.raises(ConfigError):
        build_method(tiny_config("clip", loss="bce"), V)
    with pytest.raises(ConfigError):
        build_method(tiny_config("catlip", loss="focal"), V)
    with pytest.raises(ConfigError):
        build_method(tiny_config("catlip"), 0)


@pytest.mark.parametrize("method", ["catlip", "superclass"])
def test_classification_methods_work_on_a_convnet(method):
    torch.manual_seed(0)
    cfg = tiny_config(method)
    cfg.model.backbone, cfg.model.backbone_kwargs = "resnet18", {}
    model = build_method(cfg, V)
    out = model(tiny_batch(4))
    out["loss"].backward()
    assert out["logits"].shape == (4, V) and torch.isfinite(out["loss"])
    assert model.features(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_multiscale_method_exports_a_dynamic_size_backbone(tmp_path):
    from catlip.models import export_backbone, load_backbone

    torch.manual_seed(0)
    cfg = tiny_config("superclass")
    cfg.data.multiscale = True
    model = build_method(cfg, V).eval()
    spec = export_backbone(model, tmp_path / "b.safetensors")
    assert spec["kwargs"]["dynamic_img_size"] is True
    loaded = load_backbone(tmp_path / "b.safetensors").eval()
    x = torch.randn(2, 3, 48, 48)  # another resolution than the 32 px it was built for
    with torch.no_grad():
        assert torch.equal(loaded.forward_features(x), model.backbone.forward_features(x))
