"""`catlip pretrain` end to end on tiny models: determinism, artefacts, export, bad data, DDP smoke."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from catlip.cli import main

TINY = [
    "model.backbone=vit_tiny_patch16_224",
    "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}",
    "model.image_size=32", "data.batch_size=8", "data.num_workers=0", "data.synthetic_size=32",
    "data.vocab_min_count=2", "optim.steps=3", "optim.warmup_steps=1",
    "train.ckpt_every=2", "train.log_every=1", "train.progress=false",
]


def _pretrain(out, *extra) -> int:
    return main(["pretrain", *TINY, f"train.output_dir={out}", *extra])


def _weights(run: Path, step: int) -> dict:
    return load_file(str(run / "checkpoints" / f"step_{step:07d}" / "model.safetensors"))


@pytest.mark.slow
def test_cli_pretrain_writes_a_complete_run_and_exports(tmp_path, capsys):
    run = tmp_path / "run"
    assert _pretrain(run) == 0
    assert capsys.readouterr().out.strip().endswith(str(run))
    for name in ("config.yaml", "vocab.json", "metrics.jsonl", "loss.png", "checkpoints/latest"):
        assert (run / name).is_file(), name
    assert list((run / "tb").iterdir())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and all(r["img_per_s"] > 0 for r in records)
    ck = run / "checkpoints" / "step_0000003"
    meta = json.loads((ck / "meta.json").read_text())
    vocab = json.loads((run / "vocab.json").read_text())
    assert meta["samples_seen"] == 24 and meta["epoch"] == 0 and meta["code"]["catlip"]
    assert meta["vocab_size"] == len(vocab["keys"]) > 5 and (ck / "vocab.json").is_file()
    state = torch.load(ck / "train_state.pt", weights_only=True)
    assert state["step"] == 3 and state["optimizer"]["state"]

    from catlip.models.export import load_backbone
    from catlip.train.checkpoint import load_pretrained

    out = tmp_path / "backbone.safetensors"
    assert main(["export", str(run), "--output", str(out)]) == 0
    backbone = load_backbone(out).eval()
    trained = load_pretrained(run)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(backbone.forward_features(x), trained.method.backbone.forward_features(x))


def test_two_seeded_runs_are_bitwise_equal_and_seeds_matter(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert _pretrain(tmp_path / name, "optim.steps=2", f"train.seed={seed}") == 0
    a, b, c = (_weights(tmp_path / n, 2) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_one_batch_is_over_fitted(tmp_path):
    # 8 scenes with one caption each (fixed targets) in a JSONL manifest = one batch; CatLIP must fit it (80 steps:
    # with 12 classes shared across scenes the loss falls below a fifth of its start near step 70)
    from catlip.data.synthetic import synthetic_sample

    rows = []
    for i in range(8):
        s = synthetic_sample(i, seed=5, image_size=32)
        s.image.save(tmp_path / f"{i}.png")
        rows.append(json.dumps({"image": f"{i}.png", "caption": s.captions[0]}))
    (tmp_path / "train.jsonl").write_text("\n".join(rows))
    run = tmp_path / "run"
    assert _pretrain(run, f"data.train=[{tmp_path}/train.jsonl]", "data.vocab_min_count=1", "optim.steps=80",
                     "optim.lr=0.01", "optim.min_lr_ratio=1.0", "data.augment=none", "train.ckpt_every=100") == 0
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.2 * losses[0]


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (30 * i % 255, 90, 20)).save(buf, "JPEG")
    return buf.getvalue()


def test_bad_samples_in_a_shard_are_skipped_counted_and_logged(tmp_path):
    shard = tmp_path / "data-000.tar"
    members = []
    for i in range(12):
        members += [(f"s{i:02d}.jpg", _jpeg(i)), (f"s{i:02d}.txt", f"a dog and a ball number {i}".encode())]
    members += [("bad1.jpg", b""), ("bad1.txt", b"a dog"), ("bad2.jpg", _jpeg(1)[:50]), ("bad2.txt", b"a cat"),
                ("bad3.jpg", b"GIF89a nonsense"), ("bad3.txt", b"a car")]
    with tarfile.open(shard, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    run = tmp_path / "run"
    assert _pretrain(run, f"data.train=['{shard}']", "data.batch_size=5", "optim.steps=6",
                     "method.name=clip", "model.embed_dim=32", "model.text_width=32", "model.text_layers=1",
                     "model.text_heads=2", "data.context_length=16") == 0
    meta = json.loads((run / "checkpoints" / "step_0000006" / "meta.json").read_text())
    assert meta["skipped_samples"] == {"corrupt_image": 6}  # 3 bad samples x 2 epochs (15 samples, 3 batches each)
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["skipped"] == 6


def test_unknown_config_key_is_a_one_line_error(tmp_path, capsys):
    assert _pretrain(tmp_path, "optim.learning_rate=3") == 2
    assert "unknown key(s) in optim: learning_rate" in capsys.readouterr().err


def test_superclass_defaults_to_the_full_bpe_table_and_saves_idf_counts(tmp_path):
    assert _pretrain(tmp_path, "method.name=superclass", "optim.steps=2") == 0
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert len(vocab["keys"]) == 49408
    weights = _weights(tmp_path, 2)
    assert weights["head.fc.weight"].shape[0] == 49408
    assert any("idf" in k for k in weights)


@pytest.mark.slow
def test_two_process_gloo_run_matches_the_global_batch(tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "catlip.cli", "pretrain", *TINY, "optim.steps=2", "data.batch_size=4",
           f"train.output_dir={run}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((run / "checkpoints" / "step_0000002" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["samples_seen"] == 2 * 2 * 4
    assert [json.loads(line)["samples"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [8, 16]


def test_multiscale_ema_bf16_and_accumulation_in_one_run(tmp_path):
    run = tmp_path / "run"
    assert _pretrain(run, "data.multiscale=true", "data.multiscale_sizes=[24,32,40]", "optim.grad_accum=2",
                     "train.ema_decay=0.9", "train.precision=bf16", "optim.steps=3") == 0
    ck = run / "checkpoints" / "step_0000003"
    meta = json.loads((ck / "meta.json").read_text())
    # 3 steps x 2 micro-batches; every micro-batch holds ~8 x 32^2 pixels whatever its resolution
    assert 6 * 8 * 0.5 <= meta["samples_seen"] <= 6 * 8 * 2
    assert (ck / "ema.safetensors").is_file()
    from catlip.train.checkpoint import load_pretrained

    ema, raw = load_pretrained(run, ema=True).method, load_pretrained(run).method
    k = "head.fc.weight"
    assert not torch.equal(ema.state_dict()[k], raw.state_dict()[k])
    out = tmp_path / "ema.safetensors"
    assert main(["export", str(run), "--ema", "--output", str(out)]) == 0 and out.stat().st_size > 1000
