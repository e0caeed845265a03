import pytest
import torch

from catlip.evaluate.common.datasets import ClassList
from catlip.evaluate.classify.transfer_init import clean_name, map_classes, transfer_init

DOG, DOMESTIC_CAT, KITCHEN, RESTAURANT, AIRPLANE = "n02084071", "n02121808", "n03619890", "n04081281", "n02691156"


def vocabulary(keys, method="catlip", options=None):
    from catlip.labels.vocab import Vocabulary

    n = len(keys)
    return Vocabulary(method=method, options=options or {}, keys=list(keys), counts=[100 - i for i in range(n)],
                      names=list(keys), glosses=[""] * n)


@pytest.fixture(scope="module")
def head():
    torch.manual_seed(123)
    return torch.randn(5, 8), torch.randn(5)


@pytest.fixture(scope="module")
def vocab():
    return vocabulary([DOG, DOMESTIC_CAT, KITCHEN, RESTAURANT, AIRPLANE])


def test_mapping_kinds(vocab):
    classes = ClassList(["dog", "cat", "restaurant_kitchen", "qwzx", "pooch", "Airplanes"],
                        [None, None, None, None, DOG, None])
    report = map_classes(classes, vocab)
    kinds = [m.kind for m in report.classes]
    assert kinds == ["exact", "similar", "averaged", "random", "exact", "exact"]
    assert report.classes[0].keys == [DOG] and report.classes[0].detail == "first noun sense"
    # "cat" (n02121620, the feline) is the direct hypernym of domestic cat: path similarity 1/2
    assert report.classes[1].keys == [DOMESTIC_CAT] and report.classes[1].similarity == 0.5
    assert set(report.classes[2].keys) == {RESTAURANT, KITCHEN}
    assert report.classes[4].detail == "wnid in vocabulary"
    assert report.classes[5].keys == [AIRPLANE]  # morphy: airplanes -> airplane
    assert report.counts == {"exact": 3, "similar": 1, "averaged": 1, "random": 1}
    assert report.unmapped == ["qwzx"]
    summary = report.summary()
    assert "random 1" in summary and "qwzx" in summary


def test_only_the_nouns_of_a_name_contribute(vocab, head):
    """Adjectives never add rows: 'European kitchen' is the kitchen row alone, not an average with 'European'."""
    report = map_classes(ClassList(["European kitchen", "big restaurant kitchen"]), vocab)
    assert [m.kind for m in report.classes] == ["averaged", "averaged"]
    assert report.classes[0].keys == [KITCHEN]
    assert report.classes[1].keys == [RESTAURANT, KITCHEN] and "restaurant, kitchen" in report.classes[1].detail


def test_alpha_one_allows_only_exact_matches(vocab):
    report = map_classes(ClassList(["dog", "cat"]), vocab, alpha=1.0)
    assert [m.kind for m in report.classes] == ["exact", "random"]


def test_transfer_init_copies_mapped_rows_and_averages(vocab, head):
    weight, bias = head
    report = map_classes(ClassList(["dog", "restaurant kitchen", "qwzx", "cat"]), vocab)
    lin = transfer_init(weight, bias, report, seed=7)
    assert lin.weight.shape == (4, 8)
    assert torch.equal(lin.weight[0], weight[0]) and lin.bias[0] == bias[0]
    torch.testing.assert_close(lin.weight[1], (weight[2] + weight[3]) / 2)
    torch.testing.assert_close(lin.bias[1], (bias[2] + bias[3]) / 2)
    assert torch.equal(lin.weight[3], weight[1])
    # the unmapped class keeps exactly the seeded random initialisation of a Random Init probe
    torch.manual_seed(7)
    random_init = torch.nn.Linear(8, 4)
    assert torch.equal(lin.weight[2], random_init.weight[2]) and lin.bias[2] == random_init.bias[2]


def test_clean_name_handles_places_and_parentheses():
    assert clean_name("/r/restaurant_kitchen") == "restaurant kitchen"
    assert clean_name("/a/archive") == "archive"
    assert clean_name("Crane (bird)") == "crane"


def test_superclass_vocabulary_maps_through_bpe_tokens(head):
    from catlip.labels import get_extractor

    ex = get_extractor("superclass")
    dog, kitchen, restaurant = (ex.extract(w) for w in ("dog", "kitchen", "restaurant"))
    assert len(dog) == len(kitchen) == len(restaurant) == 1
    vocab = vocabulary([dog[0], "999999", kitchen[0], restaurant[0], "12"], method="superclass", options=ex.options)
    report = map_classes(ClassList(["dog", "restaurant kitchen", "qwzx"]), vocab)
    assert [m.kind for m in report.classes[:2]] == ["exact", "averaged"]
    assert report.classes[1].rows == [3, 2]
    weight, bias = head
    lin = transfer_init(weight, bias, report)
    assert torch.equal(lin.weight[0], weight[0])
    torch.testing.assert_close(lin.weight[1], (weight[2] + weight[3]) / 2)
    # "qwzx" splits into BPE pieces, none of them in this vocabulary: random init, and reported
    assert report.classes[2].kind == "random" and report.unmapped == ["qwzx"]


def test_real_class_list_coverage(shared_data, vocab):
    from catlip.evaluate.common.datasets import load_classes

    classes = load_classes(shared_data / "class_lists" / "imagenet1k.tsv")
    assert len(classes) == 1000 and classes.wnids[0] == "n01440764" and classes.names[0] == "tench"
    cifar = load_classes(shared_data / "cifar10" / "classes.txt")
    report = map_classes(cifar, vocab)
    assert report.classes[0].kind == "exact"  # airplane
    assert len(report.classes) == 10 and sum(report.counts.values()) == 10
