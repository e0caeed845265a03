"""The `words` label source: word tokens of hand-worked captions, lemmas, stop-words, vocabulary and class mapper."""

from __future__ import annotations

import pytest

from catlip.labels import get_extractor
from catlip.labels.words import Lemmatizer, WordExtractor, split_words


@pytest.mark.parametrize("caption,words", [
    ("Two men ride bicycles past a church.", ["two", "men", "ride", "bicycles", "past", "a", "church"]),
    # clitics go, negations stay whole, plural possessive loses its apostrophe, repeats count once
    ("The dog's ball isn't red; the dogs' bowls", ["the", "dog", "ball", "isn't", "red", "dogs", "bowls"]),
    # HTML entities and tags, URLs and numbers are not words
    ("Dogs &amp; cats at http://x.com/a <b>now</b>, 2 of 3", ["dogs", "cats", "at", "now", "of"]),
    ("a T-shirt at 5 o'clock in a café", ["a", "t-shirt", "at", "o'clock", "in", "café"]),
    ("DOG dog Dog", ["dog"]),
    ("", []),
    ("\x00\x01 ... 42 !!", []),
])
def test_words_of_hand_worked_captions(caption, words):
    assert WordExtractor().extract(caption) == words


def test_stopwords_and_lemmas():
    assert WordExtractor(stopwords=True).extract("a dog on the beach with its owner") == ["dog", "beach", "owner"]
    lemma = WordExtractor(lemmatize=True)
    # nouns by morphy (exception lists first), a plural lemma by its singular, verbs by the plain rules
    assert lemma.extract("Two men ride bicycles; the dogs sit, the children jumped") == [
        "two", "man", "ride", "bicycle", "the", "dog", "sit", "child", "jump"]
    assert WordExtractor(lemmatize=True, stopwords=True).extract("A man is sitting on a bench with his glasses") == [
        "man", "sitting", "bench", "glass"]


def test_lemmatizer_leaves_function_and_unknown_words_alone():
    lem = Lemmatizer()
    assert [lem(w) for w in ("was", "has", "is", "geese", "hurries", "tried", "qwzxs", "people")] == [
        "was", "has", "is", "goose", "hurry", "try", "qwzxs", "people"]


def test_extractor_contract():
    ex = get_extractor("words", lemmatize=True)
    assert ex.options == {"lemmatize": True, "stopwords": False} and ex.name("dog") == "dog"
    for junk in (None, 123, "x" * 100_000, "\ud800 lone surrogate"):
        assert isinstance(ex.extract(junk), list)
    with pytest.raises(TypeError):
        get_extractor("words", proper_nouns=True)
    assert split_words("Hot-dog STAND") == ["hot-dog", "stand"]


def test_words_vocabulary_records_its_source_and_round_trips(tmp_path):
    from catlip.labels.vocab import Vocabulary, build_vocabulary

    src = tmp_path / "captions.txt"
    src.write_text("a dog on a beach\ntwo dogs and a cat\nthe cat sleeps\n")
    vocab, _ = build_vocabulary([src], "words", {"stopwords": True}, min_count=1)
    assert vocab.labels == "words" and vocab.method == "words"
    assert vocab.options == {"lemmatize": False, "stopwords": True}
    assert vocab.keys[0] == "cat" and set(vocab.keys) == {"dog", "beach", "two", "dogs", "cat", "sleeps"}
    assert vocab.names == vocab.keys and vocab.glosses == [""] * len(vocab)
    again = Vocabulary.load(vocab.save(tmp_path / "v.json"))
    assert again.labels == "words" and again.hash == vocab.hash and again.extractor().options == vocab.options


def _words_vocab(keys):
    from catlip.labels.vocab import Vocabulary

    n = len(keys)
    return Vocabulary(labels="words", options={"lemmatize": False, "stopwords": False}, keys=list(keys),
                      counts=[100 - i for i in range(n)], names=list(keys), glosses=[""] * n)


def test_words_mapper_exact_then_lemma():
    from catlip.evaluate.common.datasets import ClassList
    from catlip.evaluate.classify.transfer_init import class_mapper, map_classes
    from catlip.labels.mapping import LEMMA_SCORE, WordMapper

    vocab = _words_vocab(["dog", "cats", "kitchen", "restaurant", "men", "the"])
    assert isinstance(class_mapper(vocab), WordMapper)
    classes = ClassList(["dog", "cat", "restaurant_kitchen", "qwzx", "Dogs", "man", "the kitchen"],
                        ["n02084071", None, None, None, None, None, None])
    report = map_classes(classes, vocab)
    got = [(m.kind, m.keys, m.similarity) for m in report.classes]
    assert got == [
        ("exact", ["dog"], 1.0),                      # the word itself (the wnid plays no part)
        ("similar", ["cats"], LEMMA_SCORE),           # cat = lemma of "cats"
        ("averaged", ["restaurant", "kitchen"], None),
        ("random", [], None),
        ("similar", ["dog"], LEMMA_SCORE),            # "dogs" is not a key, its lemma is
        ("similar", ["men"], LEMMA_SCORE),            # men -> man (exception list)
        ("exact", ["kitchen"], 1.0),                  # stop-words of a several-word name do not count
    ]
    assert report.labels == "words" and report.unmapped == ["qwzx"]
    assert report.classes[2].rows == [3, 2]
    # alpha above the lemma score: exact words only
    strict = map_classes(ClassList(["dog", "cat"]), vocab, alpha=1.0)
    assert [m.kind for m in strict.classes] == ["exact", "random"]


def test_words_vocabulary_never_takes_the_wordnet_path():
    """A words vocabulary that happens to hold a synset-looking key is still mapped word by word."""
    from catlip.evaluate.common.datasets import ClassList
    from catlip.evaluate.classify.transfer_init import map_classes

    vocab = _words_vocab(["n02084071", "puppy"])
    report = map_classes(ClassList(["dog", "puppies"], ["n02084071", None]), vocab)
    assert [m.kind for m in report.classes] == ["random", "similar"]
    assert report.classes[1].keys == ["puppy"]
