"""An export carries the run's preprocessing in timm's pretrained_cfg form (issue #8).

A tiny run of configs/tiny_cpu.yaml (48 px, CLIP mean/std) is exported both ways and loaded with the calls
`catlip export --help` documents; timm's own data-config resolution must give the training preprocessing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

from catlip.cli import main
from catlip.config import load_config
from catlip.data.transforms import MEAN, STD

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "tiny_cpu.yaml"
SMALL = ["model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}",
         "data.synthetic_size=16", "data.batch_size=8", "data.num_workers=0", "data.vocab_min_count=1",
         "optim.steps=1", "optim.warmup_steps=1", "train.progress=false", "train.tensorboard=false"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "run"
    assert main(["pretrain", "--config", str(RECIPE), *SMALL, f"train.output_dir={out}"]) == 0
    return out


def _assert_training_preprocessing(model, size: int) -> None:
    for cfg in (timm.data.resolve_data_config({}, model=model), timm.data.resolve_model_data_config(model)):
        assert tuple(cfg["input_size"]) == (3, size, size)
        assert tuple(cfg["mean"]) == pytest.approx(MEAN) and tuple(cfg["std"]) == pytest.approx(STD)
        assert cfg["interpolation"] == "bilinear"
        assert cfg["crop_pct"] == 1.0 and cfg["crop_mode"] == "center"
    assert model.num_classes == 0


def _same_features(model, run: Path, size: int) -> None:
    from catlip.train.checkpoint import load_pretrained

    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    ref = load_pretrained(run).method.backbone.eval()
    with torch.no_grad():
        assert torch.equal(model.eval().forward_features(x), ref.forward_features(x))


def test_file_export_with_sidecar_loads_with_the_documented_timm_call(run, tmp_path, capsys):
    size = load_config(str(RECIPE)).model.image_size
    assert size == 48
    out = tmp_path / "backbone.safetensors"
    assert main(["export", str(run), "-o", str(out)]) == 0
    assert "pretrained_cfg_overlay" in capsys.readouterr().out
    sidecar = tmp_path / "backbone.json"
    # the call of `catlip export --help`, with timm alone
    cfg = json.load(open(sidecar))
    model = timm.create_model(cfg["architecture"], pretrained=True,
                              pretrained_cfg_overlay=dict(cfg["pretrained_cfg"], file=str(out)), **cfg["model_args"])
    _assert_training_preprocessing(model, size)
    _same_features(model, run, size)
    # catlip's own loader reads the same config from the safetensors metadata alone
    sidecar.unlink()
    from catlip.models.export import load_backbone, read_config

    assert read_config(out) == cfg
    _assert_training_preprocessing(load_backbone(out), size)


def test_folder_export_is_timms_local_dir_layout(run, tmp_path):
    size = load_config(str(RECIPE)).model.image_size
    out = tmp_path / "backbone"
    assert main(["export", str(run), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    from catlip.models.export import load_backbone

    _assert_training_preprocessing(load_backbone(out), size)
    try:
        from timm.models._hub import load_model_config_from_path  # noqa: F401 - timm with local-dir: support
    except ImportError:
        pytest.skip("this timm has no local-dir: model source")
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    _assert_training_preprocessing(model, size)
    _same_features(model, run, size)


def test_run_preprocessing_travels_into_the_export(tmp_path):
    """data.mean / data.std / data.eval_resize of a run become the export's pretrained_cfg: timm's own eval
    transform from it is catlip's (resize 56, crop 48, no mean/std) and gives the same tensor."""
    import numpy as np
    from PIL import Image

    from catlip.data.transforms import Preprocess

    out = tmp_path / "run"
    assert main(["pretrain", "--config", str(RECIPE), *SMALL, f"train.output_dir={out}", "data.mean=[0,0,0]",
                 "data.std=[1,1,1]", "data.eval_resize=56"]) == 0
    assert main(["export", str(out), "-o", str(tmp_path / "b.safetensors")]) == 0
    cfg = json.load(open(tmp_path / "b.json"))
    model = timm.create_model(cfg["architecture"], pretrained=True, **cfg["model_args"],
                              pretrained_cfg_overlay=dict(cfg["pretrained_cfg"], file=str(tmp_path / "b.safetensors")))
    data_cfg = timm.data.resolve_data_config({}, model=model)
    assert tuple(data_cfg["mean"]) == (0.0, 0.0, 0.0) and tuple(data_cfg["std"]) == (1.0, 1.0, 1.0)
    timm_tf = timm.data.create_transform(**data_cfg, is_training=False)
    assert [getattr(t, "size", None) for t in timm_tf.transforms[:2]] in ([56, (48, 48)], [56, [48, 48]])
    image = Image.fromarray((np.random.default_rng(1).random((70, 90, 3)) * 255).astype(np.uint8))
    ours = Preprocess.of(load_config(str(RECIPE), ["data.mean=[0,0,0]", "data.std=[1,1,1]",
                                                   "data.eval_resize=56"])).eval_transform()
    assert torch.allclose(timm_tf(image), ours(image), atol=1e-6)
