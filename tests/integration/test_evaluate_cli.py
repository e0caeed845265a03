"""`catlip probe | finetune | zeroshot` in-process on tiny data written into tmp_path."""

from __future__ import annotations

import json

import pytest

from catlip.cli import main

TINY_MODEL = """
model:
  backbone: vit_tiny_patch16_224
  backbone_kwargs: {patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}
  image_size: 32
"""


def synthetic_folders(root, per_class: int, seed: int, kinds: int = 3):
    """Class folders of the synthetic scenes (main object = class), only the first ``kinds`` object kinds."""
    from catlip.data.synthetic import OBJECTS, synthetic_sample

    counts, i = [0] * kinds, 0
    while min(counts) < per_class:
        s = synthetic_sample(i, seed=seed, image_size=32)
        i += 1
        if s.label < kinds and counts[s.label] < per_class:
            folder = root / OBJECTS[s.label]
            folder.mkdir(parents=True, exist_ok=True)
            s.image.save(folder / f"{i}.png")
            counts[s.label] += 1
    return root


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    (root / "tiny.yaml").write_text(TINY_MODEL)
    synthetic_folders(root / "train", 12, seed=1)
    synthetic_folders(root / "test", 6, seed=2)
    (root / "test" / "ball" / "corrupt.png").write_bytes(b"\x89PNG broken")
    return root


def test_probe_random_floor(tiny_data, tmp_path, capsys):
    out = tmp_path / "probe.json"
    rc = main(["probe", f"random:{tiny_data / 'tiny.yaml'}", "--train", str(tiny_data / "train"),
               "--test", str(tiny_data / "test"), "--fractions", "0.5,1", "--shots", "2", "--epochs", "10",
               "--workers", "0", "--no-progress", "--cache-dir", str(tmp_path / "cache"), "-o", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "logistic" in printed and "ridge" in printed and "knn" in printed
    result = json.loads(out.read_text())
    assert result["num_classes"] == 3 and result["train_images"] == 36 and result["test_images"] == 18
    assert result["skipped"] == {"train": 0, "test": 1}  # the corrupt file is counted, not fatal
    rows = {(r["protocol"], r["subset"]): r for r in result["rows"]}
    assert rows[("logistic", "50% of train")]["n_train"] == 18 and rows[("ridge", "2-shot")]["n_train"] == 6
    assert all(0.0 <= r["top1"] <= 1.0 for r in result["rows"])
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2  # features cached once per split


def test_multilabel_probe_from_a_manifest(tiny_data, tmp_path, capsys):
    """Multi-label targets from a CSV manifest: BCE probe, mAP in the table and the JSON."""
    lines = ["image,labels"]
    for folder in sorted((tiny_data / "train").iterdir()):
        for i, img in enumerate(sorted(folder.glob("*.png"))):
            lines.append(f"{img},{folder.name}" + ("|odd" if i % 2 else ""))
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "ml.json"
    rc = main(["probe", f"random:{tiny_data / 'tiny.yaml'}", "--train", str(tmp_path / "m.csv"),
               "--test", str(tmp_path / "m.csv"), "--multilabel", "--epochs", "5", "--workers", "0",
               "--no-progress", "-o", str(out)])
    assert rc == 0 and "mAP" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["num_classes"] == 4  # ball, box, car, odd
    assert [r["protocol"] for r in result["rows"]] == ["logistic"] and 0 < result["rows"][0]["mAP"] <= 1


def test_transfer_and_zeroshot_need_a_classification_checkpoint(tiny_data, capsys):
    rc = main(["probe", f"random:{tiny_data / 'tiny.yaml'}", "--train", str(tiny_data / "train"),
               "--test", str(tiny_data / "test"), "--init", "transfer", "--workers", "0", "--no-progress"])
    assert rc == 2
    assert "--init transfer needs a CatLIP, SuperClass or SuperCLIP checkpoint" in capsys.readouterr().err
    rc = main(["zeroshot", f"random:{tiny_data / 'tiny.yaml'}", "--test", str(tiny_data / "test"), "--workers", "0"])
    assert rc == 2 and "head zero-shot needs a CatLIP, SuperClass or SuperCLIP checkpoint" in capsys.readouterr().err


def test_bad_arguments_are_one_line_errors(tiny_data, capsys):
    assert main(["probe", "random:x.yaml", "--train", "a", "--test", "b", "--fractions", "2"]) == 2
    assert "--fractions" in capsys.readouterr().err
    assert main(["probe", f"random:{tiny_data / 'tiny.yaml'}", "--train", str(tiny_data / "nowhere"),
                 "--test", str(tiny_data / "test"), "--workers", "0"]) == 2
    assert "not an image folder" in capsys.readouterr().err


@pytest.mark.slow
def test_pretrained_catlip_transfer_probe_zeroshot_and_finetune(tiny_data, tmp_path, capsys):
    """A tiny CatLIP really pre-trained on the synthetic scenes, then every evaluation on it through the CLI."""
    from catlip.config import load_config
    from catlip.train.loop import pretrain

    cfg = load_config(tiny_data / "tiny.yaml", [
        "method.name=catlip", "data.synthetic_size=64", "data.vocab_min_count=1", "data.batch_size=16",
        "data.num_workers=0", "optim.steps=12", "optim.warmup_steps=2", "optim.lr=0.003",
        f"train.output_dir={tmp_path / 'run'}", "train.progress=false", "train.tensorboard=false",
        "train.ckpt_every=12"])
    run = pretrain(cfg)
    common = ["--workers", "0", "--no-progress"]
    out = tmp_path / "probe.json"
    assert main(["probe", str(run), "--train", str(tiny_data / "train"), "--test", str(tiny_data / "test"),
                 "--init", "random,transfer", "--fractions", "1", "--epochs", "5", "--no-knn", *common,
                 "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["method"] == "catlip"
    assert result["coverage"]["counts"]["exact"] == 3  # ball, box, car are synsets of the synthetic captions
    assert {r["init"] for r in result["rows"]} == {"random", "transfer"}
    assert "Transfer Init coverage" in capsys.readouterr().out

    zs = tmp_path / "zs.json"
    assert main(["zeroshot", str(run), "--test", str(tiny_data / "test"), *common, "-o", str(zs)]) == 0
    zres = json.loads(zs.read_text())
    assert zres["mode"] == "head" and zres["test_images"] == 18 and 0 <= zres["top1"] <= 1
    assert main(["zeroshot", str(run), "--mode", "text", "--test", str(tiny_data / "test"), *common]) == 2
    assert "has no text tower" in capsys.readouterr().err

    ft = tmp_path / "ft.json"
    assert main(["finetune", str(run), "--train", str(tiny_data / "train"), "--test", str(tiny_data / "test"),
                 "--config", "configs/finetune_tiny_cpu.yaml", "--set", "epochs=2", "--set", "init=transfer", *common,
                 "--save", str(tmp_path / "ft.safetensors"), "-o", str(ft)]) == 0
    fres = json.loads(ft.read_text())
    assert [h["epoch"] for h in fres["history"]] == [1, 2] and (tmp_path / "ft.safetensors").is_file()
