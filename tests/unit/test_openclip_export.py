"""Two-tower runs exported for open_clip (issue 12): open_clip's own loaders give the run's embeddings.

A tiny CLIP method with perturbed weights (no bias or LayerNorm left at its init value) is exported and loaded
the two documented ways, ``local-dir:`` and a named config + ``pretrained=<file>``; image and text embeddings,
the temperature (and SigLIP's bias) and the evaluation preprocessing must be the run's. Backbone variants that
the conversion handles (layer scale, no_embed_class, fc_norm, pre-norm, no qkv bias, mean-token pooling) are
checked the same way; what it cannot represent is a one-line ExportError.
"""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import open_clip
import pytest
import torch
from PIL import Image

from catlip.cli import main
from catlip.config import load_config
from catlip.data.transforms import eval_transform
from catlip.errors import ExportError
from catlip.methods import build_method
from catlip.models.backbone import average_pooled
from catlip.models.openclip_export import CONFIG_NAME, WEIGHTS_NAME, export_open_clip

SIZE, CTX = 32, 16
TINY = ["model.backbone=vit_tiny_patch16_224", "model.image_size=32", "model.embed_dim=32", "model.text_width=32",
        "model.text_layers=1", "model.text_heads=2", "data.context_length=16"]
VIT = {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2, "img_size": 32}
CAPTIONS = ["a photo of a dog", "Two people riding bicycles down a busy city street at night.", "", "red car"]
ATOL = 1e-5


def tiny_method(method: str = "clip", *extra: str, vit: dict | None = None, num_classes: int = 0, seed: int = 0):
    kwargs = json.dumps({**VIT, **(vit or {})})
    cfg = load_config(None, [f"method.name={method}", f"model.backbone_kwargs={kwargs}", *TINY, *extra])
    torch.manual_seed(seed)
    model = build_method(cfg, num_classes).eval()
    with torch.no_grad():  # move every bias / LayerNorm / embedding off its init value
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        if hasattr(model, "logit_scale"):
            model.logit_scale.fill_(3.0)
    return model


def images(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def assert_same_model(model, method) -> None:
    """open_clip ``model`` embeds images, captions and scales logits exactly as catlip's ``method``."""
    x, tokens = images(), open_clip.tokenize(CAPTIONS, context_length=CTX)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.encode_image(x, normalize=True), method.encode_image(x), atol=ATOL, rtol=0)
        assert torch.allclose(model.encode_text(tokens, normalize=True), method.encode_text(tokens), atol=ATOL,
                              rtol=0)
        assert torch.allclose(model.logit_scale.exp(), method.scale())
    if getattr(method, "logit_bias", None) is None:
        assert model.logit_bias is None
    else:
        assert torch.equal(model.logit_bias.detach(), method.logit_bias.detach())


def load_local(out: Path):
    return open_clip.create_model_and_transforms(f"local-dir:{out}")


@pytest.fixture(scope="module")
def clip_export(tmp_path_factory):
    method = tiny_method()
    out = tmp_path_factory.mktemp("oc") / "clip_run"
    written = export_open_clip(method, out, image_size=SIZE, context_length=CTX)
    return method, out, written


def test_the_folder_holds_open_clips_layout(clip_export):
    _, out, written = clip_export
    assert sorted(p.name for p in out.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME, f"{written['name']}.json"])
    config = json.loads((out / CONFIG_NAME).read_text())
    assert set(config) == {"model_cfg", "preprocess_cfg"}
    assert json.loads(Path(written["model_config"]).read_text()) == config["model_cfg"]
    vision = config["model_cfg"]["vision_cfg"]
    assert "timm_model_name" not in vision and vision["norm_kwargs"] == {"eps": 1e-6}  # timm's ViT eps
    assert vision["pool_type"] == "tok" and vision["no_ln_pre"] and config["model_cfg"]["custom_text"]


