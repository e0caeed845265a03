"""Data faults of issue #8: one caption rule for vocabulary stage and loader, manifest paths, unterminated quotes,
a loader that stops (with the real cause) after one pass without a usable sample, the skip-share warning, and
errors that name the real cause instead of "lower data.vocab_min_count"."""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections import Counter

import pytest
from PIL import Image

from catlip.config import load_config
from catlip.data import build_train_loader
from catlip.data.loader import DataWarning
from catlip.data.sources import ManifestSource, TarShardSource, open_sources
from catlip.errors import CatlipError, DataError, VocabularyError
from catlip.data import formats
from catlip.labels.corpus import (ReadStats, caption_fields, captions_of, iter_captions, member_captions,
                                  read_table)
from shards import write_tar as _tar  # tests/shards.py


def _cfg(*overrides):
    return load_config(None, ["model.image_size=32", "data.batch_size=4", "data.num_workers=0", *overrides])


def _jpeg(i: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 16), (30 * i % 255, 80, 120)).save(buf, "JPEG")
    return buf.getvalue()




def _source_captions(source) -> list[list[str]]:
    return [source.captions(i) for i in range(len(source))]


# ---------------------------------------------------------------------- one caption rule


def test_caption_fields_order_and_column_setting():
    auto = ("captions", "caption", "text", "txt", "title")
    assert caption_fields() == caption_fields("") == caption_fields("auto") == caption_fields("caption") == auto
    assert caption_fields("title") == ("title", "captions", "caption", "text", "txt")
    assert caption_fields("alt_text") == ("alt_text",)  # a name outside the list is used alone
    assert captions_of({"text": " a dog ", "url": "u"}) == ["a dog"]
    assert captions_of({"captions": ["", "  "], "title": "a cat"}) == ["a cat"]  # blank fields fall through
    assert captions_of({"url": "u"}) is None and captions_of({"caption": "x"}, "alt_text") is None


def test_member_captions_json_wins_then_text_lines_and_problems():
    assert member_captions({"txt": b"one\ntwo\n", "json": b'{"text": "from json"}'}) == (["from json"], [])
    assert member_captions({"txt": b"one\n\ntwo\n", "json": b'{"url": "u"}'}) == (["one", "two"], [])
    caps, problems = member_captions({"json": b'{"url": "u", "key": "0"}'})
    assert caps == [] and problems[0][0] == "json" and "fields present: url, key" in problems[0][1]
    caps, problems = member_captions({"txt": b"bad \xff", "json": b"{oops"})
    assert caps == [] and [p[1].split(" ")[0] for p in problems] == ["invalid", "malformed"]


@pytest.mark.parametrize("field", ["captions", "caption", "text", "title"])
def test_shard_captions_are_the_same_for_vocabulary_stage_and_loader(tmp_path, field):
    value = ["a dog on grass", "a brown dog"] if field == "captions" else "a dog on grass"
    members = []
    for i in range(4):
        members += [(f"s{i}.jpg", _jpeg(i)), (f"s{i}.json", json.dumps({field: value, "url": "u"}).encode())]
    members += [("t.jpg", _jpeg()), ("t.txt", b"a cat\na grey cat\n")]
    shard = _tar(tmp_path / "s-000.tar", members)
    stats = Counter()
    source = TarShardSource(str(shard), image_exts=["jpg"], caption_exts=["txt", "json"], stats=stats,
                            cache_dir=tmp_path)
    want = [[value] if isinstance(value, str) else value] * 4 + [["a cat", "a grey cat"]]
    assert _source_captions(source) == list(iter_captions(shard)) == want


