"""Shard integrity (issue 19, item 1): a key or member given twice, a damaged tar header in the middle, compressed
shards and a shard listed twice, each checked in the training source (``open_sources``, what ``catlip pretrain``
reads) and in the vocabulary stage's caption reading (``expand_inputs`` + ``iter_captions``), which must agree."""

from __future__ import annotations

import gzip
import io
import logging
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from catlip.config import load_config
from catlip.data import formats
from catlip.data.sources import open_sources
from catlip.labels.corpus import ReadStats, expand_inputs, iter_captions
from shards import write_tar  # tests/shards.py


@pytest.fixture(autouse=True)
def shard_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("CATLIP_SHARD_CACHE", str(cache))
    return cache


def _png(n: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 4), (40 * n % 256, 7 * n % 256, 200)).save(buf, "PNG")
    return buf.getvalue()


def _sample(n: int, key: str | None = None) -> list[tuple[str, bytes]]:
    key = key or f"s{n}"
    return [(f"{key}.png", _png(n)), (f"{key}.txt", f"caption {n}".encode())]


def _expected(ns) -> list[tuple[bytes, list[str]]]:
    return [(_png(n), [f"caption {n}"]) for n in ns]


def _train(*specs: str | Path):
    """(image bytes, captions) of every sample of the training source over `specs`, and the index skips."""
    cfg = load_config(None, ["model.image_size=32", "data.num_workers=0"]).data
    cfg.train = [str(s) for s in specs]
    stats: Counter = Counter()
    source = open_sources(cfg, seed=0, stats=stats)
    return [source.read(i)[:2] for i in range(len(source))], stats, source


def _vocab(*inputs: str | Path) -> tuple[list[list[str]], ReadStats]:
    stats = ReadStats()
    caps = [c for f in expand_inputs([str(i) for i in inputs]) for c in iter_captions(f, stats=stats)]
    return caps, stats


# ---------------------------------------------------------------------- a key or a member given twice


def test_duplicate_key_keeps_the_first_sample_and_counts_the_second(tmp_path):
    members = _sample(0) + _sample(1) + _sample(9, key="s0") + _sample(2)
    shard = write_tar(tmp_path / "s-000.tar", members)
    samples, stats, source = _train(shard)
    assert samples == _expected([0, 1, 2])  # s0 keeps its own image and caption, not the later sample's
    assert stats == Counter({"duplicate_key": 1})
    assert source.examples["duplicate_key"].startswith(f"{shard}:s0: duplicate key: a second sample 's0'")
    caps, read = _vocab(shard)
    assert caps == [["caption 0"], ["caption 1"], ["caption 2"]]
    assert read.skipped == 1 and read.messages[0].startswith(f"{shard}:s0: duplicate key")


def test_duplicate_member_skips_the_ambiguous_sample(tmp_path):
    members = _sample(0) + _sample(1) + [("s1.txt", b"caption of another image")] + _sample(2)
    shard = write_tar(tmp_path / "s-000.tar", members)
    samples, stats, source = _train(shard)
    assert samples == _expected([0, 2])
    assert stats == Counter({"duplicate_member": 1})
    assert "duplicate member: .txt appears 2 times" in source.examples["duplicate_member"]
    caps, read = _vocab(shard)
    assert caps == [["caption 0"], ["caption 2"]]
    assert read.skipped == 1 and f"{shard}:s1: duplicate member" in read.messages[0]


def test_members_of_one_key_apart_are_still_one_sample(tmp_path):
    """Only a repeated extension makes a second sample: members of a key that are apart complete it."""
    a, b = _sample(0, key="a"), _sample(1, key="b")
    shard = write_tar(tmp_path / "s-000.tar", [a[0], b[0], b[1], a[1]])
    samples, stats, _ = _train(shard)
    assert samples == _expected([0, 1]) and stats == Counter()


# ---------------------------------------------------------------------- a damaged header in the middle


def _headers(shard: Path) -> dict[tuple[str, str], int]:
    """(key, ext) -> header offset of each member of an intact shard."""
    return {(sample.key, ext): offset - 512 for sample in formats.TarScan(shard)
            for ext, (_, offset, _) in sample.members.items()}


@pytest.mark.parametrize("key, ext, kept, dropped", [
    ("s2", "txt", [0, 1, 4, 5], ["s2", "s3"]),  # s2.txt belongs to s2 or s3 as far as the scan can tell
    ("s0", "png", [1, 2, 3, 4, 5], ["s0"]),  # the very first header
    ("s5", "txt", [0, 1, 2, 3, 4], ["s5"]),  # the last header, before the end-of-archive marker
])
def test_damaged_header_resyncs_and_counts_the_samples_next_to_it(tmp_path, caplog, key, ext, kept, dropped):
    shard = write_tar(tmp_path / "s-000.tar", [m for n in range(6) for m in _sample(n)])
    headers = _headers(shard)
    start = headers[key, ext]
    data = bytearray(shard.read_bytes())
    data[start:start + 512] = b"\xff" * 512
    shard.write_bytes(bytes(data))
    end = min([head for head in headers.values() if head > start], default=len(data))  # the next header, or EOF

    with caplog.at_level(logging.WARNING, logger="catlip.data"):
        samples, stats, source = _train(shard)
    assert samples == _expected(kept)
    assert stats == Counter({"damaged_shard": len(dropped)})
    assert f"damaged tar data at bytes {start:,}-{end:,} of s-000.tar" in source.examples["damaged_shard"]
    assert f"shard {shard}: skipped damaged_shard={len(dropped)}" in caplog.text

    caps, read = _vocab(shard)
    assert caps == [[f"caption {n}"] for n in kept]
    assert read.skipped == len(dropped)
    assert [m.split(": ")[0] for m in read.messages] == [f"{shard}:{k}" for k in dropped]


