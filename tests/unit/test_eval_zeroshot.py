import json

import pytest
import torch

from catlip.errors import CatlipError, DataError
from catlip.evaluate.common.datasets import ClassList
from catlip.evaluate.common.features import Features
from catlip.evaluate.common.templates import DEFAULT_TEMPLATES, fill, load_templates, name_warnings, resolve_classnames
from catlip.evaluate.classify.transfer_init import map_classes
from catlip.evaluate.classify.zeroshot import (TEMPLATES, classification_metrics, clip_class_embeddings, clip_zero_shot,
                                               head_zero_shot)

DOG, KITCHEN, RESTAURANT, AIRPLANE, DOMESTIC_CAT = "n02084071", "n03619890", "n04081281", "n02691156", "n02121808"


def vocabulary(keys):
    from catlip.labels.vocab import Vocabulary

    return Vocabulary(method="catlip", options={}, keys=keys, counts=[1] * len(keys), names=keys,
                      glosses=[""] * len(keys))


def analytic_case(extra_classes=()):
    """Head rows are unit vectors; each class's images lie exactly along its mapped rows."""
    vocab = vocabulary([DOG, KITCHEN, RESTAURANT, AIRPLANE, DOMESTIC_CAT])
    weight, bias = torch.eye(5, 6), torch.zeros(5)
    classes = ClassList(["dog", "airplane", "cat", "restaurant kitchen", *extra_classes])
    report = map_classes(classes, vocab)
    e = torch.eye(6)
    proto = [e[0], e[3], e[4], e[1] + e[2]] + [e[5]] * len(extra_classes)
    x = torch.stack([p + 0.05 * torch.randn(6, generator=torch.Generator().manual_seed(i)) for i, p in
                     enumerate(proto * 3)])
    y = torch.arange(len(proto)).repeat(3)
    return Features(x, y), weight, bias, report


def test_head_zero_shot_analytic_head_is_perfect():
    feats, weight, bias, report = analytic_case()
    out = head_zero_shot(feats, weight, bias, report)
    assert out["top1"] == 1.0 and out["images_of_unmapped_classes"] == 0


def test_head_zero_shot_counts_unmapped_classes_as_errors():
    feats, weight, bias, report = analytic_case(extra_classes=["qwzx"])
    out = head_zero_shot(feats, weight, bias, report)
    assert report.unmapped == ["qwzx"]
    assert out["images_of_unmapped_classes"] == 3
    assert abs(out["top1"] - 12 / 15) < 1e-9  # the 3 qwzx images can never be predicted
    assert out["top1_on_mapped_classes"] == 1.0


def test_head_zero_shot_bias_acts_as_prior():
    feats, weight, _, report = analytic_case()
    bias = torch.tensor([10.0, 0, 0, 0, 0])  # a huge prior for "dog"
    assert head_zero_shot(feats, weight, bias, report)["top1"] == 0.25
    assert head_zero_shot(feats, weight, bias, report, use_bias=False)["top1"] == 1.0


def test_clip_zero_shot_with_analytic_towers():
    names = ["dog", "sea lion", "truck"]

    def tokenize(texts):  # token = index of the class named in the prompt
        return torch.tensor([[next(i for i, n in enumerate(names) if n in t)] for t in texts])

    def encode_text(tokens):
        return torch.nn.functional.one_hot(tokens[:, 0], 4).float() + 0.01

    emb = clip_class_embeddings(encode_text, tokenize, names, TEMPLATES)
    assert emb.shape == (3, 4) and torch.allclose(emb.norm(dim=1), torch.ones(3))
    feats = Features(torch.eye(4)[[0, 1, 2, 2, 1]], torch.tensor([0, 1, 2, 2, 1]))
    assert clip_zero_shot(feats, emb)["top1"] == 1.0


# ---------------------------------------------------------------- CLIP_benchmark protocol: metrics