def test_open_clip_csv_columns_are_the_same_for_vocabulary_stage_and_loader(tmp_path):
    (tmp_path / "a.jpg").write_bytes(_jpeg())
    path = tmp_path / "train.csv"
    path.write_text("filepath,title\na.jpg,a dog on grass\na.jpg,  a red car \n")
    source = ManifestSource(str(path), image_column="filepath", caption_column="caption", stats=Counter())
    assert _source_captions(source) == list(iter_captions(path)) == list(iter_captions(path, column="caption"))
    assert _source_captions(source) == [["a dog on grass"], ["a red car"]]
    # a named column wins over the automatic order; an unknown column is an error naming the header
    path.write_text("filepath,caption,title\na.jpg,from caption,from title\n")
    assert ManifestSource(str(path), image_column="filepath", caption_column="title", stats=Counter()).captions(0) \
        == ["from title"] == next(iter_captions(path, column="title"))
    with pytest.raises(DataError, match=r"no caption column .*data.caption_column='alt'.*header: filepath, caption"):
        ManifestSource(str(path), image_column="filepath", caption_column="alt", stats=Counter())
    with pytest.raises(DataError, match=r"no image column 'image' \(data.image_column\); header: filepath"):
        ManifestSource(str(path), image_column="image", caption_column="caption", stats=Counter())


# ---------------------------------------------------------------------- unterminated quotes


def _rows_with_stray_quote(n=10, bad=3, quoted_after=False) -> str:
    lines = ["image,caption"]
    for i in range(n):
        if i == bad:
            lines.append(f'img{i}.jpg,"a dog running away')  # the quote never closes
        elif quoted_after and i % 2:
            lines.append(f'img{i}.jpg,"a cat, sitting {i}"')
        else:
            lines.append(f"img{i}.jpg,a cat sitting {i}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("quoted_after", [False, True])
@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_unterminated_quote_costs_one_line_in_caption_files(tmp_path, suffix, quoted_after):
    text = _rows_with_stray_quote(quoted_after=quoted_after)
    path = tmp_path / f"caps{suffix}"
    path.write_text(text.replace(",", "\t") if suffix == ".tsv" else text)
    stats = ReadStats()
    got = list(iter_captions(path, column="caption", stats=stats))
    want = [f"a cat, sitting {i}" if quoted_after and i % 2 else f"a cat sitting {i}" for i in range(10) if i != 3]
    assert got == [[c.replace(",", "\t") if suffix == ".tsv" else c] for c in want]  # 9 of 10: only line 5 lost
    assert stats.skipped == 1 and stats.messages[0].startswith(f"{path}:5: unterminated quote")
    assert "reading resumes on the next line" in stats.messages[0]


def test_read_table_multiline_fields_survive_and_long_open_quotes_are_cut(monkeypatch):
    bad = []
    text = 'a,b\n1,"two\nlines"\n2,"open\n3,x\n4,y\n5,z\n'
    monkeypatch.setattr(formats, "MAX_QUOTED_LINES", 3)  # the rule lives in the one reader
    rows = list(read_table(io.StringIO(text), ",", lambda n, why: bad.append((n, why))))
    assert rows == [(1, ["a", "b"]), (2, ["1", "two\nlines"]), (5, ["3", "x"]), (6, ["4", "y"]), (7, ["5", "z"])]
    assert len(bad) == 1 and bad[0][0] == 4 and "still open 3 lines later" in bad[0][1]


def test_unterminated_quote_in_a_manifest_loses_one_row(tmp_path):
    for i in range(10):
        (tmp_path / f"img{i}.jpg").write_bytes(_jpeg(i))
    path = tmp_path / "train.csv"
    path.write_text(_rows_with_stray_quote())
    stats = Counter()
    source = ManifestSource(str(path), image_column="image", caption_column="caption", stats=stats)
    assert len(source) == 9 and stats == Counter(bad_manifest_row=1)
    assert source.examples["bad_manifest_row"].startswith(f"{path}:5: unterminated quote")
    assert [source.captions(i) for i in range(len(source))][3:5] == [["a cat sitting 4"], ["a cat sitting 5"]]


# ---------------------------------------------------------------------- manifest paths


def test_manifest_paths_manifest_dir_then_working_dir_then_absolute(tmp_path, monkeypatch):
    data, work = tmp_path / "data", tmp_path / "work"
    (data / "sub").mkdir(parents=True)
    (work / "images").mkdir(parents=True)
    (data / "sub" / "a.jpg").write_bytes(_jpeg(1))  # relative to the manifest
    (work / "images" / "b.jpg").write_bytes(_jpeg(2))  # relative to the working directory (open_clip)
    (tmp_path / "c.jpg").write_bytes(_jpeg(3))  # absolute
    rows = [("sub/a.jpg", "one"), ("images/b.jpg", "two"), (str(tmp_path / "c.jpg"), "three"), ("gone.jpg", "four")]
    with open(data / "m.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image", "caption"), *rows])
    monkeypatch.chdir(work)
    source = ManifestSource(str(data / "m.csv"), image_column="image", caption_column="caption", stats=Counter())
    assert [source.read(i)[0] for i in range(3)] == [_jpeg(1), _jpeg(2), _jpeg(3)]
    with pytest.raises(FileNotFoundError, match=r"image 'gone.jpg' not found \(tried .*data/gone.jpg, .*work/gone.jpg"):
        source.read(3)


