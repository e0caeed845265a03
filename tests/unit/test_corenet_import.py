"""`catlip import corenet`: the CatLIP paper's released checkpoints as catlip runs, checked against corenet's own
forward pass (../shared/data/corenet_catlip, made by corenet's code), the paper's ViT as catlip config values,
and every bad input as a one-line error that writes nothing."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from catlip.cli import main
from catlip.errors import CheckpointError
from catlip.models import corenet

pytestmark = pytest.mark.shared_data
TOL = 1e-4  # corenet's own flash vs. non-flash paths differ by 2.3e-5 (fixture README)
SIZES = ("224", "256", "160x320")


@pytest.fixture(scope="module")
def fixture_dir(shared_data) -> Path:
    d = shared_data / "corenet_catlip"
    if not (d / "state_dict.pt").is_file():
        pytest.skip(f"{d} has no corenet fixture")
    return d


@pytest.fixture(scope="module")
def imported(fixture_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("corenet") / "run"
    assert main(["import", "corenet", str(fixture_dir / "state_dict.pt"), "--vocab",
                 str(fixture_dir / "vocab_sample.pkl"), "-o", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def golden(fixture_dir):
    return np.load(fixture_dir / "inputs.npz"), np.load(fixture_dir / "outputs.npz")


def _forward(backbone, head, x):
    with torch.no_grad():
        cls = backbone.forward_head(backbone.forward_features(x), pre_logits=True)
        return cls, head(cls)


# ---------------------------------------------------------------- parity with corenet


@pytest.mark.parametrize("size", SIZES)
def test_imported_model_reproduces_corenet_logits_and_features(imported, golden, size):
    from catlip.evaluate.common.model import load_eval_model

    inputs, outputs = golden
    model = load_eval_model(str(imported))
    cls, logits = _forward(model.backbone, model.head, torch.from_numpy(inputs[f"images_{size}"]))
    assert torch.allclose(logits, torch.from_numpy(outputs[f"logits_{size}"]), atol=TOL, rtol=0)
    assert torch.allclose(cls, torch.from_numpy(outputs[f"cls_features_{size}"]), atol=TOL, rtol=0)
    assert logits.abs().max() > 1.0  # perturbed weights: real signal, not a near-zero output matched by chance


def test_patch_tokens_match_corenet(imported, golden):
    from catlip.evaluate.common.model import load_eval_model

    inputs, outputs = golden
    model = load_eval_model(str(imported))
    with torch.no_grad():
        tokens = model.backbone.forward_features(torch.from_numpy(inputs["images_224"]))[:, 1:]
    assert torch.allclose(tokens, torch.from_numpy(outputs["patch_features_224"]), atol=TOL, rtol=0)


@pytest.mark.parametrize("size,tokens", [("256", 256), ("160x320", 200)])
def test_stretch_is_corenets_position_table(imported, golden, size, tokens):
    from catlip.evaluate.common.model import load_eval_model
    from catlip.models.pos_embed import stretch_table

    _, outputs = golden
    table = load_eval_model(str(imported)).backbone.pos_embed.detach()
    used = torch.from_numpy(outputs[f"pos_embed_used_{size}"]).reshape(1, tokens, -1)
    assert torch.allclose(stretch_table(table, tokens), used, atol=1e-6, rtol=0)


def test_grid_resize_is_a_different_model_at_256(imported, golden):
    """model.pos_resize=grid (timm's 2-D resample) is a real choice: at 256 px it no longer matches corenet."""
    from catlip.methods import build_method
    from catlip.train.checkpoint import load_pretrained

    inputs, outputs = golden
    pre = load_pretrained(str(imported))
    cfg = pre.config
    cfg.model.pos_resize = "grid"
    cfg.data.multiscale = True  # a grid ViT takes other sizes only when built for dynamic sizes
    method = build_method(cfg, len(pre.vocab)).eval()
    method.load_state_dict(pre.method.state_dict())
    _, at224 = _forward(method.backbone, method.head, torch.from_numpy(inputs["images_224"]))
    _, at256 = _forward(method.backbone, method.head, torch.from_numpy(inputs["images_256"]))
    assert torch.allclose(at224, torch.from_numpy(outputs["logits_224"]), atol=TOL, rtol=0)  # same weights
    assert (at256 - torch.from_numpy(outputs["logits_256"])).abs().max() > 1e-2


# ---------------------------------------------------------------- the paper's ViT as config values


def _fixture_shapes(fixture_dir, name="keys.txt") -> dict[str, list[int]]:
    out = {}
    for line in (fixture_dir / name).read_text().splitlines():
        key, shape, _ = line.split("\t")
        out[key] = json.loads(shape)
    return out


@pytest.mark.parametrize("recipe", ["catlip_vit_b16_datacomp.yaml", "catlip_vit_b16_cc3m.yaml"])
def test_paper_recipe_maps_one_to_one_onto_a_released_checkpoint(fixture_dir, recipe):
    """The recipe's model at the fixture's width and depth has exactly the released tensors, both ways."""
    from catlip.config import load_config
    from catlip.methods import build_method

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "configs" / recipe, ["model.backbone_kwargs.embed_dim=192",
                                                  "model.backbone_kwargs.num_heads=3"])
    method = build_method(cfg, 50)
    ours = {k: list(v.shape) for k, v in method.state_dict().items()}
    released = {k: s for k, s in _fixture_shapes(fixture_dir).items() if not k.startswith(corenet.TRAINING_ONLY)}
    as_corenet = {k: list(v.shape) for k, v in corenet.to_corenet(method.state_dict()).items()}
    assert as_corenet == released
    back, dropped = corenet.to_catlip({k: torch.zeros(s) for k, s in _fixture_shapes(fixture_dir).items()})
    assert {k: list(v.shape) for k, v in back.items()} == ours
    assert len(dropped) == 6
    backbone = method.backbone
    assert backbone.no_embed_class and backbone.catlip_pos_resize == "stretch"
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and {m.eps for m in norms} == {1e-6}
    assert cfg.data.mean == [0.0, 0.0, 0.0] and cfg.data.std == [1.0, 1.0, 1.0]


