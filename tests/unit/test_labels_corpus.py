"""Caption streaming from text, captions.token.txt, JSONL, CSV/TSV and webdataset tar shards; bad lines skipped."""

import json

import pytest

from catlip.errors import DataError
from catlip.labels.corpus import ReadStats, iter_captions
from shards import write_tar as _tar  # tests/shards.py




def test_plain_text_one_caption_per_line(tmp_path):
    p = tmp_path / "caps.txt"
    p.write_bytes(b"a dog\n\n   \na cat on a mat\r\nbad \xff\xfe bytes\nlast line no newline")
    stats = ReadStats()
    assert list(iter_captions(p, stats=stats)) == [["a dog"], ["a cat on a mat"], ["last line no newline"]]
    assert stats.skipped == 1 and stats.messages[0].startswith(f"{p}:5: invalid UTF-8")
    assert (stats.samples, stats.captions) == (3, 3)


def test_captions_token_format_groups_by_image(tmp_path):
    p = tmp_path / "captions.token.txt"
    p.write_text("img1.jpg#0\tA dog runs .\nimg1.jpg#1\tA dog plays .\nimg2.jpg#0\tA cat sleeps .\n")
    assert list(iter_captions(p)) == [["A dog runs .", "A dog plays ."], ["A cat sleeps ."]]


def test_jsonl_with_malformed_lines(tmp_path):
    p = tmp_path / "caps.jsonl"
    p.write_text('{"caption": "a dog"}\n{not json\n{"captions": ["one", "two"]}\n{"url": "x"}\n"a bare string"\n')
    stats = ReadStats()
    assert list(iter_captions(p, stats=stats)) == [["a dog"], ["one", "two"], ["a bare string"]]
    assert stats.skipped == 2
    assert stats.messages[0].startswith(f"{p}:2: malformed JSON")
    assert stats.messages[1].startswith(f"{p}:4: no caption field")
    assert list(iter_captions(p, column="url")) == [["x"], ["a bare string"]]


def test_csv_and_tsv_named_column(tmp_path):
    p = tmp_path / "m.csv"
    p.write_bytes(b'url,text\nu1,"a dog, running"\nu2,"multi\nline caption"\nu3\nu4,bad \xff\n')
    stats = ReadStats()
    assert list(iter_captions(p, column="text", stats=stats)) == [["a dog, running"], ["multi\nline caption"]]
    assert stats.skipped == 2 and ":5:" in stats.messages[0] and ":6:" in stats.messages[1]
    t = tmp_path / "m.tsv"
    t.write_text("caption\tid\na cat\t1\n")
    assert list(iter_captions(t, column="caption")) == [["a cat"]]
    with pytest.raises(DataError, match="no caption column"):
        list(iter_captions(p, column="nope"))


def test_webdataset_tar_members(tmp_path):
    p = _tar(tmp_path / "shard-000.tar", [
        ("s1.jpg", b"\xff\xd8"), ("s1.txt", b"first caption"),
        ("s1.json", json.dumps({"captions": ["first caption", "second caption"]}).encode()),
        ("s2.txt", b"only text"),
        ("d/s3.json", json.dumps({"caption": "single"}).encode()),
        ("s4.txt", b"bad \xff utf8"),
        ("s5.json", b"{broken"),
        ("s6.jpg", b"no caption at all"),
    ])
    stats = ReadStats()
    got = list(iter_captions(p, stats=stats))
    assert got == [["first caption", "second caption"], ["only text"], ["single"]]
    assert stats.skipped == 2
    assert stats.messages[0] == f"{p}:s4.txt: invalid UTF-8"


def test_truncated_tar_keeps_earlier_samples(tmp_path):
    p = _tar(tmp_path / "s.tar", [(f"k{i}.txt", f"caption {i}".encode()) for i in range(50)])
    data = p.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2 + 100])
    stats = ReadStats()
    got = list(iter_captions(cut, stats=stats))
    assert 10 < len(got) < 50 and got[0] == ["caption 0"]
    assert stats.skipped == 1 and "truncated tar" in stats.messages[0]


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        list(iter_captions(tmp_path / "nope.txt"))


def test_real_flickr_shard(shared_data):
    stats = ReadStats()
    samples = list(iter_captions(shared_data / "flickr8k" / "flickr8k-dev-000.tar", stats=stats))
    assert len(samples) == 1000 and all(len(s) == 5 for s in samples) and stats.skipped == 0
