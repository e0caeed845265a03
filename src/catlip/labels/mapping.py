"""Class mappers: a target class name (and its WordNet id, if the class list gives one) → vocabulary keys.

Transfer Init (CatLIP Sec. 4.2) and head zero-shot read the rows of the pre-trained head that a target class maps
to. Which rows depends only on the label source the vocabulary was built with, so each source in
``catlip.labels.registry`` names its mapper here; every mapper returns the same ``CoverageReport``:

* ``SynsetMapper`` (``synsets``, WordNet synset keys): ``exact`` when the class's wnid, its name's first noun sense
  (after morphy) or any other sense of the name is in the vocabulary; else ``similar``: the vocabulary synset of
  highest path similarity (>= alpha) to the class's synset; else, for names of several words ("restaurant
  kitchen"), ``averaged``: the nouns the synset extractor finds in the name, each mapped exactly or by
  similarity, rows averaged; else ``random``. The paper gives no value for alpha; we default to 0.5, i.e. the
  class's synset or a direct hypernym/hyponym (path similarity 1/(d+1) >= 0.5 means distance <= 1).
* ``SubwordMapper`` (``bpe``, CLIP BPE ids): the rows of the name's BPE tokens, averaged when there are several.
* ``WordMapper`` (``words``, word keys): each word of the name by exact match (score 1.0), else by lemma (a
  vocabulary word with the same lemma, score ``LEMMA_SCORE`` = 0.9, used when >= alpha); a name of several words
  averages the rows of its words (stop-words left out).

Unmapped classes keep the random initialisation and are listed in the coverage report, never dropped. Pure
Python (no torch): the report is plain data; ``catlip.evaluate.classify.transfer_init`` turns it into head rows.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("exact", "similar", "averaged", "random")
DEFAULT_ALPHA = 0.5
LEMMA_SCORE = 0.9  # a word sharing only its lemma with a vocabulary word ("dogs" for "dog")


@dataclass
class ClassMapping:
    index: int
    name: str
    wnid: str | None
    kind: str  # one of KINDS
    keys: list[str] = field(default_factory=list)  # vocabulary keys whose head rows are used
    rows: list[int] = field(default_factory=list)  # their vocabulary ids
    similarity: float | None = None  # score of a "similar" match (synsets: path similarity; words: LEMMA_SCORE)
    detail: str = ""


@dataclass
class CoverageReport:
    dataset: str
    vocab_method: str  # the vocabulary's `method` tag (catlip | superclass | words), kept for old result files
    alpha: float
    classes: list[ClassMapping]
    labels: str = ""  # the vocabulary's label source (synsets | bpe | words)

    @property
    def counts(self) -> dict[str, int]:
        return {k: sum(m.kind == k for m in self.classes) for k in KINDS}

    @property
    def unmapped(self) -> list[str]:
        return [m.name for m in self.classes if m.kind == "random"]

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "vocab_method": self.vocab_method, "labels": self.labels,
                "alpha": self.alpha, "num_classes": len(self.classes), "counts": self.counts,
                "unmapped": self.unmapped, "classes": [asdict(m) for m in self.classes]}

    def summary(self) -> str:
        c, n = self.counts, len(self.classes)
        parts = ", ".join(f"{k} {c[k]}" for k in KINDS)
        source = f", {self.labels} labels" if self.labels else ""
        line = f"Transfer Init coverage of {self.dataset or 'target'} ({n} classes{source}, alpha={self.alpha}): {parts}"
        if self.unmapped:
            shown = ", ".join(self.unmapped[:20]) + (f", … (+{len(self.unmapped) - 20})" if len(self.unmapped) > 20 else "")
            line += f"\n  random init (unmapped): {shown}"
        return line


def clean_name(name: str, lower: bool = True) -> str:
    """'/r/restaurant_kitchen' -> 'restaurant kitchen'; 'sea lion (animal)' -> 'sea lion'."""
    name = re.sub(r"^(/[a-z]/)+", "", name.strip())
    name = name.lower() if lower else name
    name = re.sub(r"\([^)]*\)", " ", name).replace("/", " ").replace("_", " ").replace("-", " ")
    return " ".join(name.split())


class Mapper:
    """Maps class names (and wnids) to vocabulary entries; built once per vocabulary.

    ``vocab``: anything with ``keys``, ``id(key)``, ``options`` and optionally ``extractor()`` (a
    ``catlip.labels.vocab.Vocabulary``). Subclasses implement ``map_class(index, name, wnid)``.
    """

    source = ""

    def __init__(self, vocab: Any, alpha: float = DEFAULT_ALPHA, wordnet: Any = None):
        self.vocab = vocab
        self.alpha = alpha
        self._wordnet = wordnet
        self._extractor = None

    def map(self, classes: Any, dataset: str = "") -> CoverageReport:
        """``classes``: anything with ``names`` and ``wnids`` (``catlip.evaluate.common.datasets.ClassList``)."""
        out = [self.map_class(i, name, wnid) for i, (name, wnid) in enumerate(zip(classes.names, classes.wnids))]
        tag = getattr(self.vocab, "method", self.source)
        return CoverageReport(dataset, tag, self.alpha, out, getattr(self.vocab, "labels", self.source))

    def map_class(self, index: int, name: str, wnid: str | None) -> ClassMapping:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def wordnet(self):
        if self._wordnet is None:
            from catlip.labels.wordnet import get_wordnet

            self._wordnet = get_wordnet()
        return self._wordnet

    def _row(self, key: str) -> int | None:
        return self.vocab.id(key)

    def _extract(self, text: str) -> list[str]:
        if self._extractor is None:  # the extractor the vocabulary was built with (same options)
            make = getattr(self.vocab, "extractor", None)
            if callable(make):
                self._extractor = make()
            else:
                from catlip.labels import get_extractor

                self._extractor = get_extractor(self.source, **dict(getattr(self.vocab, "options", {})))
        return self._extractor.extract(text)


# ------------------------------------------------------------------------------------------ synsets


class SynsetMapper(Mapper):
    """WordNet synset vocabularies: exact sense, else nearest synset by path similarity, else averaged nouns."""

    source = "synsets"

    def __init__(self, vocab: Any, alpha: float = DEFAULT_ALPHA, wordnet: Any = None):
        super().__init__(vocab, alpha, wordnet)
        self._index = None

    def _senses(self, phrase: str) -> list[str]:
        senses: list[str] = []
        for base in self.wordnet.morphy(phrase) or []:
            senses += [s for s in self.wordnet.noun_synsets(base) if s not in senses]
        return senses

    def _similar(self, target: str) -> tuple[str, float] | None:
        if self._index is None:
            from catlip.labels.corpus_index import CorpusIndex

            counts = getattr(self.vocab, "counts", None)
            keys = list(self.vocab.keys)
            if isinstance(counts, dict):
                counts = {k: int(counts.get(k, 0)) for k in keys}
            elif counts is not None and len(counts) == len(keys):
                counts = dict(zip(keys, map(int, counts)))
            else:
                counts = dict.fromkeys(keys, 0)
            self._index = CorpusIndex(counts, self._safe_paths)
        try:
            match = self._index.best_match(target)
        except KeyError:
            return None
        if match is None or match.similarity < self.alpha - 1e-9:
            return None
        return match.key, match.similarity

    def _safe_paths(self, key: str) -> list[list[str]]:
        try:
            return self.wordnet.hypernym_paths(key)
        except KeyError:  # a vocabulary key WordNet does not know (e.g. a hand-made test entry)
            return [[key]]

    def _map_word(self, phrase: str, wnid: str | None = None) -> tuple[str, list[str], float | None, str]:
        """(kind, keys, similarity, detail) for one phrase; kind is exact, similar or random."""
        if wnid and self._row(wnid) is not None:
            return "exact", [wnid], None, "wnid in vocabulary"
        senses = self._senses(phrase)
        present = [s for s in senses if self._row(s) is not None]
        if present:
            which = "first noun sense" if present[0] == senses[0] else f"noun sense #{senses.index(present[0]) + 1}"
            return "exact", [present[0]], None, which
        target = wnid or (senses[0] if senses else None)
        if target:
            hit = self._similar(target)
            if hit:
                return "similar", [hit[0]], hit[1], f"nearest vocabulary synset to {target}"
        return "random", [], None, "not a WordNet noun" if not target else f"nothing within similarity {self.alpha}"

    def map_class(self, index: int, name: str, wnid: str | None) -> ClassMapping:
        phrase = clean_name(name)
        kind, keys, sim, detail = self._map_word(phrase, wnid)
        if kind != "random" or len(phrase.split()) < 2:
            return ClassMapping(index, name, wnid, kind, keys, [self._row(k) for k in keys], sim, detail)
        # Several words and no synset for the whole name: the nouns the synset extractor finds in the name
        # (part-of-speech tagged, collocations first, as the paper labels captions) are mapped one by one and
        # their rows averaged ("restaurant kitchen"); adjectives ("European", "black") never contribute.
        tried = set(self._senses(phrase)) | {wnid}
        nouns = [k for k in self._extract(clean_name(name, lower=False)) if k not in tried]
        mapped, missing = [], []
        for key in nouns:
            hit = key if self._row(key) is not None else (self._similar(key) or (None,))[0]
            (mapped if hit else missing).append((key, hit))
        if not mapped:
            why = "no noun of the name maps" if nouns else detail
            return ClassMapping(index, name, wnid, "random", [], [], None, why)
        keys = list(dict.fromkeys(hit for _, hit in mapped))
        detail = "nouns " + ", ".join(self._name(k) for k, _ in mapped)
        if missing:
            detail += "; unmapped nouns " + ", ".join(self._name(k) for k, _ in missing)
        return ClassMapping(index, name, wnid, "averaged", keys, [self._row(k) for k in keys], None, detail)

    def _name(self, key: str) -> str:
        try:
            return self.wordnet.name(key)
        except KeyError:
            return key


# ------------------------------------------------------------------------------------------ bpe


class SubwordMapper(Mapper):
    """CLIP BPE vocabularies: the rows of the name's BPE tokens, averaged when there are several."""

    source = "bpe"

    def map_class(self, index: int, name: str, wnid: str | None) -> ClassMapping:
        tokens = self._extract(clean_name(name))
        keys = [t for t in tokens if self._row(t) is not None]
        missing = [t for t in tokens if self._row(t) is None]
        if not keys:
            return ClassMapping(index, name, wnid, "random", [], [], None, "no BPE token in vocabulary")
        kind = "exact" if len(tokens) == 1 else "averaged"
        detail = f"{len(keys)} of {len(tokens)} BPE tokens" + (f"; missing {missing}" if missing else "")
        return ClassMapping(index, name, wnid, kind, keys, [self._row(k) for k in keys], None, detail)


