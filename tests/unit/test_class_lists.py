"""Class lists that cannot mislead: one reader for every class file (txt, TSV, JSON list, JSON {index: name},
coco128's classes.json), UTF-8 or a one-line error, and no silent subset of the data (labels the list leaves out
are an error, or counted and reported with --allow-partial-classes)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from PIL import Image
from shards import write_tar  # tests/shards.py

from catlip.cli import main
from catlip.errors import DataError
from catlip.evaluate.common.class_files import read_class_file
from catlip.evaluate.common.datasets import eval_transform, load_classes, open_labelled
from catlip.evaluate.common.templates import read_classnames_file, resolve_classnames

from tiny import TINY_VIT as TINY  # noqa: E402  (tests/tiny.py)
COMMON = ["--workers", "0", "--no-progress", "--batch-size", "64"]


def _jpeg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="JPEG")
    return buf.getvalue()


def _shard(path, labels, json_labels=None):
    """One sample per label: a tiny JPEG with a ``.cls`` member (and a ``.json`` one when given)."""
    members = []
    for i, label in enumerate(labels):
        members += [(f"s{i:03d}.jpg", _jpeg((20 * (i % 10), 0, 0))), (f"s{i:03d}.cls", str(label).encode())]
        if json_labels is not None:
            members.append((f"s{i:03d}.json", json.dumps({"labels": json_labels[i]}).encode()))
    return str(write_tar(path, members))


def _write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def ten_classes(tmp_path):
    """A 10-class test set, two images per class (labels 0..9), and a list naming only the first 3 classes."""
    return {"shard": _shard(tmp_path / "test-000.tar", [c for c in range(10) for _ in range(2)]),
            "three": str(_write(tmp_path / "three.txt", "airplane\nautomobile\nbird\n")),
            "tiny": f"random:{_write(tmp_path / 'tiny.yaml', TINY)}"}


# ---------------------------------------------------------------- one reader, every format


@pytest.mark.parametrize("name, text", [
    ("plain.txt", "# CIFAR-style\ncat\n\ndog\nsea_lion\n"),
    ("indexed.tsv", "index\twnid\tname\n2\tn02077923\tsea_lion\n0\tn02121808\tcat\n1\tn02084071\tdog\n"),
    ("list.json", '["cat", "dog", "sea_lion"]'),
    ("object.json", '{"1": "dog", "2": "sea_lion", "0": "cat"}'),
    ("coco.json", '{"detection": ["cat", "dog", "sea_lion"], "segmentation": {"0": "unlabeled", "7": "x"}}'),
    ("bom.txt", "\ufeffcat\ndog\nsea_lion\n"),
])
def test_every_format_reads_the_same_classes_everywhere(tmp_path, name, text):
    path = _write(tmp_path / name, text)
    assert load_classes(path).names == ["cat", "dog", "sea_lion"]
    assert read_classnames_file(path) == ["cat", "dog", "sea_lion"]
    assert resolve_classnames(str(path), ["a", "b", "c"]).names == ("cat", "dog", "sea lion")
    if name == "indexed.tsv":  # the rows are put in index order, wnids with them
        assert load_classes(path).wnids == ["n02121808", "n02084071", "n02077923"]


def test_real_coco128_classes_json(shared_data):
    classes = load_classes(shared_data / "coco128" / "classes.json")
    assert len(classes) == 80 and classes.names[:3] == ["person", "bicycle", "car"]
    assert classes.names[45] == "bowl" and classes.names[79] == "toothbrush"


def test_coco128_multilabel_probe_reads_the_80_classes(shared_data, tmp_path, ten_classes):
    """`catlip multilabel --classes classes.json` scores the 80 COCO classes, not one class per line of JSON."""
    shard = str(shared_data / "coco128" / "coco128-train-000.tar")
    out = tmp_path / "ml.json"
    assert main(["multilabel", ten_classes["tiny"], "--train", shard, "--test", shard, "--classes",
                 str(shared_data / "coco128" / "classes.json"), "--epochs", "1", "--lrs", "0.01", "--wds", "0",
                 *COMMON, "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_classes"] == 80 and result["test_images"] == 128 and "unlisted_classes" not in result


def test_wnids_tell_apart_two_classes_of_one_name(tmp_path):
    """ImageNet has two "crane" classes (the bird, the machine): distinct wnids make them two classes."""
    path = _write(tmp_path / "in.tsv", "0\tn02012849\tcrane\n1\tn03126707\tcrane\n")
    classes = read_class_file(path)
    assert classes.names == ["crane", "crane"] and classes.index("n03126707") == 1


# ---------------------------------------------------------------- one-line errors


@pytest.mark.parametrize("name, text, message", [
    ("dup.txt", "cat\ndog\nCat\n", "dup.txt:3: class name 'Cat' repeats line 1"),
    ("dup.json", '["cat", "dog", "dog"]', "dup.json: entry 3: class name 'dog' repeats entry 2"),
    ("gap.tsv", "0\tcat\n2\tdog\n", "gap.tsv: indices must be 0..1, each once; 1 is missing"),
    ("gap.json", '{"0": "cat", "2": "dog"}', "gap.json: indices must be 0..1, each once; 1 is missing"),
    ("bad.json", '{"animals": ["cat"]}', "expected a JSON list of names"),
    ("num.json", '["cat", 7]', "num.json: entry 2: a class name must be a non-empty string, not 7"),
    ("broken.json", '["cat", ', "not valid JSON"),
    ("empty.json", "[]", "empty.json is empty"),
])
def test_bad_class_files_are_one_line_errors(tmp_path, name, text, message):
    path = _write(tmp_path / name, text)
    with pytest.raises(DataError) as err:
        load_classes(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_latin1_class_file_is_one_line_naming_the_file(tmp_path, ten_classes, capsys):
    path = _write(tmp_path / "latin1.txt", "café\nthé\n", encoding="latin-1")
    with pytest.raises(DataError, match=r"latin1.txt is not UTF-8 text \(byte 0xe9 at offset 3\)"):
        load_classes(path)
    assert main(["knn", ten_classes["tiny"], "--train", ten_classes["shard"], "--test", ten_classes["shard"],
                 "--classes", str(path), *COMMON]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("checkpoint: ")]
    assert len(err) == 1 and "latin1.txt is not UTF-8" in err[0]


# ---------------------------------------------------------------- no silent subset


def test_three_names_for_ten_classes_is_an_error(ten_classes, capsys):
    with pytest.raises(DataError) as err:
        open_labelled(ten_classes["shard"], ten_classes["three"])
    assert "14 images carry 7 label(s) not in the class list of 3 names (3, 4, 5, 6, 7, 8, 9)" in str(err.value)
    assert main(["zeroshot", ten_classes["tiny"], "--test", ten_classes["shard"], "--classes", ten_classes["three"],
                 *COMMON]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("checkpoint: ")]
    assert len(err) == 1 and "14 images carry 7 label(s)" in err[0] and "--allow-partial-classes" in err[0]


def test_allow_partial_classes_counts_and_reports_the_rest(ten_classes, tmp_path, capsys):
    out = tmp_path / "knn.json"
    assert main(["knn", ten_classes["tiny"], "--train", ten_classes["shard"], "--test", ten_classes["shard"],
                 "--classes", ten_classes["three"], "--allow-partial-classes", "--k", "3", *COMMON,
                 "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    per_label = {str(c): 2 for c in range(3, 10)}
    assert result["unlisted_classes"] == {"train": {"images": 14, "labels": per_label},
                                          "test": {"images": 14, "labels": per_label}}
    assert result["test_images"] == 6 and result["skipped"] == {"train": 0, "test": 0}
    printed = capsys.readouterr().out
    assert "test: 14 images of 7 classes not in --classes (3, 4, 5, 6, 7, 8, 9) were left out" in printed


def test_zeroshot_with_allow_partial_classes_reports_the_left_out_images(ten_classes, tmp_path, capsys):
    from catlip.config import load_config
    from catlip.train.loop import pretrain

    cfg = load_config(ten_classes["tiny"].removeprefix("random:"), [
        "method.name=catlip", "data.synthetic_size=32", "data.vocab_min_count=1", "data.batch_size=16",
        "data.num_workers=0", "optim.steps=2", "optim.warmup_steps=1", f"train.output_dir={tmp_path / 'run'}",
        "train.progress=false", "train.tensorboard=false", "train.ckpt_every=2"])
    run, out = str(pretrain(cfg)), tmp_path / "zs.json"
    assert main(["zeroshot", run, "--test", ten_classes["shard"], "--classes", ten_classes["three"],
                 "--allow-partial-classes", *COMMON, "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["mode"] == "head" and result["test_images"] == 6 and result["num_classes"] == 3
    assert result["unlisted_classes"] == {"test": {"images": 14, "labels": {str(c): 2 for c in range(3, 10)}}}
    assert "test: 14 images of 7 classes not in --classes" in capsys.readouterr().out


def test_partial_folders_and_manifests(tmp_path):
    for colour in ("red", "green", "blue"):
        for i in range(2 if colour == "blue" else 1):
            path = tmp_path / "folder" / colour / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), colour).save(path)
    two = _write(tmp_path / "two.txt", "red\ngreen\n")
    with pytest.raises(DataError, match=r"2 images carry 1 label\(s\) not in the class list of 2 names \(blue\)"):
        open_labelled(tmp_path / "folder", two, eval_transform(8))
    data = open_labelled(tmp_path / "folder", two, eval_transform(8), allow_partial=True)
    assert len(data) == 2 and data.unlisted == {"images": 2, "labels": {"blue": 2}}
    (tmp_path / "m.csv").write_text("image,labels\nfolder/red/0.png,red\nfolder/blue/0.png,blue\n"
                                    "folder/blue/1.png,blue|red\n")
    with pytest.raises(DataError, match=r"2 images carry 1 label"):
        open_labelled(tmp_path / "m.csv", two, eval_transform(8), multilabel=True)
    data = open_labelled(tmp_path / "m.csv", two, eval_transform(8), multilabel=True, allow_partial=True)
    assert len(data) == 2 and data.unlisted == {"images": 2, "labels": {"blue": 2}}


def test_multilabel_json_indices_beyond_the_list(tmp_path):
    """coco128-style integer labels: an index past the class list is not dropped from the targets unnoticed."""
    shard = _shard(tmp_path / "ml-000.tar", [0, 1, 2], json_labels=[[0, 1], [1, 4], [2]])
    names = _write(tmp_path / "classes.json", '["cat", "dog", "bird"]')
    with pytest.raises(DataError, match=r"1 images carry 1 label\(s\) not in the class list of 3 names \(4\)"):
        open_labelled(shard, names, multilabel=True)
    data = open_labelled(shard, names, eval_transform(8), multilabel=True, allow_partial=True)
    assert data.unlisted == {"images": 1, "labels": {"4": 1}} and data.empty_classes == []
    targets = [t.tolist() for _, t in data.dataset]
    assert targets == [[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def test_the_class_file_reader_imports_no_torch():
    code = ("import sys, catlip.evaluate.common.templates, catlip.evaluate.common.class_files; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name, text, expected", [
    ("classes.json", '{"segmentation": {"0": "unlabeled", "3": "sky", "1": "wall"}}', {1: "wall", 3: "sky"}),
    ("classes.json", '["wall", "sky"]', {1: "wall", 2: "sky"}),
    ("classes.txt", "0\tunlabeled\n7\ttree\n2\troad\n", {2: "road", 7: "tree"}),
    ("classes.txt", "wall\nsky\n", {1: "wall", 2: "sky"}),
    ("objectInfo150.csv", "Idx,Ratio,Train,Val,Name\n1,0.1,1,1,wall\n2,0.09,1,1,building;edifice\n",
     {1: "wall", 2: "building"}),
])
def test_segmentation_lists_map_mask_ids_to_names(tmp_path, name, text, expected):
    from catlip.evaluate.common.class_files import read_mask_ids

    path = tmp_path / name
    path.write_text(text)
    assert read_mask_ids(path, max_classes=254) == expected


def test_segmentation_list_failures_name_the_file(tmp_path):
    from catlip.evaluate.common.class_files import read_mask_ids

    cases = {"empty.txt": ("0\tunlabeled\n", "names no classes"),
             "bad.json": ('{"wall": 1}', "keys must be mask ids"),
             "big.txt": ("".join(f"c{i}\n" for i in range(300)), "at most 254 classes")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=message):
            read_mask_ids(tmp_path / name, max_classes=254)