def test_non_flash_variant_keys_import_too(fixture_dir):
    shapes = _fixture_shapes(fixture_dir, "keys_no_flash_variant.txt")
    converted, _ = corenet.to_catlip({k: torch.zeros(s) for k, s in shapes.items()})
    assert "backbone.blocks.11.attn.proj.weight" in converted


def test_tiny_cpu_recipe_keeps_its_stem():
    from catlip.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "tiny_cpu.yaml")
    assert (cfg.model.stem, cfg.model.pos_resize) != ("corenet", "stretch")


# ---------------------------------------------------------------- commands on the imported run


def test_import_writes_an_ordinary_run(imported, capsys):
    from catlip.labels.vocab import Vocabulary

    vocab = Vocabulary.load(imported / "vocab.json")
    assert vocab.keys[:3] == ["n05928118", "n13333833", "n04960277"] and len(vocab) == 50  # zero-padded
    assert vocab.names[11] == "dog" and vocab.labels == "synsets"
    meta = json.loads((imported / "checkpoints" / "step_0000000" / "meta.json").read_text())
    assert meta["imported"]["dropped"][0].startswith("neural_augmentor.")
    cfg = meta["config"]
    assert cfg["data"]["eval_resize"] == 232 and cfg["model"]["image_size"] == 224 and cfg["model"]["stem"] == "corenet"