# ------------------------------------------------------------------------------------------ words


class WordMapper(Mapper):
    """Word vocabularies: exact word, else a vocabulary word with the same lemma; several words averaged."""

    source = "words"

    def __init__(self, vocab: Any, alpha: float = DEFAULT_ALPHA, wordnet: Any = None):
        super().__init__(vocab, alpha, wordnet)
        self._by_lemma: dict[str, list[str]] | None = None
        self._lemmatizer = None

    def _lemma(self, word: str) -> str:
        if self._lemmatizer is None:
            from catlip.labels.words import Lemmatizer

            self._lemmatizer = Lemmatizer(self._wordnet)
        return self._lemmatizer(word)

    def _lemma_keys(self, word: str) -> list[str]:
        """Vocabulary words whose lemma is the lemma of ``word`` (most frequent first: vocabulary order)."""
        if self._by_lemma is None:
            self._by_lemma = {}
            for key in self.vocab.keys:
                self._by_lemma.setdefault(self._lemma(key), []).append(key)
        return self._by_lemma.get(self._lemma(word), [])

    def match(self, word: str) -> tuple[str, float] | None:
        """(key, score) of one word: exact 1.0, else same lemma LEMMA_SCORE (when >= alpha), else None."""
        if self._row(word) is not None:
            return word, 1.0
        if LEMMA_SCORE >= self.alpha - 1e-9:
            hits = [k for k in self._lemma_keys(word) if self._row(k) is not None]
            if hits:
                return hits[0], LEMMA_SCORE
        return None

    def map_class(self, index: int, name: str, wnid: str | None) -> ClassMapping:
        from catlip.labels.stopwords import STOPWORDS
        from catlip.labels.words import split_words

        words = split_words(clean_name(name))
        if len(words) > 1:
            words = [w for w in words if w not in STOPWORDS] or words
        if not words:
            return ClassMapping(index, name, wnid, "random", [], [], None, "no word in the name")
        if len(words) == 1:
            hit = self.match(words[0])
            if hit is None:
                return ClassMapping(index, name, wnid, "random", [], [], None, f"{words[0]!r} not in vocabulary")
            key, score = hit
            if score == 1.0:
                return ClassMapping(index, name, wnid, "exact", [key], [self._row(key)], 1.0, "word")
            return ClassMapping(index, name, wnid, "similar", [key], [self._row(key)], score,
                                f"same lemma as {words[0]!r}")
        hits = [(w, self.match(w)) for w in words]
        found = [(w, h) for w, h in hits if h is not None]
        if not found:
            return ClassMapping(index, name, wnid, "random", [], [], None, "no word of the name in vocabulary")
        keys = list(dict.fromkeys(h[0] for _, h in found))
        detail = "words " + ", ".join(h[0] if h[1] == 1.0 else f"{h[0]} (lemma of {w})" for w, h in found)
        missing = [w for w, h in hits if h is None]
        if missing:
            detail += "; unmapped words " + ", ".join(missing)
        return ClassMapping(index, name, wnid, "averaged", keys, [self._row(k) for k in keys], None, detail)
