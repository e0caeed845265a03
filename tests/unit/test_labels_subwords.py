"""SuperClass extractor: our BPE encoder reproduces open_clip's SimpleTokenizer id for id."""

import math

import pytest

from catlip.labels import get_extractor
from catlip.labels.subwords import VOCAB_SIZE, get_bpe, idf

ODD = ["A photo of a child eating an ice cream", "", "   ", "Héllo wörld &amp;amp; café", "<start_of_text> hi",
       "猫が座っている 🐱🐶🎉", "don't it's we'll 3.14159 1,000,000", "ÃƒÂ© mojibake Ã©", "\x00\x01 ctrl \t\n tabs",
       "UPPER lower MiXeD", "emoji 👍🏽 with skin tone", "Кошка сидит на окне", "x" * 3000,
       "<b>html</b> &lt;tag&gt; &#39;quoted&#39;", "under_score snake_case", "naïve résumé coöperate"]


@pytest.fixture(scope="module")
def reference():
    tokenizer = pytest.importorskip("open_clip.tokenizer")
    return tokenizer.SimpleTokenizer()


def test_ids_equal_open_clip_on_odd_text(reference):
    bpe, ex = get_bpe(), get_extractor("superclass")
    specials = {reference.sot_token_id, reference.eot_token_id}
    for text in ODD:
        assert bpe.encode(text) == reference.encode(text), text
        # the extractor's cached per-piece path: same ids, specials dropped, first 75 kept
        assert ex.encode_ids(text) == [i for i in reference.encode(text) if i not in specials][:75], text
    assert bpe.sot_id == reference.sot_token_id and bpe.eot_id == reference.eot_token_id
    assert len(bpe.id_token) == VOCAB_SIZE == reference.vocab_size


def test_ids_equal_open_clip_on_flickr_captions(reference, shared_data):
    lines = (shared_data / "flickr8k" / "captions.token.txt").read_text(encoding="utf-8").splitlines()
    bpe, ex = get_bpe(), get_extractor("superclass")
    for line in lines[::20]:  # 2,023 real captions
        caption = line.split("\t", 1)[1]
        assert bpe.encode(caption) == reference.encode(caption), caption
        assert ex.encode_ids(caption) == reference.encode(caption)[:75], caption


def test_extract_unique_no_specials():
    ex = get_extractor("superclass")
    keys = ex.extract("a dog and a dog <start_of_text> <end_of_text>")
    assert len(keys) == len(set(keys))
    assert str(ex.bpe.sot_id) not in keys and str(ex.bpe.eot_id) not in keys
    assert [ex.name(k) for k in keys] == ["a", "dog", "and"]
    assert ex.extract("") == [] and ex.extract("   ") == []


def test_specials_in_text_never_become_labels():
    ex = get_extractor("superclass")
    bpe = ex.bpe
    assert bpe.sot_id in bpe.encode("<start_of_text>")  # open_clip maps the literal text to the special id
    assert str(bpe.sot_id) not in ex.extract("<start_of_text> a cat")


def test_stopwords_and_truncation():
    plain, filtered = get_extractor("superclass"), get_extractor("superclass", stopwords=True)
    assert [plain.name(k) for k in filtered.extract("a photo of the dog on a beach")] == ["photo", "dog", "beach"]
    long_caption = " ".join(f"w{i}" for i in range(200))
    assert len(plain.encode_ids(long_caption)) == 75  # what a 77-token CLIP text tower sees


def test_idf():
    assert idf(0, 10) == pytest.approx(math.log(11))
    assert idf(10, 10) == pytest.approx(0.0)
    assert idf(4, 99) == pytest.approx(math.log(20))