def test_loader_names_the_missing_file_in_its_first_error(tmp_path, time_limit_s):
    path = tmp_path / "m.csv"
    path.write_text("image,caption\n" + "".join(f"missing{i}.jpg,a dog {i}\n" for i in range(8)))
    loader = build_train_loader(_cfg(f"data.train=[{path}]"), None, method_inputs=("image",))
    with time_limit_s(60), pytest.raises(DataError) as err:
        next(iter(loader))
    msg = str(err.value)
    assert "\n" not in msg and "missing_file=8" in msg
    assert f"first: missing_file at {path}:" in msg and "image 'missing" in msg and "not found (tried" in msg
    assert "image column 'image' (data.image_column)" in msg and "header: image, caption" in msg


# ---------------------------------------------------------------------- one pass, then a clear stop


def test_all_corrupt_images_stop_after_one_pass_with_the_reasons(tmp_path, time_limit_s):
    members = []
    for i in range(12):
        members += [(f"s{i:02d}.jpg", b"not a jpeg " * 3), (f"s{i:02d}.txt", f"a dog {i}".encode())]
    shard = _tar(tmp_path / "bad-000.tar", members)
    loader = build_train_loader(_cfg(f"data.train=[{shard}]"), None, method_inputs=("image",))
    with time_limit_s(60), pytest.raises(DataError) as err:
        for _ in loader:
            pass
    msg = str(err.value)
    assert loader.samples_seen == 12 and loader.epoch == 0  # exactly one epoch (3 batches of 4)
    assert msg.startswith("no usable training sample in a full pass over data.train (12 samples read on this "
                          "process, every one skipped: corrupt_image=12)")
    assert f"first: corrupt_image at {shard}:s" in msg and "(members: jpg, txt)" in msg
    assert f"looked for: {shard}: image member .jpg/.jpeg/.png/.webp" in msg and "\n" not in msg


def test_json_without_caption_field_is_named_in_the_error(tmp_path, time_limit_s):
    members = []
    for i in range(8):
        members += [(f"s{i}.jpg", _jpeg(i)), (f"s{i}.json", json.dumps({"alt": f"a dog {i}", "url": "u"}).encode())]
    shard = _tar(tmp_path / "s-000.tar", members)
    loader = build_train_loader(_cfg(f"data.train=[{shard}]"), None, method_inputs=("image", "text"))
    with time_limit_s(60), pytest.raises(DataError) as err:
        next(iter(loader))
    msg = str(err.value)
    assert "every one skipped: empty_caption=8" in msg
    assert "no caption field (tried captions/caption/text/txt/title; fields present: alt, url)" in msg
    # naming the field makes it work, in the loader and in the vocabulary stage alike
    loader = build_train_loader(_cfg(f"data.train=[{shard}]", "data.caption_column=alt"), None,
                                method_inputs=("image", "text"))
    assert len(next(iter(loader))["image"]) == 4
    assert next(iter_captions(shard, column="alt")) == ["a dog 0"]


def test_nothing_indexed_is_an_error_that_says_what_was_looked_for(tmp_path):
    shard = _tar(tmp_path / "s-000.tar", [(f"s{i}.txt", b"a caption") for i in range(3)])
    with pytest.raises(DataError, match=r"no usable samples in data.train=.*no_image=3; first: no_image at "
                       r".*s-000.tar:s0 \(members: txt\); looked for: .*image member .jpg"):
        open_sources(_cfg(f"data.train=[{shard}]").data, seed=0, stats=Counter())


