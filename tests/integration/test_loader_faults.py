"""Issue #8 end to end: data that used to hang `catlip pretrain` forever now trains, or stops within one pass with
one line naming the cause; `catlip labels` / `vocab build` survive an unterminated quote and refuse 0 captions."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from catlip.cli import main
from shards import write_tar as _tar  # tests/shards.py

TINY = [
    "model.backbone=vit_tiny_patch16_224",
    "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}",
    "model.image_size=32", "data.batch_size=4", "data.num_workers=0", "data.vocab_min_count=1",
    "optim.steps=3", "optim.warmup_steps=1", "train.ckpt_every=100", "train.log_every=1", "train.progress=false",
    "train.tensorboard=false",
]
CAPTIONS = ["a dog on the grass", "a cat on a sofa", "a red car in the street", "a boat on the lake"]


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 32), ((50 * i) % 256, (90 * i) % 256, 200)).save(buf, "JPEG")
    return buf.getvalue()




@pytest.fixture
def pretrain(time_limit_s):
    """`pretrain(out, *overrides) -> exit code` of `catlip pretrain`, failing after 240 s instead of hanging."""
    def run(out: Path, *extra) -> int:
        with time_limit_s(240):
            return main(["pretrain", *TINY, f"train.output_dir={out}", *extra])
    return run


def _trained(run: Path, steps: int = 3) -> None:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    assert len(json.loads((run / "vocab.json").read_text())["keys"]) >= 4


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("catlip ")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    return errors[0]


# ---------------------------------------------------------------------- (a)-(c): used to hang, now train


def test_a_shards_with_the_caption_under_json_text_train(tmp_path, pretrain):
    members = []
    for i in range(16):
        members += [(f"{i:04d}.jpg", _jpeg(i)), (f"{i:04d}.json", json.dumps({"text": CAPTIONS[i % 4]}).encode())]
    _tar(tmp_path / "shard-000.tar", members[:16])
    _tar(tmp_path / "shard-001.tar", members[16:])
    run = tmp_path / "run"
    assert pretrain(run, f"data.train=['{tmp_path}/shard-{{000..001}}.tar']") == 0
    _trained(run)


def test_b_open_clip_csv_filepath_title_trains(tmp_path, pretrain):
    (tmp_path / "images").mkdir()
    lines = ["filepath,title"]
    for i in range(16):
        (tmp_path / "images" / f"{i}.jpg").write_bytes(_jpeg(i))
        lines.append(f"images/{i}.jpg,{CAPTIONS[i % 4]}")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    assert pretrain(run, f"data.train=[{tmp_path}/train.csv]", "data.image_column=filepath") == 0
    _trained(run)


def test_c_csv_paths_relative_to_the_working_directory_train(tmp_path, monkeypatch, pretrain):
    work = tmp_path / "work"
    (work / "data" / "img").mkdir(parents=True)
    (tmp_path / "lists").mkdir()
    lines = ["image,caption"]
    for i in range(16):
        (work / "data" / "img" / f"{i}.jpg").write_bytes(_jpeg(i))
        lines.append(f"data/img/{i}.jpg,{CAPTIONS[i % 4]}")  # relative to where training starts, not to the CSV
    (tmp_path / "lists" / "train.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(work)
    run = tmp_path / "run"
    assert pretrain(run, f"data.train=[{tmp_path}/lists/train.csv]") == 0
    _trained(run)


# ---------------------------------------------------------------------- really bad data: one line, rc 2


def test_all_images_corrupt_stops_within_one_pass_with_one_line(tmp_path, capsys, pretrain):
    members = []
    for i in range(16):
        members += [(f"{i:04d}.jpg", _jpeg(i)[:40]), (f"{i:04d}.txt", CAPTIONS[i % 4].encode())]
    shard = _tar(tmp_path / "shard-000.tar", members)
    assert pretrain(tmp_path / "run", f"data.train=[{shard}]") == 2
    line = _one_line_error(capsys)
    assert line.startswith("catlip pretrain: error: no usable training sample in a full pass over data.train "
                           "(16 samples read on this process, every one skipped: corrupt_image=16)")
    assert f"first: corrupt_image at {shard}:" in line and "looked for: " in line


def test_no_caption_field_stops_with_the_fields_tried(tmp_path, capsys, pretrain):
    members = []
    for i in range(16):
        members += [(f"{i:04d}.jpg", _jpeg(i)), (f"{i:04d}.json", json.dumps({"alt_text": CAPTIONS[i % 4]}).encode())]
    shard = _tar(tmp_path / "shard-000.tar", members)
    # CatLIP: the vocabulary stage finds no caption and says so (not "lower data.vocab_min_count")
    assert pretrain(tmp_path / "catlip", f"data.train=[{shard}]") == 2
    line = _one_line_error(capsys)
    assert "error: no captions found in 16 samples of data.train=" in line
    assert "no caption field (tried captions/caption/text/txt/title; fields present: alt_text)" in line
    assert "vocab_min_count" not in line
    # CLIP has no vocabulary stage: the loader stops after one pass with the same cause
    assert pretrain(tmp_path / "clip", f"data.train=[{shard}]", "method.name=clip", "model.text_width=32",
                     "model.text_layers=1", "model.text_heads=2", "model.embed_dim=32") == 2
    line = _one_line_error(capsys)
    assert "every one skipped: empty_caption=16" in line and "fields present: alt_text" in line
    # naming the field trains
    assert pretrain(tmp_path / "named", f"data.train=[{shard}]", "data.caption_column=alt_text") == 0


def test_missing_manifest_images_are_named(tmp_path, capsys, pretrain):
    (tmp_path / "train.csv").write_text("image,caption\n" + "".join(f"nowhere/{i}.jpg,{CAPTIONS[i % 4]}\n"
                                                                    for i in range(16)))
    assert pretrain(tmp_path / "run", f"data.train=[{tmp_path}/train.csv]") == 2
    line = _one_line_error(capsys)
    assert "every one skipped: missing_file=16" in line and f"first: missing_file at {tmp_path}/train.csv:" in line
    assert "not found (tried " in line and "image column 'image' (data.image_column)" in line


def test_zero_class_vocabulary_file_is_a_one_line_error(tmp_path, capsys, pretrain):
    from catlip.labels.vocab import Vocabulary

    Vocabulary(method="catlip", options={}, keys=[], counts=[], names=[], glosses=[]).save(tmp_path / "v.json")
    assert pretrain(tmp_path / "run", "data.synthetic_size=16", f"data.vocab={tmp_path}/v.json") == 2
    line = _one_line_error(capsys)
    assert f"data.vocab={tmp_path}/v.json has 0 classes" in line


# ---------------------------------------------------------------------- labels / vocab build


def _csv_with_stray_quote(path: Path) -> Path:
    rows = [f'{i}.jpg,"{CAPTIONS[i % 4]}' if i == 2 else f"{i}.jpg,{CAPTIONS[i % 4]} {i}" for i in range(10)]
    path.write_text("image,caption\n" + "\n".join(rows) + "\n")
    return path


def test_labels_and_vocab_build_skip_only_the_unterminated_line(tmp_path, capsys):
    src = _csv_with_stray_quote(tmp_path / "caps.csv")
    assert main(["labels", "--input", str(src), "--output", str(tmp_path / "l.jsonl"), "--column", "caption"]) == 0
    err = capsys.readouterr().err
    assert "labelled 9 captions; lines skipped: 1" in err and f"{src}:4: unterminated quote" in err
    assert len((tmp_path / "l.jsonl").read_text().splitlines()) == 9
    out = tmp_path / "vocab.json"
    assert main(["vocab", "build", "--input", str(src), "--min-count", "1", "--output", str(out)]) == 0
    assert "captions read:     9 (9 samples from 1 file(s))" in capsys.readouterr().out
    assert json.loads(out.read_text())["num_captions"] == 9


def test_training_reads_the_rows_after_an_unterminated_quote(tmp_path):
    src = _csv_with_stray_quote(tmp_path / "train.csv")
    for i in range(10):
        (tmp_path / f"{i}.jpg").write_bytes(_jpeg(i))
    from catlip.config import load_config
    from catlip.data import build_train_loader

    cfg = load_config(None, ["model.image_size=32", "data.batch_size=9", "data.num_workers=0",
                             f"data.train=[{src}]"])
    loader = build_train_loader(cfg, None, method_inputs=("image",))
    assert len(loader.dataset) == 9 and dict(loader.stats) == {"bad_manifest_row": 1}
    assert len(next(iter(loader))["image"]) == 9


def test_vocab_build_without_captions_fails_and_writes_nothing(tmp_path, capsys):
    shard = _tar(tmp_path / "s-000.tar", [("a.jpg", _jpeg(0)), ("a.json", b'{"url": "u"}'), ("b.jpg", _jpeg(1))])
    out = tmp_path / "vocab.json"
    assert main(["vocab", "build", "--input", str(shard), "--min-count", "1", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith(f"catlip vocab: error: no captions found in 1 file(s) ({shard}): 2 sample(s) without any "
                          f"caption (first: {shard}:a (members: jpg, json)); 1 skipped (first: {shard}:a.json: no "
                          "caption field (tried captions/caption/text/txt/title; fields present: url)); looked for: ")
    assert not out.exists()
    text = tmp_path / "caps.txt"
    text.write_text("a dog\n")
    assert main(["vocab", "build", "--input", str(text), "--min-count", "5", "--output", str(out)]) == 2
    assert "no label reaches --min-count 5 in 1 captions" in capsys.readouterr().err and not out.exists()