def logits_predicting(pred, num_classes):
    """Logits whose argmax is ``pred`` and whose ranking after it is by class index."""
    logits = -torch.arange(num_classes, dtype=torch.float32).repeat(len(pred), 1) / 10
    logits[torch.arange(len(pred)), torch.tensor(pred)] = 1.0
    return logits


def test_mean_per_class_recall_on_a_hand_computed_confusion():
    # confusion (rows = truth): [[3, 1, 0], [0, 1, 1], [0, 0, 1]]; class 3 has no test image
    y = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    out = classification_metrics(logits_predicting([0, 0, 0, 1, 1, 2, 2], 4), y)
    assert out["top1"] == 5 / 7
    assert out["per_class_recall"] == [0.75, 0.5, 1.0, None]
    assert out["mean_per_class_recall"] == (0.75 + 0.5 + 1.0) / 3  # not /4: the absent class is left out
    assert out["classes_without_images"] == 1


def test_top5_is_capped_at_the_class_count():
    y = torch.tensor([2, 1, 0])
    out = classification_metrics(logits_predicting([0, 0, 1], 3), y)
    assert out["top1"] == 0.0 and out["top5"] == 1.0  # top-3 of 3 classes always hits
    logits = torch.arange(7, dtype=torch.float32).flip(0).repeat(2, 1)  # class 0 ranked first, 6 last
    out = classification_metrics(logits, torch.tensor([4, 5]))
    assert out["top5"] == 0.5 and out["mean_per_class_recall"] == 0.0 and out["classes_without_images"] == 5


def test_head_and_text_zero_shot_report_the_same_metrics():
    feats, weight, bias, report = analytic_case()
    head = head_zero_shot(feats, weight, bias, report)
    assert head["mean_per_class_recall"] == 1.0 and head["classes_without_images"] == 0
    text = clip_zero_shot(feats, torch.nn.functional.normalize(torch.randn(4, 6), dim=1))
    assert {"top1", "top5", "mean_per_class_recall", "per_class_recall"} <= set(head) & set(text)


# ---------------------------------------------------------------- templates


def test_builtin_template_sets():
    openai = load_templates("openai")
    assert len(openai) == 80 and openai.name == "openai"
    assert openai.prompts("dog")[0] == "a bad photo of a dog."  # open_clip's callables
    assert len(load_templates("simple")) == 7
    assert load_templates("short").templates == TEMPLATES and len(TEMPLATES) == 6
    assert load_templates(None).name == DEFAULT_TEMPLATES == "openai"


