"""In-domain evaluation tasks from held-out captions (catlip.evaluate.caption.caption_tasks), checked by hand."""

from __future__ import annotations

import json

import pytest
import torch

from catlip.data.transforms import eval_transform
from catlip.errors import DataError
from catlip.evaluate.caption import caption_tasks as ct
from catlip.labels.vocab import Vocabulary
from tests.shards import write_tar

# WordNet 3.0 first noun senses: dog, ball, man, grass, bicycle, shirt
DOG, BALL, MAN, GRASS, BICYCLE, SHIRT = ("n02084071", "n02778669", "n10287213", "n12102133", "n02834778",
                                         "n04197391")


def _vocab() -> Vocabulary:
    keys = [DOG, MAN, GRASS, BALL, SHIRT, BICYCLE]
    counts = [700, 500, 120, 98, 90, 30]
    return Vocabulary(labels="synsets", keys=keys, counts=counts, names=["dog", "man", "grass", "ball", "shirt",
                                                                         "bicycle"], glosses=[""] * 6,
                      num_captions=3000)


CAPTIONS = [
    ["A dog runs on the grass .", "A brown dog chases a ball ."],  # dog, grass, ball
    ["A man in a red shirt rides a bicycle ."],  # man, shirt, bicycle
    ["Two dogs play ."],  # dog (plural)
    ["A man throws a ball to his friend .", "Someone throws a ball ."],  # man, ball
]


def test_label_sets_are_the_union_over_an_images_captions():
    v = _vocab()
    sets = ct.caption_label_sets(CAPTIONS, v)
    named = [{v.keys[i] for i in s} for s in sets]
    assert named == [{DOG, GRASS, BALL}, {MAN, SHIRT, BICYCLE}, {DOG}, {MAN, BALL}]


def test_multilabel_targets_over_the_most_frequent_keys():
    v = _vocab()
    top = ct.frequent_ids(v, 3)
    assert [v.names[i] for i in top] == ["dog", "man", "grass"]
    y = ct.multilabel_targets(ct.caption_label_sets(CAPTIONS, v), top)
    assert y.tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 1, 0]]


def test_object_classes_are_animals_and_instrumentalities_named_alone():
    v = _vocab()
    # man (a person), grass (a plant) and shirt (clothing) are not objects a photo is *of*
    assert [v.names[i] for i in ct.frequent_ids(v, 10, ct.OBJECT_ROOTS)] == ["dog", "ball", "bicycle"]
    sets = ct.caption_label_sets(CAPTIONS, v)
    idx, y = ct.single_label_targets(sets, [v.keys.index(DOG), v.keys.index(BALL)])
    # image 0 names dog and ball: ambiguous, left out; image 1 names neither
    assert idx.tolist() == [2, 3] and y.tolist() == [0, 1]


def test_object_classes_skip_a_class_that_would_leave_too_few_images():
    v = _vocab()
    train = [{0}, {0}, {3}, {3}, {5}]  # dog x2, ball x2, bicycle x1
    test = [{0}, {3}, {5}]
    assert [v.names[i] for i in ct.object_classes(v, train, test, k=3, min_train=2, min_test=1)] == ["dog", "ball"]


def test_load_captioned_counts_what_it_skips(tmp_path):
    from PIL import Image
    import io

    def jpg(colour):
        buf = io.BytesIO()
        Image.new("RGB", (20, 12), colour).save(buf, "JPEG")
        return buf.getvalue()

    shard = tmp_path / "s.tar"
    write_tar(shard, [
        ("a.jpg", jpg("red")), ("a.json", json.dumps({"captions": ["A dog .", "A red dog ."]}).encode()),
        ("b.jpg", b"not a jpeg"), ("b.txt", b"A ball ."),
        ("c.jpg", jpg("blue")), ("c.json", json.dumps({"captions": []}).encode()),
        ("d.txt", b"A caption without an image ."),
        ("e.jpg", jpg("green")), ("e.txt", b"A man .\nA person ."),
    ])
    data = ct.load_captioned([shard], eval_transform(16))
    assert data.keys == ["a", "e"] and data.images.shape == (2, 3, 16, 16)
    assert data.captions == [["A dog .", "A red dog ."], ["A man .", "A person ."]]
    assert data.skipped == {"undecodable image": 1, "no caption": 1, "no image": 1}
    with pytest.raises(DataError, match="no such shard"):
        ct.load_captioned([tmp_path / "missing.tar"], eval_transform(16))


def test_flickr8k_tasks_have_frequent_real_objects(shared_data):
    from catlip.labels.vocab import build_vocabulary

    flickr = shared_data / "flickr8k"
    vocab, _ = build_vocabulary([flickr / "flickr8k-dev-000.tar"], "catlip", {}, min_count=5, workers=1)
    dev = ct.load_captioned([flickr / "flickr8k-dev-000.tar"], eval_transform(8))
    sets = ct.caption_label_sets(dev.captions, vocab)
    top = ct.frequent_ids(vocab, 5)
    assert vocab.names[top[0]] == "dog"
    y = ct.multilabel_targets(sets, top)
    assert len(dev) == 1000 and 0.2 < y[:, 0].mean().item() < 0.6  # a quarter to half of the photos show dogs
    objects = ct.object_classes(vocab, sets, sets, k=4, min_train=10, min_test=10)
    assert len(objects) == 4 and vocab.names[objects[0]] == "dog"
    assert torch.bincount(ct.single_label_targets(sets, objects)[1]).min() >= 10