def test_mostly_skipped_source_warns_once(tmp_path):
    members = []
    for i in range(10):
        members.append((f"s{i}.jpg", _jpeg(i) if i < 3 else b"broken"))
        members.append((f"s{i}.txt", f"a dog {i}".encode()))
    shard = _tar(tmp_path / "s-000.tar", members)
    loader = build_train_loader(_cfg(f"data.train=[{shard}, synthetic]", "data.synthetic_size=30",
                                     "data.batch_size=8"), None, method_inputs=("image",))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        it = iter(loader)
        for _ in range(12):  # 2.4 epochs of 5 batches: judged once all 10 of its samples were read, warned once
            next(it)
    mine = [w for w in caught if issubclass(w.category, DataWarning)]
    assert len(mine) == 1
    text = str(mine[0].message)
    assert text.startswith(f"data source {shard}: about ") and "more than data.max_skip_fraction=0.5" in text
    assert "corrupt_image=" in text and "synthetic" not in text.split(";")[0]
    quiet = build_train_loader(_cfg(f"data.train=[{shard}, synthetic]", "data.synthetic_size=30",
                                    "data.batch_size=8", "data.max_skip_fraction=0.95"), None, method_inputs=("image",))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        next(iter(quiet))


# ---------------------------------------------------------------------- the real cause, not "lower min count"


def test_vocabulary_from_files_without_captions_names_the_cause(tmp_path):
    from catlip.labels.vocab import build_vocabulary

    shard = _tar(tmp_path / "s-000.tar", [("a.jpg", _jpeg()), ("a.json", b'{"url": "u"}'), ("b.jpg", _jpeg())])
    with pytest.raises(DataError, match=r"no captions found in 1 file\(s\) \(.*s-000.tar\): 2 sample\(s\) without "
                       r"any caption \(first: .*s-000.tar:a \(members: jpg, json\)\).*looked for: "):
        build_vocabulary([shard], min_count=1)


def test_run_vocabulary_errors_name_the_cause(tmp_path):
    from catlip.labels.vocab import Vocabulary
    from catlip.train.vocab_setup import build_run_vocabulary, resolve_vocabulary

    shard = _tar(tmp_path / "s-000.tar", [(f"s{i}.jpg", _jpeg()) for i in range(3)]
                 + [(f"s{i}.json", b'{"url": "u"}') for i in range(3)])
    with pytest.raises(DataError, match=r"no captions found in 3 samples of data.train=.*3 sample\(s\) without any "
                       r"caption \(first: .*s-000.tar:s0 \(members: jpg, json\); .json: no caption field \(tried "
                       r"captions/caption/text/txt/title; fields present: url\)\); looked for: "):
        build_run_vocabulary(_cfg(f"data.train=[{shard}]"), progress=False)
    with pytest.raises(CatlipError, match=r"no label reaches data.vocab_min_count=50 in the 120 training captions "
                       r"\(the most frequent, n\d{8}, is in \d+\)"):
        build_run_vocabulary(_cfg("data.synthetic_size=40", "data.vocab_min_count=50"), progress=False)
    empty = Vocabulary(method="catlip", options={}, keys=[], counts=[], names=[], glosses=[], num_captions=7)
    empty.save(tmp_path / "v.json")
    with pytest.raises(VocabularyError, match=r"data.vocab=.*v.json has 0 classes \(built from 7 captions\)"):
        resolve_vocabulary(_cfg(f"data.vocab={tmp_path}/v.json"), tmp_path / "run", resuming=False, build=True)


def test_a_megabyte_caption_is_tokenized_from_its_start():
    """CLIP/SigLIP/LiT batches: a 1 MB one-word caption must not stall a worker (BPE is quadratic in a word's
    length); the tokens are those of the caption's start, and ordinary captions are untouched."""
    import time

    import open_clip
    import torch

    from catlip.data.loader import CHARS_PER_TOKEN, tokenize_captions

    huge = "x" * 1_000_000
    t0 = time.perf_counter()
    tokens = tokenize_captions([huge, "a photo of a dog"], 16)
    assert time.perf_counter() - t0 < 5.0  # a hang guard (the whole caption took minutes), not a speed target
    assert torch.equal(tokens[0], open_clip.tokenize([huge[:16 * CHARS_PER_TOKEN]], context_length=16)[0])
    assert torch.equal(tokens[1], open_clip.tokenize(["a photo of a dog"], context_length=16)[0])
