"""Trainer pieces: no-decay groups, the schedule, one train step, atomic and safe checkpoints, the recipes."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from catlip.config import load_config
from catlip.errors import CheckpointError
from catlip.train import checkpoint as ckpt
from catlip.train.optim import build_optimizer, lr_at, param_groups
from catlip.train.step import train_step

ROOT = Path(__file__).resolve().parents[2]


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.logit_scale = nn.Parameter(torch.ones([]))
        self.pos_embed = nn.Parameter(torch.zeros(1, 2, 3))

    def no_weight_decay(self):
        return {"pos_embed"}

    def forward(self, batch):
        out = self.norm(self.fc(batch["x"])) * self.logit_scale
        return {"loss": ((out - batch["y"]) ** 2).mean(), "logit_scale": self.logit_scale.detach()}


def test_no_weight_decay_on_biases_norms_scales_and_declared_params():
    model = Toy()
    groups = param_groups(model, 0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    assert [names[id(p)] for p in groups[0]["params"]] == ["fc.weight"]
    assert sorted(names[id(p)] for p in groups[1]["params"]) == ["fc.bias", "logit_scale", "norm.bias",
                                                                 "norm.weight", "pos_embed"]
    assert groups[0]["weight_decay"] == 0.2 and groups[1]["weight_decay"] == 0.0


def test_schedule_warms_up_linearly_then_follows_a_cosine():
    cfg = load_config(None, ["optim.lr=1.0", "optim.warmup_steps=4", "optim.steps=104", "optim.min_lr_ratio=0.1"])
    assert [lr_at(s, cfg.optim) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, cfg.optim) == 1.0
    assert math.isclose(lr_at(54, cfg.optim), 0.1 + 0.9 * 0.5)
    assert math.isclose(lr_at(104, cfg.optim), 0.1) and math.isclose(lr_at(500, cfg.optim), 0.1)


def test_accumulated_step_equals_one_big_batch_and_clips():
    torch.manual_seed(0)
    x, y = torch.randn(8, 4), torch.randn(8, 3)
    a, b = Toy(), Toy()
    b.load_state_dict(a.state_dict())
    cfg = load_config(None, ["optim.lr=0.1"])
    oa, ob = build_optimizer(a, cfg.optim), build_optimizer(b, cfg.optim)
    from contextlib import nullcontext

    ra = train_step(a, [{"x": x, "y": y}], oa, autocast=nullcontext, clip_grad=0.0)
    rb = train_step(b, [{"x": x[:4], "y": y[:4]}, {"x": x[4:], "y": y[4:]}], ob, autocast=nullcontext)
    assert math.isclose(ra["loss"], rb["loss"], rel_tol=1e-6) and "logit_scale" in ra
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)
    c = Toy()
    oc = build_optimizer(c, cfg.optim)
    rc = train_step(c, [{"x": x * 100, "y": y}], oc, autocast=nullcontext, clip_grad=0.5)
    assert rc["grad_norm"] > 0.5  # the pre-clip norm is reported; the update used the clipped one


def _save(root, step, model, **kw):
    return ckpt.save_checkpoint(root, step, model_state=model.state_dict(),
                                train_state={"step": step, "rng": [torch.get_rng_state()]},
                                meta={"step": step, "config": {}}, **kw)


def test_checkpoints_are_atomic_pruned_and_pointed_to(tmp_path, monkeypatch):
    model = Toy()
    for step in (1, 2, 3):
        _save(tmp_path, step, model, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_0000002", "step_0000003"]
    assert (tmp_path / "latest").read_text().strip() == "step_0000003"
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="previous checkpoint is kept"):
        _save(tmp_path, 4, model, keep=2)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing changed, no temporary folder left behind
    assert ckpt.find_checkpoint(tmp_path).meta["step"] == 3


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_and_truncated_files_are_clear_errors(tmp_path):
    good = _save(tmp_path, 1, Toy())
    with open(good / "train_state.pt", "wb") as f:
        pickle.dump({"step": Evil()}, f)
    with pytest.raises(CheckpointError, match="pickled code"):
        ckpt.load_checkpoint(good)
    good = _save(tmp_path, 2, Toy())
    data = (good / "model.safetensors").read_bytes()
    (good / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        ckpt.load_checkpoint(good)
    with pytest.warns(UserWarning, match="skipped broken checkpoint"):
        assert ckpt.find_checkpoint(tmp_path, with_train_state=False).path.name == "step_0000001"
    (tmp_path / "step_0000001" / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        ckpt.find_checkpoint(tmp_path)


# finetune_ / segment_ / detect_*.yaml are the evaluation stage's own recipe formats (their tests load them)
@pytest.mark.parametrize("recipe", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")
                                           if not p.name.startswith(("finetune_", "segment_", "detect_"))))
def test_every_recipe_loads(recipe):
    # LiT recipes describe the text stage; `catlip lit RUN` supplies the locked tower (tests/unit/test_lit.py)
    tower = ["method.image_tower=runs/x/checkpoints/step_0000001"] if recipe.startswith("lit_") else []
    cfg = load_config(ROOT / "configs" / recipe, tower)
    assert cfg.optim.steps > 0 and cfg.data.batch_size > 0


def test_pretraining_recipes_follow_the_papers():
    c = load_config(ROOT / "configs" / "catlip_vit_b16_datacomp.yaml")
    assert (c.optim.lr, c.optim.betas, c.optim.weight_decay, c.optim.steps) == (1e-3, [0.9, 0.999], 0.2, 200000)
    assert c.data.batch_size * 64 == 65536 and c.data.multiscale and c.method.name == "catlip"
    c = load_config(ROOT / "configs" / "clip_vit_b16_cc3m.yaml")
    assert (c.optim.lr, c.optim.betas, c.method.name) == (5e-4, [0.9, 0.98], "clip")
    s = load_config(ROOT / "configs" / "superclass_vit_b16.yaml")
    assert (s.optim.lr, s.optim.betas, s.optim.eps, s.optim.weight_decay, s.optim.warmup_steps) == \
        (5e-4, [0.9, 0.98], 1e-6, 0.2, 500)


def test_tiny_recipe_is_the_demo_config():
    from catlip.demo import DEMO_OVERRIDES

    recipe = load_config(ROOT / "configs" / "tiny_cpu.yaml").to_dict()
    demo = load_config(None, DEMO_OVERRIDES).to_dict()
    recipe["train"]["output_dir"] = demo["train"]["output_dir"]
    assert recipe == demo


def test_resume_check_treats_fields_added_later_as_their_default():
    # a checkpoint written before method.labels existed must stay resumable; a real change is still refused
    from catlip.config import load_config
    from catlip.errors import CheckpointError
    from catlip.train.checkpoint import check_compatible

    cfg = load_config(ROOT / "configs" / "tiny_cpu.yaml").to_dict()
    old = {s: dict(v) for s, v in cfg.items()}
    del old["method"]["labels"], old["method"]["label_options"]
    check_compatible({"vocab_hash": "h", "config": old}, cfg, "h")
    old["model"]["backbone"] = "vit_small_patch16_224"
    with pytest.raises(CheckpointError, match="model.backbone"):
        check_compatible({"vocab_hash": "h", "config": old}, cfg, "h")


def test_a_step_returns_device_tensors_so_the_loop_syncs_only_at_log_steps():
    from contextlib import nullcontext

    torch.manual_seed(0)
    model = Toy()
    out = train_step(model, [{"x": torch.randn(8, 4), "y": torch.randn(8, 3)}], build_optimizer(model, load_config(
        None, []).optim), autocast=nullcontext, clip_grad=1.0)
    assert all(torch.is_tensor(v) and v.dim() == 0 and not v.requires_grad for v in out.values())
    assert float(out["loss"]) > 0 and float(out["grad_norm"]) > 0


def test_a_model_that_fails_to_compile_trains_without_compilation(tmp_path, monkeypatch, capsys):
    from catlip.train.loop import pretrain

    def broken_compile(model, *args, **kwargs):
        def compiled(batch):
            raise RuntimeError("backend inductor failed\nsecond line")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    common = ["model.backbone=vit_tiny_patch16_224", "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 1, "
              "num_heads: 2}", "model.image_size=32", "data.synthetic_size=16", "data.batch_size=8",
              "data.num_workers=0", "data.vocab_min_count=1", "optim.steps=3", "train.progress=false",
              "train.tensorboard=false"]
    pretrain(load_config(None, [*common, "train.compile=true", f"train.output_dir={tmp_path / 'c'}"]))
    assert "torch.compile failed on the first step (backend inductor failed; second line)" in capsys.readouterr().err
    pretrain(load_config(None, [*common, f"train.output_dir={tmp_path / 'e'}"]))
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "c" / "checkpoints" / "step_0000003" / "model.safetensors"))
    b = load_file(str(tmp_path / "e" / "checkpoints" / "step_0000003" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the fallback step is the eager step, nothing lost


def test_adamw_is_fused_only_for_plain_cuda_parameters():
    opt = build_optimizer(Toy(), load_config(None, []).optim)
    assert not opt.defaults.get("fused")
