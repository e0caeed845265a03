import torch

from catlip.evaluate.datasets import ClassList
from catlip.evaluate.features import Features
from catlip.evaluate.transfer_init import map_classes
from catlip.evaluate.zero_shot import TEMPLATES, clip_class_embeddings, clip_zero_shot, head_zero_shot

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