def test_tag_uses_the_imported_preprocessing(imported, tmp_path, capsys):
    """232 px image -> (resize 232: unchanged) -> centre 224 crop -> pixels / 255, no mean/std: tag's
    probabilities equal the model's on that crop computed by hand."""
    from PIL import Image

    from catlip.evaluate.common.model import load_eval_model

    rng = np.random.default_rng(0)
    pixels = (rng.random((232, 232, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    out = tmp_path / "tags.jsonl"
    assert main(["tag", str(imported), str(tmp_path / "photo.png"), "--top", "50", "--workers", "0",
                 "--no-progress", "--jsonl", str(out)]) == 0
    tags = {t["key"]: t["probability"] for t in json.loads(out.read_text().splitlines()[0])["tags"]}
    model = load_eval_model(str(imported))
    crop = torch.from_numpy(pixels[4:228, 4:228]).permute(2, 0, 1).float().div(255)[None]
    _, logits = _forward(model.backbone, model.head, crop)
    expected = dict(zip(model.vocab.keys, torch.sigmoid(logits[0]).tolist()))
    assert len(tags) == 50
    assert max(abs(tags[k] - expected[k]) for k in tags) < 1e-4


def _cifar_shard(shared_data, path: Path, start: int, count: int) -> Path:
    """``count`` CIFAR-10 test images (from ``start``) as a small labelled shard, resized to 40 px for speed."""
    import io
    import tarfile

    from PIL import Image

    src = shared_data / "cifar10" / "cifar10-test-000.tar"
    with tarfile.open(src) as tf, tarfile.open(path, "w") as out:
        members = [m for m in tf.getmembers() if m.isfile()]
        keys = sorted({m.name.rsplit(".", 1)[0] for m in members})[start:start + count]
        by_name = {m.name: m for m in members}
        for key in keys:
            for ext in ("jpg", "cls"):
                data = tf.extractfile(by_name[f"{key}.{ext}"]).read()
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
    return path


def test_zeroshot_and_transfer_probe_run_on_the_import(imported, shared_data, tmp_path):
    classes = shared_data / "cifar10" / "classes.txt"
    test = _cifar_shard(shared_data, tmp_path / "test.tar", 0, 24)
    train = _cifar_shard(shared_data, tmp_path / "train.tar", 100, 40)
    common = ["--classes", str(classes), "--workers", "0", "--no-progress", "--batch-size", "8"]
    assert main(["zeroshot", str(imported), "--test", str(test), "-o", str(tmp_path / "zs.json"), *common]) == 0
    zs = json.loads((tmp_path / "zs.json").read_text())
    kinds = {c["name"]: c["kind"] for c in zs["coverage"]["classes"]}
    assert kinds["automobile"] == "exact" and kinds["dog"] == "exact" and kinds["cat"] == "exact"
    assert zs["test_images"] == 24 and 0.0 <= zs["top1"] <= 100.0
    assert main(["probe", str(imported), "--train", str(train), "--test", str(test), "--init", "transfer",
                 "--shots", "2", "-o", str(tmp_path / "probe.json"), "--no-knn", *common]) == 0
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert probe["coverage"]["classes"][1]["kind"] == "exact"  # automobile -> car.n.01, the head's row 13


def test_classnames_wnid_comes_first(imported, shared_data, tmp_path):
    """A class list's wnid decides the synset: "church" n03028079 is the building (nearest head row: building),
    not the congregation of its first noun sense."""
    test = _cifar_shard(shared_data, tmp_path / "test.tar", 0, 12)
    names = tmp_path / "names.tsv"
    lines = [f"{i}\t{name}" for i, name in enumerate(
        (shared_data / "cifar10" / "classes.txt").read_text().split())]
    lines[0] = "0\tn03028079\tchurch"
    names.write_text("\n".join(lines) + "\n")
    assert main(["zeroshot", str(imported), "--test", str(test), "--classes",
                 str(shared_data / "cifar10" / "classes.txt"), "--classnames", str(names), "--alpha", "0.3",
                 "--workers", "0", "--no-progress", "-o", str(tmp_path / "zs.json")]) == 0
    church = json.loads((tmp_path / "zs.json").read_text())["coverage"]["classes"][0]
    assert church["wnid"] == "n03028079" and church["keys"] == ["n02913152"]


def test_export_of_the_imported_backbone_says_why_in_one_line(imported, tmp_path, capsys):
    assert main(["export", str(imported), "-o", str(tmp_path / "b.safetensors")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("checkpoint: ") and len(lines) == 2  # which weights, then the one-line error
    err = lines[1]
    assert err.startswith("catlip export: error:") and "timm cannot rebuild" in err and "model.stem=corenet" in err
    assert not (tmp_path / "b.safetensors").exists()


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.mkdir, (str(self.marker),))


def _refused(capsys, argv, out: Path, *words) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    assert not out.exists() and not any(p.name.startswith(f".{out.name}") for p in out.parent.iterdir())
    return err


def test_code_carrying_checkpoint_is_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "ran"
    torch.save({"cls_token": torch.zeros(1), "payload": _RunsCode(marker)}, tmp_path / "evil.pt")
    out = tmp_path / "run"
    _refused(capsys, ["import", "corenet", str(tmp_path / "evil.pt"), "-o", str(out)], out, "refused")
    assert not marker.exists()


def test_code_carrying_vocabulary_is_refused_and_never_run(fixture_dir, tmp_path, capsys):
    marker = tmp_path / "ran"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"n2084071": _RunsCode(marker)}))
    out = tmp_path / "run"
    _refused(capsys, ["import", "corenet", str(fixture_dir / "state_dict.pt"), "--vocab",
                      str(tmp_path / "evil.pkl"), "-o", str(out)], out, "refused to load", "mkdir")
    assert not marker.exists()


@pytest.fixture(scope="module")
def fixture_state(fixture_dir):
    return torch.load(fixture_dir / "state_dict.pt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("wrap", ["model", "state_dict", "ema", "module"])
def test_wrappers_and_module_prefix_are_unwrapped(fixture_state, fixture_dir, golden, tmp_path, wrap):
    from catlip.evaluate.common.model import load_eval_model

    state = {f"module.{k}": v for k, v in fixture_state.items()} if wrap == "module" else {wrap: fixture_state}
    torch.save(state, tmp_path / "wrapped.pt")
    assert main(["import", "corenet", str(tmp_path / "wrapped.pt"), "-o", str(tmp_path / "run")]) == 0
    inputs, outputs = golden
    model = load_eval_model(str(tmp_path / "run"))
    assert model.vocab is None  # no --vocab: the backbone and head, without class names
    _, logits = _forward(model.backbone, model.head, torch.from_numpy(inputs["images_224"]))
    assert torch.allclose(logits, torch.from_numpy(outputs["logits_224"]), atol=TOL, rtol=0)


def _bad_state(fixture_state, case: str) -> dict:
    state = dict(fixture_state)
    if case == "missing":
        del state["transformer.3.pre_norm_ffn.4.weight"]
    elif case == "unexpected":
        state["transformer.3.extra.weight"] = torch.zeros(3)
    elif case == "misshaped":
        state["transformer.3.pre_norm_ffn.4.weight"] = torch.zeros(192, 700)
    elif case == "nan":
        state["transformer.5.pre_norm_mha.0.weight"] = torch.full((192,), float("nan"))
    elif case == "not_vit":
        state = {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 2048)}
    return state


@pytest.mark.parametrize("case,words", [
    ("missing", ["missing", "transformer.3.pre_norm_ffn.4.weight"]),
    ("unexpected", ["transformer.3.extra.weight"]),
    ("misshaped", ["mis-shaped", "transformer.3.pre_norm_ffn.4.weight", "[192, 700]"]),
    ("nan", ["NaN", "transformer.5.pre_norm_mha.0.weight"]),
    ("not_vit", ["not a corenet ViT checkpoint"]),
])
def test_bad_checkpoints_are_one_line_errors(fixture_state, tmp_path, capsys, case, words):
    torch.save(_bad_state(fixture_state, case), tmp_path / "bad.pt")
    out = tmp_path / "run"
    _refused(capsys, ["import", "corenet", str(tmp_path / "bad.pt"), "-o", str(out)], out, *words)


def _vocab_pickle(path: Path, entries: dict) -> Path:
    path.write_bytes(pickle.dumps(entries))
    return path


@pytest.mark.parametrize("case,words", [
    ("short", ["10 entries", "50 classes"]),
    ("verb", ["entry 3", "'v1234567'", "not a noun synset key"]),
    ("absent", ["entry 2", "'n1'", "no noun synset of WordNet 3.0"]),
    ("list", ["expected a pickled dict"]),
])
def test_bad_vocabularies_are_one_line_errors(fixture_dir, tmp_path, capsys, case, words):
    with open(fixture_dir / "vocab_sample.pkl", "rb") as fh:
        good = pickle.load(fh)  # the fixture's own (trusted, plain) file, to derive bad ones from
    items = list(good.items())
    if case == "short":
        bad = dict(items[:10])
    elif case == "verb":
        bad = dict(items[:3] + [("v1234567", 5)] + items[4:])
    elif case == "absent":
        bad = dict(items[:2] + [("n1", 5)] + items[3:])
    else:
        bad = [k for k, _ in items]
    vocab = _vocab_pickle(tmp_path / "bad.pkl", bad)
    out = tmp_path / "run"
    _refused(capsys, ["import", "corenet", str(fixture_dir / "state_dict.pt"), "--vocab", str(vocab), "-o",
                      str(out)], out, *words)


def test_existing_output_is_not_overwritten(fixture_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["import", "corenet", str(fixture_dir / "state_dict.pt"), "-o", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"


def test_read_state_refuses_a_non_state_dict(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="no state dict inside"):
        corenet.read_state(tmp_path / "x.pt")


def test_commands_name_the_imported_checkpoint(imported, tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (232, 232), (90, 120, 30)).save(tmp_path / "p.png")
    assert main(["tag", str(imported), str(tmp_path / "p.png"), "--top", "1", "--workers", "0", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "checkpoint: " in err and "(imported from corenet state_dict.pt)" in err


def test_vocab_show_of_an_imported_vocabulary_names_where_its_counts_come_from(imported, capsys):
    assert main(["vocab", "show", str(imported / "vocab.json"), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "counts from vocab_sample.pkl, caption total unknown" in out and "52,418,327" in out


def test_lit_print_config_shows_the_towers_copied_settings(imported, tmp_path, capsys):
    """`catlip lit RUN --print-config`: the imported tower's architecture and preprocessing, nothing trained."""
    import yaml

    root = Path(__file__).resolve().parents[2]
    assert main(["lit", str(imported), "--config", str(root / "configs" / "lit_tiny_cpu.yaml"), "--print-config",
                 f"train.output_dir={tmp_path / 'lit'}"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["stem"] == "corenet" and cfg["model"]["pos_resize"] == "stretch"
    assert cfg["data"]["mean"] == [0.0, 0.0, 0.0] and cfg["data"]["eval_resize"] == 232
    assert cfg["method"]["image_tower"].endswith("step_0000000") and not (tmp_path / "lit").exists()


def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path, capsys):
    """torch.load fails on foreign bytes with assorted exception types (IndexError on plain text)."""
    (tmp_path / "captions.txt").write_text("a dog on a beach\na red car\n")
    out = tmp_path / "run"
    _refused(capsys, ["import", "corenet", str(tmp_path / "captions.txt"), "-o", str(out)], out,
             "not a readable PyTorch checkpoint")
