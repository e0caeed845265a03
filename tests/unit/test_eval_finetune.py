import pytest
import torch
from PIL import Image

from catlip.config import ConfigError, ModelConfig
from catlip.errors import DataError
from catlip.evaluate.common.datasets import eval_transform, open_labelled
from catlip.evaluate.common.features import Encoder
from catlip.evaluate.classify.finetune import FinetuneConfig, finetune, load_finetune_config, param_groups
from catlip.evaluate.classify.linear import Classifier


def tiny_encoder(seed=0):
    from catlip.models.backbone import create_backbone

    torch.manual_seed(seed)
    cfg = ModelConfig(backbone="vit_tiny_patch16_224",
                      backbone_kwargs={"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}, image_size=16)
    return Encoder(create_backbone(cfg))


def two_colour_folder(root, n=8):
    gen = torch.Generator().manual_seed(0)
    for cls, base in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            noise = torch.randint(-30, 30, (3,), generator=gen).tolist()
            Image.new("RGB", (16, 16), tuple(b + d for b, d in zip(base, noise))).save(root / cls / f"{i}.png")
    return root


def test_layer_decay_groups_scale_lr_by_depth():
    model = Classifier(tiny_encoder(), torch.nn.Linear(32, 2))
    groups = param_groups(model, FinetuneConfig(layer_decay=0.5, weight_decay=0.05))
    scale = {n: g["lr_scale"] for n, p in model.named_parameters() for g in groups if any(p is q for q in g["params"])}
    # timm's convention: embeddings decay^2, block 0 decay^1, the last block and the new classifier 1
    assert scale["encoder.backbone.pos_embed"] == pytest.approx(0.25)
    assert scale["encoder.backbone.blocks.0.attn.qkv.weight"] == pytest.approx(0.5)
    assert scale["encoder.backbone.blocks.1.attn.qkv.weight"] == scale["linear.weight"] == 1.0
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))  # every parameter exactly once
    head = next(g for g in groups if any(p is model.linear.weight for p in g["params"]))
    assert head["lr_scale"] == 1.0 and head["weight_decay"] == 0.05
    bias = next(g for g in groups if any(p is model.linear.bias for p in g["params"]))
    assert bias["weight_decay"] == 0.0


def test_finetune_learns_a_two_class_problem(tmp_path):
    data = open_labelled(two_colour_folder(tmp_path), transform=eval_transform(16))
    cfg = FinetuneConfig(epochs=6, lr=3e-3, min_lr=1e-4, batch_size=8, num_workers=0, device="cpu",
                         label_smoothing=0.0)
    torch.manual_seed(0)
    out = finetune(tiny_encoder(), torch.nn.Linear(32, 2), data, data, cfg, progress=False)
    losses = [h["train_loss"] for h in out["history"]]
    assert losses[-1] < 0.5 * losses[0]
    assert out["final"]["top1"] == 1.0 and out["final"]["num_images"] == 16


def test_finetune_config_rejects_unknown_keys(tmp_path):
    (tmp_path / "r.yaml").write_text("epochs: 2\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_finetune_config(tmp_path / "r.yaml")
    assert load_finetune_config(None, ["epochs=3", "init=transfer"]).epochs == 3
    with pytest.raises(ConfigError):
        load_finetune_config(None, ["init=magic"])


@pytest.mark.parametrize("name", ["finetune_imagenet_vit_b16", "finetune_places365_vit_b16", "finetune_coco_vit_b16",
                                  "finetune_tiny_cpu"])
def test_shipped_recipes_load(name):
    cfg = load_finetune_config(f"configs/{name}.yaml")
    assert cfg.epochs > 0


def test_finetune_streams_webdataset_shards(tmp_path):
    """Shards have no length: the schedule's step count comes from the member names; bad images are counted."""
    import io

    import webdataset as wds

    (tmp_path / "classes.txt").write_text("red\nblue\n")
    with wds.TarWriter(str(tmp_path / "s-000.tar")) as sink:
        for i in range(8):
            buf = io.BytesIO()
            Image.new("RGB", (16, 16), (200, 40, 40) if i % 2 == 0 else (40, 40, 200)).save(buf, format="PNG")
            sink.write({"__key__": f"k{i}", "png": buf.getvalue(), "cls": str(i % 2).encode()})
        sink.write({"__key__": "bad", "jpg": b"not a jpeg", "cls": b"0"})
    data = open_labelled(str(tmp_path / "s-000.tar"), transform=eval_transform(16), shuffle=4)
    cfg = FinetuneConfig(epochs=2, lr=1e-3, batch_size=4, num_workers=0, device="cpu")
    out = finetune(tiny_encoder(), torch.nn.Linear(32, 2), data, None, cfg, progress=False)
    assert out["train_images"] == 9  # eight good members and one unreadable, all counted by name
    assert out["train_skipped"] == 2  # the unreadable one, once per epoch
    assert [h["steps"] for h in out["history"]] == [3, 6]
    with pytest.raises(DataError, match="fraction"):
        finetune(tiny_encoder(), torch.nn.Linear(32, 2), data, None, FinetuneConfig(fraction=0.5, num_workers=0),
                 progress=False)


def test_the_schedule_ends_where_training_does_when_the_last_batch_is_dropped(tmp_path, capsys):
    """10 images in batches of 4 with the last partial batch dropped: 2 steps an epoch, not ceil(10 / 4) = 3, so
    the cosine schedule (and the progress count) covers exactly the 4 steps run."""
    data = open_labelled(two_colour_folder(tmp_path, n=5), transform=eval_transform(16))
    cfg = FinetuneConfig(epochs=2, lr=1e-3, min_lr=1e-4, batch_size=4, num_workers=0, device="cpu")
    out = finetune(tiny_encoder(), torch.nn.Linear(32, 2), data, None, cfg, progress=True)
    assert [h["steps"] for h in out["history"]] == [2, 4]
    assert "finetune: done, 4/4 step in " in capsys.readouterr().err
