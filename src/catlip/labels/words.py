"""Word-level labels: the caption's lower-cased words (the SuperClass paper's word-level tokenizer ablation).

A word is a run of letters, with inner hyphens or apostrophes kept ("t-shirt", "o'clock", "isn't"); numbers,
punctuation and the clitics 's, 're, 've, 'll, 'd, 'm ("the dog's ball" → the, dog, ball) are not words. The caption is first normalised like the synset extractor's input
(``catlip.labels.text.normalize``: HTML entities and tags, URLs and domain names, control characters removed).

Options:

* ``lemmatize`` (default False): reduce each word to a base form. Nouns by WordNet's morphy (exception lists
  first: "men" → man, "dogs" → dog; a plural that WordNet also lists as a lemma takes its singular, "glasses" →
  glass); other words by plain verb rules checked against WordNet's verb index ("sits" → sit, "jumped" → jump);
  stop-words and words WordNet does not know are kept as they are. Needs WordNet (``wordnet-base``).
* ``stopwords`` (default False): drop the English stop-words of ``catlip.labels.stopwords`` (checked on the
  word as written, before lemmatising).

Keys are the words themselves; ``name(key)`` is the key. Pure Python, never raises on any ``str``.
"""

from __future__ import annotations

import re

from catlip.labels.stopwords import STOPWORDS
from catlip.labels.text import normalize

_WORD = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)*")
_MAX_CACHE = 2_000_000  # cached lemmas before the cache is dropped (bounded memory on web-scale text)
# Plain rules for the inflections of non-nouns (detached, appended), tried in this order; a result must be a verb
# lemma WordNet knows.
_VERB_RULES = (("ies", "y"), ("es", "e"), ("es", ""), ("s", ""), ("ied", "y"), ("ed", "e"), ("ed", ""),
               ("ing", "e"), ("ing", ""))


_CLITIC = re.compile(r"'(?:s|re|ve|ll|d|m)$")


def split_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` in order (with repeats); numbers, punctuation and clitics dropped ("the
    dog's ball" → the, dog, ball; negations stay whole: "isn't")."""
    out = []
    for word in _WORD.findall(normalize(text).lower()):
        word = _CLITIC.sub("", word).strip("'-")
        if word:
            out.append(word)
    return out


class Lemmatizer:
    """``lemmatizer(word) -> base form`` (see the module docstring); cached per word."""

    def __init__(self, wordnet=None):
        if wordnet is None:
            from catlip.labels.wordnet import get_wordnet

            wordnet = get_wordnet()
        self.wordnet = wordnet
        self._cache: dict[str, str] = {}

    def __call__(self, word: str) -> str:
        lemma = self._cache.get(word)
        if lemma is None:
            lemma = self._lemma(word)
            if len(self._cache) >= _MAX_CACHE:
                self._cache.clear()
            self._cache[word] = lemma
        return lemma

    def _lemma(self, word: str) -> str:
        if word in STOPWORDS:  # function words stay as they are ("was" is not the plural of "wa")
            return word
        wn = self.wordnet
        bases = [b.replace("_", " ") for b in wn.morphy(word)]
        if bases:  # a noun WordNet knows: its exception-list or rule base form ("men" -> man, "dogs" -> dog)
            if bases[0] != word:
                return bases[0] if " " not in bases[0] else word
            singular = wn.singulars(word) if wn.is_plural(word) else []  # a plural listed as a lemma: "glasses"
            return singular[0] if singular and " " not in singular[0] else word
        if "VB" in wn.parts_of_speech(word):
            return word
        for old, new in _VERB_RULES:
            if word.endswith(old) and len(word) > len(old) + 1:
                stem = word[: -len(old)]
                for cand in (stem + new, stem[:-1] + new if len(stem) > 2 and stem[-1] == stem[-2] else None):
                    if cand and "VB" in wn.parts_of_speech(cand):
                        return cand
        return word


class WordExtractor:
    """``extract(caption) -> list[str]``: unique lower-cased (optionally lemmatised) words, first-occurrence order."""

    method = "words"

    def __init__(self, lemmatize: bool = False, stopwords: bool = False):
        self.lemmatize = bool(lemmatize)
        self.stopwords = bool(stopwords)
        self.options = {"lemmatize": self.lemmatize, "stopwords": self.stopwords}
        self._lemma = Lemmatizer() if self.lemmatize else None

    def words(self, caption: str) -> list[str]:
        """All words of ``caption`` with repeats, after stop-word removal and lemmatisation."""
        words = split_words(caption)
        if self.stopwords:
            words = [w for w in words if w not in STOPWORDS]
        if self._lemma is not None:
            words = [self._lemma(w) for w in words]
        return words

    def extract(self, caption: str) -> list[str]:
        if not isinstance(caption, str):
            return []
        try:
            return list(dict.fromkeys(self.words(caption)))
        except Exception:  # never raise on a caption: odd text yields no labels rather than a crash
            return []

    def name(self, key: str) -> str:
        return key