def test_template_file_with_both_placeholders(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("# my prompts\n\na photo of a {}.\n  a {c} in {braces} kept  \n", encoding="utf-8")
    prompts = load_templates(str(path))
    assert prompts.name == str(path) and len(prompts) == 2
    assert prompts.prompts("café") == ["a photo of a café.", "a café in {braces} kept"]
    assert fill("{c} and {}", "a{}b") == "a{}b and a{}b"  # one pass: the name is not filled again


@pytest.mark.parametrize("text, message", [
    ("a photo of a {}.\n# fine\nno placeholder here\n", ":3: template 'no placeholder here' has no {} or {c}"),
    ("a photo of a {name}.\n", ":1: template"),
    ("\n# only a comment\n\n", "holds no template"),
    ("", "holds no template"),
])
def test_bad_template_files_are_one_line_errors(tmp_path, text, message):
    assert message in _file_error(tmp_path, text, load_templates)


def _file_error(tmp_path, text: str, read) -> str:
    """The one-line DataError that ``read(path)`` raises for a file holding ``text``."""
    path = tmp_path / "f.txt"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        read(str(path))
    assert "\n" not in str(err.value)
    return str(err.value)


def test_unknown_template_set_names_the_choices():
    with pytest.raises(DataError, match="neither openai, simple, short nor a file"):
        load_templates("opneai")


# ---------------------------------------------------------------- class names


def test_class_names_from_the_dataset_read_as_words():
    names = resolve_classnames(None, ["sea_lion", "café", "n01440764"])
    assert names.source == "dataset" and names.names == ("sea lion", "café", "n01440764")
    assert any("WordNet ids" in w for w in name_warnings(names.names))


def test_imagenet_class_names_in_dataset_order():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    names = resolve_classnames("imagenet", [f"n{i:08d}" for i in range(1000)])
    assert names.names[:2] == ("tench", "goldfish") and names.names == tuple(IMAGENET_CLASSNAMES)
    warning, = name_warnings(names.names)  # open_clip's list names two pairs of classes alike
    assert warning.startswith("2 class names are shared") and "missile" in warning and "sunglasses" in warning
    with pytest.raises(DataError, match="1000 names, but the test set has 3 classes"):
        resolve_classnames("imagenet", ["a", "b", "c"])


def test_class_names_file_plain_and_indexed(tmp_path):
    plain, indexed = tmp_path / "plain.txt", tmp_path / "indexed.tsv"
    plain.write_text("# names\ndog\n\nsea_lion\ncafé\n", encoding="utf-8")
    indexed.write_text("2\tcafé\n0\tdog\n1\tn02077923\tsea lion\n", encoding="utf-8")
    for path in (plain, indexed):
        assert resolve_classnames(str(path), ["x", "y", "z"]).names == ("dog", "sea lion", "café")


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("# nothing\n\n", "is empty"),
    ("dog\ncat\nDog\n", ":3: class name 'Dog' repeats line 1"),
    ("0\tdog\n1\t\n2\tcat\n", ":2: empty class name"),
    ("0\tdog\ncat\n2\tbird\n", ":2: a plain name among index<TAB>name lines"),
    ("0\tdog\n1\tcat\n3\tbird\n", "indices must be 0..2, each once; 2 is missing"),
    ("dog\ncat\n", "2 names, but the test set has 3 classes"),
])
def test_bad_class_names_files_are_one_line_errors(tmp_path, text, message):
    assert message in _file_error(tmp_path, text, lambda path: resolve_classnames(path, ["a", "b", "c"]))


# ---------------------------------------------------------------- the text tower


@pytest.fixture(scope="module")
def text_tower():
    from catlip.config import ModelConfig
    from catlip.models.clip import build_text_tower

    torch.manual_seed(0)
    return build_text_tower(ModelConfig(embed_dim=16, text_width=32, text_layers=1, text_heads=2), 16).eval()


def clip_tokenize(texts):
    import open_clip

    return open_clip.tokenize(texts, 16)


def test_class_embedding_is_the_normalised_mean_of_normalised_prompt_embeddings(text_tower):
    templates = (lambda c: f"a photo of a {c}.", "itap of a {c}.", "a {} in the wild.")
    emb = clip_class_embeddings(text_tower, clip_tokenize, ["dog", "sea lion"], templates)
    for row, name in zip(emb, ["dog", "sea lion"]):
        prompts = [f"a photo of a {name}.", f"itap of a {name}.", f"a {name} in the wild."]
        each = torch.stack([text_tower(clip_tokenize([p]))[0] for p in prompts])  # one prompt per call
        expected = torch.nn.functional.normalize(torch.nn.functional.normalize(each, dim=1).mean(0), dim=0)
        torch.testing.assert_close(row, expected, atol=1e-5, rtol=1e-5)
        plain = torch.nn.functional.normalize(each.mean(0), dim=0)
        assert not torch.allclose(row, plain, atol=1e-4)  # the per-prompt normalisation matters here