def test_zero_blocks_between_members_are_not_damage(tmp_path):
    """Two tars joined (`cat a.tar b.tar`): the end marker of the first is no damage, and the second is read."""
    first = write_tar(tmp_path / "a.tar", _sample(0) + _sample(1)).read_bytes()
    second = write_tar(tmp_path / "b.tar", _sample(2)).read_bytes()
    shard = tmp_path / "s-000.tar"
    shard.write_bytes(first + second)
    samples, stats, _ = _train(shard)
    assert samples == _expected([0, 1, 2]) and stats == Counter()


# ---------------------------------------------------------------------- compressed shards


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz"])
def test_compressed_shard_reads_the_same_samples_as_the_plain_one(tmp_path, shard_cache, suffix):
    plain = write_tar(tmp_path / "plain.tar", [m for n in range(4) for m in _sample(n)])
    shard = tmp_path / f"s-000{suffix}"
    shard.write_bytes(gzip.compress(plain.read_bytes()))
    samples, stats, _ = _train(shard)
    assert samples == _expected(range(4)) and stats == Counter()
    copies = sorted(shard_cache.glob("*-s-000.tar"))
    assert len(copies) == 1 and copies[0].read_bytes() == plain.read_bytes()  # decompressed once, into the cache
    caps, read = _vocab(shard)
    assert caps == [[f"caption {n}"] for n in range(4)] and read.skipped == 0
    assert sorted(shard_cache.glob("*-s-000.tar")) == copies  # the second reader reused the copy


def test_compressed_shard_cut_short_keeps_the_samples_before_the_cut(tmp_path):
    plain = write_tar(tmp_path / "plain.tar", [m for n in range(8) for m in _sample(n)]).read_bytes()
    cut = _headers(tmp_path / "plain.tar")["s5", "png"]
    first = gzip.compress(plain[:cut])  # two gzip members: the cut falls where the first one ends
    shard = tmp_path / "s-000.tar.gz"
    shard.write_bytes(first + gzip.compress(plain[cut:])[:5])
    samples, stats, source = _train(shard)
    assert samples == _expected(range(5)) and stats == Counter({"truncated_shard": 1})
    assert "gzip stream of s-000.tar.gz broken" in source.examples["truncated_shard"]
    caps, read = _vocab(shard)
    assert caps == [[f"caption {n}"] for n in range(5)] and read.skipped == 1
    assert read.messages[0].startswith(f"{shard}: unreadable tar (gzip stream of s-000.tar.gz broken")


# ---------------------------------------------------------------------- a shard listed twice


def test_shard_listed_twice_is_read_once_in_both_stages(tmp_path, caplog):
    write_tar(tmp_path / "d-000.tar", _sample(0) + _sample(1))
    write_tar(tmp_path / "d-001.tar", _sample(2))
    a, b = tmp_path / "d-000.tar", tmp_path / "d-001.tar"
    pattern = str(tmp_path / "d-{000..001}.tar")
    with caplog.at_level(logging.WARNING, logger="catlip.data"):
        samples, stats, _ = _train(a, a)
        assert samples == _expected([0, 1]) and stats == Counter()
        samples, _, _ = _train(pattern, tmp_path / "." / "d-001.tar")  # a pattern overlapping a plain path
        assert samples == _expected([0, 1, 2])
    assert f"data.train lists shard {a} twice" in caplog.text and f"data.train lists shard {b} twice" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="catlip.data"):
        caps, _ = _vocab(a, pattern, tmp_path / "." / "d-001.tar")
    assert caps == [["caption 0"], ["caption 1"], ["caption 2"]]
    assert f"input {a} is listed twice" in caplog.text and f"input {b} is listed twice" in caplog.text


def test_damaged_header_in_a_real_shard(shared_data, tmp_path):
    """Flickr8k dev shard (1,000 samples of jpg, txt, json): the .txt header of its 501st sample overwritten."""
    real = shared_data / "flickr8k" / "flickr8k-dev-000.tar"
    intact = list(formats.TarScan(real))
    shard = tmp_path / "flickr8k-dev-000.tar"
    data = bytearray(real.read_bytes())
    header = intact[500].members["txt"][1] - 512
    data[header:header + 512] = b"\xff" * 512
    shard.write_bytes(bytes(data))
    lost = {intact[500].key}  # the .json after the .txt is of the same sample: only that one is next to the damage
    _, stats, source = _train(shard)
    assert len(source) == 999 and stats == Counter({"damaged_shard": 1})
    assert [key for _, key, _ in source.parts[0].samples] == [s.key for s in intact if s.key not in lost]
    caps, read = _vocab(shard)
    assert len(caps) == 999 and all(len(c) == 5 for c in caps) and read.skipped == 1