def test_local_dir_loads_the_run_with_open_clips_native_vit(clip_export):
    method, out, _ = clip_export
    model, _, preprocess = load_local(out)
    assert type(model).__name__ == "CustomTextCLIP"
    assert type(model.visual) is open_clip.transformer.VisionTransformer
    assert_same_model(model, method)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    assert torch.equal(tokenizer(CAPTIONS), open_clip.tokenize(CAPTIONS, context_length=CTX))


def test_a_named_config_and_a_pretrained_file_load_it_too(clip_export):
    method, out, written = clip_export
    open_clip.add_model_config(written["model_config"])
    assert written["name"] in open_clip.list_models()
    model, _, preprocess = open_clip.create_model_and_transforms(written["name"], pretrained=written["weights"],
                                                                 image_interpolation="bilinear")
    assert_same_model(model, method)
    assert torch.equal(open_clip.get_tokenizer(written["name"])(CAPTIONS),
                       open_clip.tokenize(CAPTIONS, context_length=CTX))
    _assert_catlip_eval_preprocessing(preprocess)


def _assert_catlip_eval_preprocessing(preprocess) -> None:
    pixels = torch.randint(0, 256, (45, 70, 3), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    image = Image.fromarray(pixels.numpy())  # not square and not the model size: resize + center crop matter
    assert torch.equal(preprocess(image), eval_transform(SIZE)(image))


def test_the_local_dir_preprocessing_is_catlips_evaluation_transform(clip_export):
    _, out, _ = clip_export
    _, _, preprocess = load_local(out)
    _assert_catlip_eval_preprocessing(preprocess)


def test_siglip_keeps_its_logit_bias(tmp_path):
    method = tiny_method("siglip", seed=3)
    with torch.no_grad():
        method.logit_bias.fill_(-7.25)
    written = export_open_clip(method, tmp_path / "siglip", image_size=SIZE, context_length=CTX)
    assert written["model_cfg"]["init_logit_bias"] == -7.25
    model, _, _ = load_local(tmp_path / "siglip")
    assert_same_model(model, method)


def test_superclip_exports_its_clip_towers_without_the_label_head(tmp_path):
    method = tiny_method("superclip", num_classes=50, seed=8)
    written = export_open_clip(method, tmp_path / "superclip", image_size=SIZE, context_length=CTX)
    model, _, _ = load_local(tmp_path / "superclip")
    assert_same_model(model, method)
    assert not any(k.startswith("head") for k in model.state_dict()) and written["model_cfg"]["custom_text"]


def test_the_exported_temperature_is_the_capped_one(tmp_path):
    method = tiny_method(seed=4)
    with torch.no_grad():
        method.logit_scale.fill_(6.0)  # above log(100): CLIPTowers.scale() uses 100
    export_open_clip(method, tmp_path / "hot", image_size=SIZE, context_length=CTX)
    model, _, _ = load_local(tmp_path / "hot")
    assert model.logit_scale.item() == pytest.approx(math.log(100.0)) and method.scale().item() == pytest.approx(100)


def _mean_token_pooling(method):
    """LiT's ``image_pool="avg"`` contract on a CLIP instance: the mean patch token of forward_features."""
    method.image_pool = "avg"

    def encode_image(self, x, normalize=True):
        out = self.image_proj(average_pooled(self.backbone, x))
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    method.encode_image = types.MethodType(encode_image, method)
    return method


def test_mean_patch_token_pooling(tmp_path):
    method = _mean_token_pooling(tiny_method(seed=5))
    written = export_open_clip(method, tmp_path / "avg", image_size=SIZE, context_length=CTX)
    vision = written["model_cfg"]["vision_cfg"]
    assert vision["pool_type"] == "avg" and vision["final_ln_after_pool"] is False
    model, _, _ = load_local(tmp_path / "avg")
    assert_same_model(model, method)


@pytest.mark.parametrize("vit, expect", [
    ({"init_values": 0.5}, {"ls_init_value": 1.0}),
    ({"no_embed_class": True}, {}),
    ({"global_pool": "avg"}, {"pool_type": "avg", "final_ln_after_pool": True}),  # timm's fc_norm after the mean
    ({"pre_norm": True}, {"no_ln_pre": False}),
    ({"qkv_bias": False}, {}),
], ids=["layer_scale", "no_embed_class", "fc_norm", "pre_norm", "no_qkv_bias"])
def test_backbone_variants_convert_exactly(tmp_path, vit, expect):
    method = tiny_method(vit=vit, seed=6)
    written = export_open_clip(method, tmp_path / "v", image_size=SIZE, context_length=CTX)
    assert expect.items() <= written["model_cfg"]["vision_cfg"].items()
    model, _, _ = load_local(tmp_path / "v")
    assert_same_model(model, method)


def _refusal(method, **kwargs) -> str:
    with pytest.raises(ExportError) as err:
        export_open_clip(method, kwargs.pop("out"), image_size=SIZE, context_length=CTX, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_classification_run_is_told_to_train_a_text_tower_first(tmp_path):
    message = _refusal(tiny_method("catlip", num_classes=10), out=tmp_path / "x")
    assert "no text tower" in message and "catlip lit" in message
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("extra, vit, words", [
    (["model.stem=conv"], None, "model.stem=conv"),
    ([], {"qk_norm": True}, "qk-norm"),
    ([], {"reg_tokens": 2}, "prefix tokens"),
    ([], {"class_token": False, "global_pool": "avg"}, "class token"),
    ([], {"global_pool": "max"}, "pools 'max'"),
], ids=["conv_stem", "qk_norm", "registers", "no_class_token", "max_pool"])
def test_what_open_clip_cannot_represent_is_refused(tmp_path, extra, vit, words):
    assert words in _refusal(tiny_method("clip", *extra, vit=vit), out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_an_unknown_image_pool_or_another_size_is_refused(tmp_path):
    method = tiny_method()
    method.image_pool = "gem"
    assert "unknown image_pool 'gem'" in _refusal(method, out=tmp_path / "x")
    method.image_pool = "token"
    with pytest.raises(ExportError, match="patch grid"):
        export_open_clip(method, tmp_path / "x", image_size=48, context_length=CTX)
    with pytest.raises(ExportError, match="context_length=77"):
        export_open_clip(method, tmp_path / "x", image_size=SIZE, context_length=77)


def test_the_self_check_catches_a_conversion_that_does_not_reproduce_the_run(tmp_path):
    method = tiny_method()
    plain = method.encode_image
    method.encode_image = lambda x, normalize=True: plain(x.flip(-1), normalize)  # not what the weights compute
    assert "image embeddings differ" in _refusal(method, out=tmp_path / "x")


CLI_RUN = ["method.name=clip", "model.backbone=vit_tiny_patch16_224",
           "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}", "model.image_size=32",
           "model.embed_dim=32", "model.text_width=32", "model.text_layers=1", "model.text_heads=2",
           "data.context_length=16", "data.batch_size=4", "data.num_workers=0", "data.synthetic_size=8",
           "optim.steps=2", "optim.warmup_steps=0", "train.progress=false", "train.tensorboard=false"]


def test_catlip_export_format_open_clip(tmp_path, capsys):
    from catlip.train.checkpoint import load_pretrained

    run, out = tmp_path / "run", tmp_path / "oc"
    assert main(["pretrain", *CLI_RUN, f"train.output_dir={run}"]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--format", "open_clip", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"create_model_and_transforms('local-dir:{out}')" in printed and "add_model_config" in printed
    model, _, _ = load_local(out)
    assert_same_model(model, load_pretrained(run).method)
    assert main(["export", str(run), "--format", "open_clip", "-o", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "writes a folder" in err[0]


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_a_lit_method_exports_with_its_image_pool(tmp_path, pool):
    method = tiny_method("lit", "method.image_tower=unused", f"method.image_pool={pool}", seed=7)
    assert method.image_pool == pool
    written = export_open_clip(method, tmp_path / "lit", image_size=SIZE, context_length=CTX)
    assert written["model_cfg"]["vision_cfg"]["pool_type"] == {"token": "tok", "avg": "avg"}[pool]
    model, _, _ = load_local(tmp_path / "lit")
    assert_same_model(model, method)
