import io

import pytest
import torch
from PIL import Image

from catlip.errors import DataError
from catlip.evaluate.common.datasets import ClassList, collate_skip, eval_transform, load_classes, open_labelled


def write_image(path, colour, size=(20, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def batches(data, batch_size=4):
    loader = torch.utils.data.DataLoader(data.dataset, batch_size=batch_size, collate_fn=collate_skip)
    return list(loader)


def test_load_classes_plain_and_tsv(tmp_path):
    (tmp_path / "plain.txt").write_text("airplane\nsea lion\n\n")
    assert load_classes(tmp_path / "plain.txt").names == ["airplane", "sea lion"]
    (tmp_path / "in.tsv").write_text("index\twnid\tname\n0\tn01440764\ttench\n1\tn01443537\tgoldfish\n")
    cl = load_classes(tmp_path / "in.tsv")
    assert cl.names == ["tench", "goldfish"] and cl.wnids == ["n01440764", "n01443537"]
    assert cl.index("goldfish") == 1 and cl.index("n01440764") == 0 and cl.index("1") == 1
    assert cl.index("shark") is None
    with pytest.raises(DataError):
        load_classes(tmp_path / "missing.txt")


def test_image_folder_resizes_skips_unreadable_and_reports_empty_classes(tmp_path):
    write_image(tmp_path / "red" / "a.png", (255, 0, 0), (40, 30))
    write_image(tmp_path / "red" / "b.jpg", (250, 0, 0), (13, 17))
    write_image(tmp_path / "blue" / "c.png", (0, 0, 255))
    (tmp_path / "blue" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "green").mkdir()
    data = open_labelled(tmp_path, transform=eval_transform(16))
    assert data.classes.names == ["blue", "green", "red"]
    assert data.empty_classes == ["green"]
    out = batches(data)
    assert sum(b["skipped"] for b in out) == 1
    images = torch.cat([b["image"] for b in out])
    assert images.shape == (3, 3, 16, 16)  # every input size became 16x16
    assert sorted(torch.cat([b["target"] for b in out]).tolist()) == [0, 2, 2]


def test_image_folder_with_class_list_and_unknown_folder(tmp_path):
    write_image(tmp_path / "n02084071" / "a.png", (1, 2, 3))
    classes = ClassList(["cat", "dog"], [None, "n02084071"])
    data = open_labelled(tmp_path, classes, eval_transform(8))
    assert data.dataset.items[0][1] == 1 and data.empty_classes == ["cat"]
    with pytest.raises(DataError, match="not in the class list"):
        open_labelled(tmp_path, ClassList(["cat"]), eval_transform(8))


def test_manifest_single_and_multilabel(tmp_path):
    write_image(tmp_path / "img" / "1.png", (9, 9, 9))
    write_image(tmp_path / "img" / "2.png", (99, 9, 9))
    (tmp_path / "m.csv").write_text("image,labels\nimg/1.png,cat|dog\nimg/2.png,dog\nimg/3.png,cat\n")
    data = open_labelled(tmp_path / "m.csv", transform=eval_transform(8), multilabel=True)
    assert data.classes.names == ["cat", "dog"]
    out = batches(data)
    assert out[0]["skipped"] == 1  # img/3.png does not exist
    assert out[0]["target"].tolist() == [[1.0, 1.0], [0.0, 1.0]]


def test_shards_with_cls_and_json_members(tmp_path):
    import webdataset as wds

    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    with wds.TarWriter(str(tmp_path / "d-000.tar")) as sink:
        for i, (colour, cls) in enumerate([((255, 0, 0), 0), ((0, 255, 0), 1), ((0, 0, 255), 1)]):
            buf = io.BytesIO()
            Image.new("RGB", (10 + i, 10), colour).save(buf, format="JPEG")
            sink.write({"__key__": f"s{i}", "jpg": buf.getvalue(), "cls": str(cls).encode(),
                        "json": f'{{"labels": ["cat", {cls}]}}'.encode()})
        sink.write({"__key__": "bad", "jpg": b"garbage", "cls": b"0"})
    single = open_labelled(str(tmp_path / "d-{000..000}.tar"), transform=eval_transform(8))
    out = batches(single, batch_size=8)
    assert out[0]["target"].tolist() == [0, 1, 1] and out[0]["skipped"] == 1
    multi = open_labelled(str(tmp_path / "d-000.tar"), transform=eval_transform(8), multilabel=True)
    assert batches(multi, batch_size=8)[0]["target"].tolist() == [[1, 0], [1, 1], [1, 1]]
    with pytest.raises(DataError, match="not found"):
        open_labelled(str(tmp_path / "missing-{000..001}.tar"))


def test_real_cifar10_shards(shared_data):
    data = open_labelled(str(shared_data / "cifar10" / "cifar10-test-000.tar"), transform=eval_transform(32))
    assert data.classes.names[0] == "airplane" and len(data.classes) == 10
    batch = next(iter(torch.utils.data.DataLoader(data.dataset, batch_size=16, collate_fn=collate_skip)))
    assert batch["image"].shape == (16, 3, 32, 32) and batch["skipped"] == 0
    assert 0 <= int(batch["target"].min()) and int(batch["target"].max()) < 10


def test_a_classes_json_beside_shards_is_found(shared_data):
    """coco128 ships classes.json (its 80 detection names), not classes.txt: multi-label evaluation finds it."""
    data = open_labelled(str(shared_data / "coco128" / "coco128-train-000.tar"), transform=eval_transform(32),
                         multilabel=True)
    assert len(data.classes) == 80 and data.classes.names[0] == "person" and data.multilabel