def test_non_ascii_class_names_are_encoded_not_dropped(text_tower):
    names = ["café", "naïve", "cafe", "naive"]
    tokens = clip_tokenize(names)
    assert len({tuple(t.tolist()) for t in tokens}) == 4  # the accents change the BPE tokens
    emb = clip_class_embeddings(text_tower, clip_tokenize, names, load_templates("short").templates)
    assert torch.isfinite(emb).all() and torch.allclose(emb.norm(dim=1), torch.ones(4))
    # toy images: each lies near one class's text embedding (shuffled order)
    y = torch.tensor([1, 0, 3, 2, 1, 0])
    x = emb[y] + 0.01 * torch.randn(len(y), emb.shape[1], generator=torch.Generator().manual_seed(0))
    out = clip_zero_shot(Features(x, y), emb)
    assert out["top1"] == 1.0 and out["mean_per_class_recall"] == 1.0


def test_no_templates_or_no_names_is_an_error(text_tower):
    with pytest.raises(CatlipError, match="0 templates"):
        clip_class_embeddings(text_tower, clip_tokenize, ["dog"], ())
    with pytest.raises(CatlipError, match="0 names"):
        clip_class_embeddings(text_tower, clip_tokenize, [], TEMPLATES)


# ---------------------------------------------------------------- `catlip zeroshot --mode text` end to end


@pytest.fixture(scope="module")
def tiny_clip():
    from catlip.config import Config
    from catlip.evaluate.common.model import EvalModel
    from catlip.methods import build_method

    cfg = Config()
    cfg.method.name = "clip"
    cfg.model.backbone_kwargs = {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
    cfg.model.embed_dim, cfg.model.text_width, cfg.model.text_layers, cfg.model.text_heads = 16, 32, 1, 2
    cfg.model.image_size, cfg.data.context_length = 32, 16
    torch.manual_seed(0)
    method = build_method(cfg, 0).eval()
    return EvalModel("tiny-clip", "clip", method.backbone, 32, method=method, context_length=16)


def image_folder(root, classes, per_class=2):
    from PIL import Image

    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (32, 32), (40 * k, 80 * i, 120)).save(root / name / f"{i}.png")
    return root


def test_cli_text_mode_table_and_json(tiny_clip, tmp_path, monkeypatch, capsys):
    from catlip.cli import main

    monkeypatch.setattr("catlip.evaluate.common.model.load_eval_model", lambda *a, **k: tiny_clip)
    test = image_folder(tmp_path / "test", ["café", "naïve", "sea_lion"])
    (tmp_path / "classes.txt").write_text("café\nnaïve\nsea_lion\nwalrus\n", encoding="utf-8")
    out = tmp_path / "zs.json"
    assert main(["zeroshot", "tiny-clip", "--test", str(test), "--classes", str(tmp_path / "classes.txt"),
                 "--workers", "0", "--no-progress", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["mode"] == "text" and result["templates"] == "openai" and result["num_templates"] == 80
    assert result["num_classes"] == 4 and result["test_images"] == 6 and result["classes_without_images"] == 1
    assert result["per_class_recall"][3] is None and 0.0 <= result["mean_per_class_recall"] <= 1.0
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("method "))  # the per-class table follows
    header, _, row = lines[start:start + 3]
    assert header.split() == ["method", "mode", "templates", "classnames", "num_classes", "test_images", "top1",
                              "top5", "mean_per_class_recall"]
    assert row.split()[:6] == ["clip", "text", "openai", "(80)", "dataset", "4"]
    assert "1 of 4 classes have no test image" in printed


def test_cli_text_mode_bad_template_file_is_one_line(tiny_clip, tmp_path, monkeypatch, capsys):
    from catlip.cli import main

    monkeypatch.setattr("catlip.evaluate.common.model.load_eval_model", lambda *a, **k: tiny_clip)
    test = image_folder(tmp_path / "test", ["dog", "cat"], per_class=1)
    (tmp_path / "t.txt").write_text("a photo of a {}.\na photo\n")
    assert main(["zeroshot", "tiny-clip", "--test", str(test), "--templates", str(tmp_path / "t.txt"),
                 "--workers", "0", "--no-progress"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "t.txt:2: template 'a photo' has no {} or {c}" in errors[0]
