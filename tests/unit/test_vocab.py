"""Vocabulary: counting, pruning, deterministic parallel build, save/load validation, full BPE table."""

import json

import pytest

from catlip.errors import VocabularyError
from catlip.labels.vocab import FORMAT_VERSION, Vocabulary, build_vocabulary, prune

DOG, CAT, MAN, BALL = "n02084071", "n02121620", "n10287213", "n02778669"


@pytest.fixture()
def caption_files(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("a dog and a dog\na cat\na man with a dog\n\n")
    b = tmp_path / "b.jsonl"
    b.write_text('{"caption": "a dog with a ball"}\n{"captions": ["a cat", "two cats and a man"]}\n{oops\n')
    return [a, b]


def test_document_frequency_counts_a_key_once_per_caption(caption_files):
    vocab, counts = build_vocabulary(caption_files, min_count=1)
    assert dict(zip(vocab.keys, vocab.counts)) == {DOG: 3, CAT: 3, MAN: 2, BALL: 1}
    assert vocab.keys == [DOG, CAT, MAN, BALL]  # count desc, then key
    assert vocab.num_captions == 6 and counts.read.skipped == 1
    assert vocab.stats["captions_with_label"] == 6 and vocab.stats["captions_with_kept_label"] == 6
    assert vocab.names == ["dog", "cat", "man", "ball"]
    assert vocab.glosses[0].startswith("a member of the genus Canis")


def test_pruning_min_count_and_top_k(caption_files):
    vocab, _ = build_vocabulary(caption_files, min_count=2)
    assert vocab.keys == [DOG, CAT, MAN]
    vocab, _ = build_vocabulary(caption_files, min_count=1, top_k=1)
    assert vocab.keys == [DOG]
    assert vocab.stats["captions_with_kept_label"] == 3  # of 6 captions, 3 mention a dog
    from collections import Counter
    assert prune(Counter({"b": 2, "a": 2, "c": 5, "d": 1}), min_count=2) == [("c", 5), ("a", 2), ("b", 2)]


def test_workers_give_identical_file(caption_files, tmp_path):
    files = caption_files * 2
    one, _ = build_vocabulary(files, min_count=1, workers=1)
    two, _ = build_vocabulary(files, min_count=1, workers=2)
    one.save(tmp_path / "one.json")
    two.save(tmp_path / "two.json")
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()
    assert one.counts[0] == 6


def test_save_load_roundtrip_encode_and_hash(caption_files, tmp_path):
    vocab, _ = build_vocabulary(caption_files, min_count=1)
    path = vocab.save(tmp_path / "sub" / "vocab.json")
    loaded = Vocabulary.load(path)
    assert loaded.keys == vocab.keys and loaded.counts == vocab.counts and loaded.hash == vocab.hash
    assert len(loaded) == 4 and loaded.id(CAT) == 1 and loaded.id("n00000000") is None
    assert loaded.encode([MAN, "unknown", DOG]) == [2, 0]
    assert len(vocab.hash) == 16 and int(vocab.hash, 16) >= 0
    other, _ = build_vocabulary(caption_files, min_count=2)
    assert other.hash != vocab.hash
    assert loaded.extractor().extract("a dog") == [DOG]
    assert not list(tmp_path.joinpath("sub").glob("*.tmp"))  # atomic write left no temp file


def test_load_rejects_corrupt_and_foreign_files(tmp_path, caption_files):
    vocab, _ = build_vocabulary(caption_files, min_count=1)
    good = json.loads(json.dumps(vocab.to_json()))
    cases = {
        "truncated.json": vocab.save(tmp_path / "v.json").read_text()[:100],
        "version.json": json.dumps({**good, "format_version": FORMAT_VERSION + 1}),
        "list.json": "[1, 2]",
        "missing.json": json.dumps({k: v for k, v in good.items() if k != "keys"}),
        "lengths.json": json.dumps({**good, "counts": good["counts"][:-1]}),
        "edited.json": json.dumps({**good, "keys": list(reversed(good["keys"]))}),
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(VocabularyError):
            Vocabulary.load(tmp_path / name)
    with pytest.raises(VocabularyError, match="format_version"):
        Vocabulary.load(tmp_path / "version.json")
    with pytest.raises(VocabularyError, match="not found"):
        Vocabulary.load(tmp_path / "absent.json")


def test_full_bpe_ids_equal_bpe_ids():
    vocab = Vocabulary.full_bpe()
    assert len(vocab) == 49408 and vocab.method == "superclass"
    ex = vocab.extractor()
    keys = ex.extract("a photo of a dog")
    assert vocab.encode(keys) == [int(k) for k in keys]
    assert vocab.names[1929] == ex.name("1929")


def test_superclass_vocabulary(caption_files):
    vocab, _ = build_vocabulary(caption_files, "superclass", {"stopwords": True}, min_count=2)
    assert {vocab.names[i] for i in range(len(vocab))} == {"dog", "cat", "man"}
