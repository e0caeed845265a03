"""A small WordNet 3.0 reader for nouns, over the Debian `wordnet-base` files (format: wndb(5)).

Only `index.noun` and `noun.exc` are parsed up front (~0.2 s). Synset records are read on demand: in wndb the
synset offset *is* the byte offset of its line in `data.noun`, so one memory-mapped slice fetches a record. The
map is read-only and shared, so forked worker processes reuse it safely (no shared file position).
"""

from __future__ import annotations

import mmap
from collections import deque
from functools import lru_cache
from pathlib import Path

from catlip.labels import spelling as _spelling
from catlip.labels.resources import locate

# Noun detachment rules of WordNet's morphy(7), tried in this order.
_NOUN_RULES = (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
               ("men", "man"), ("ies", "y"))
_HYPERNYM_POINTERS = (b"@", b"@i")
_INSTANCE_POINTER = b"@i"
# Detachment rules of morphy(7) for verbs and adjectives (detached, appended, the inflection it undoes), used only
# to ask which classes a word has.
_VERB_FORMS = (("s", "", "VBZ"), ("ies", "y", "VBZ"), ("es", "e", "VBZ"), ("es", "", "VBZ"), ("ed", "e", "VBD"),
               ("ed", "", "VBD"), ("ing", "e", "VBG"), ("ing", "", "VBG"))
_ADJ_FORMS = (("er", "", "adj"), ("est", "", "adj"), ("er", "e", "adj"), ("est", "e", "adj"))
_EMPTY, _NOUN = frozenset(), frozenset({"noun"})
# Lexicographer files of visible things: animal, artifact, body, food, object, person, plant, substance.
_CONCRETE_LEXFILES = frozenset({5, 6, 8, 13, 17, 18, 20, 27})
_COLOR = "n04956594"  # color, colour, coloring, colouring: the visual attribute


def _variants(form: str) -> list[str]:
    """Spellings to try when `form` itself has no noun form (see catlip.labels.spelling)."""
    folded = _spelling.fold_accents(form)
    out = [folded] if folded != form else []
    out += _spelling.compound_forms(folded)
    out += _spelling.american(folded)
    return out


def key_of(offset: int) -> str:
    """The catlip/ImageNet key of a noun synset: "n" + 8-digit WordNet 3.0 offset."""
    return "n%08d" % offset


class WordNet:
    """Noun side of WordNet 3.0: morphology, lemma → synsets in sense order, lemmas, glosses and hypernyms."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else locate("wordnet")
        self._index = self._read_index(self.root / "index.noun")
        self._exceptions = self._read_exceptions(self.root / "noun.exc")
        with open(self.root / "data.noun", "rb") as fh:
            self._data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        # Longest multi-word lemma per first word, so collocation matching only tries plausible lengths.
        # and which second words can follow a first word (a cheap pre-check before trying any span).
        self.collocation_starts: dict[str, int] = {}
        self.collocation_next: dict[str, set[str]] = {}
        for lemma in self._index:
            if "_" in lemma:
                parts = lemma.split("_")
                if len(parts) > self.collocation_starts.get(parts[0], 1):
                    self.collocation_starts[parts[0]] = len(parts)
                self.collocation_next.setdefault(parts[0], set()).add(parts[1])
        self.max_collocation_words = max(self.collocation_starts.values(), default=1)
        self._records: dict[str, tuple] = {}
        self._other: dict[str, frozenset] | None = None  # verb/adj/adv forms → classes, built on first use

    @staticmethod
    def _read_index(path: Path) -> dict[str, tuple[str, ...]]:
        index: dict[str, tuple[str, ...]] = {}
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  "):  # licence header
                    continue
                parts = line.split()
                # lemma pos synset_cnt p_cnt [ptr...] sense_cnt tagsense_cnt offsets...; offsets are the tail.
                n_synsets = int(parts[2])
                index[parts[0]] = tuple("n" + off for off in parts[-n_synsets:])
        return index

    @staticmethod
    def _read_exceptions(path: Path) -> dict[str, tuple[str, ...]]:
        exc: dict[str, tuple[str, ...]] = {}
        if path.is_file():
            with open(path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    parts = line.split()
                    if len(parts) >= 2:
                        exc[parts[0]] = tuple(parts[1:])
        return exc

    # ------------------------------------------------------------------ lemmas and morphology

    def has_lemma(self, lemma: str) -> bool:
        return lemma in self._index

    def morphy(self, word: str) -> list[str]:
        """Noun base forms of `word` found in WordNet: exception-list forms first (men → man), then the word
        itself, then forms from the detachment rules (applied repeatedly until one is a lemma). A word with no
        form tries its spelling variants: accents folded ("café" → cafe), hyphenated compounds joined or spaced
        ("hot-dog" → hot_dog), American spellings ("tyres" → tire)."""
        form = word.strip().lower().replace(" ", "_")
        if not form:
            return []
        found = self._morphy(form)
        if found:
            return found
        for variant in _variants(form):
            found = self._morphy(variant)
            if found:
                return found
        return []

    def _morphy(self, form: str) -> list[str]:
        out: list[str] = []
        for cand in self._exceptions.get(form, ()):
            if cand in self._index and cand not in out:
                out.append(cand)
        if form in self._index and form not in out:
            out.append(form)
        if out:
            return out
        forms = [form]
        while forms:
            forms = [f[: -len(old)] + new for f in forms for old, new in _NOUN_RULES if f.endswith(old) and len(f) > len(old)]
            found = [f for f in dict.fromkeys(forms) if f in self._index]
            if found:
                return found
        return []

    def is_plural(self, word: str) -> bool:
        """Whether a noun is an inflected plural: its base forms are neither the word nor a spelling variant of
        it, or it is a lemma whose singular is one too ("dogs", "men", "bowls" are; "dog", "hot-dog", "café",
        "boss" are not)."""
        low = word.strip().lower()
        forms = self.morphy(low)
        if low in forms:  # a lemma itself; still a plural if its singular is one too ("bowls", "shoes")
            return bool(self.singulars(low))
        return bool(forms) and not set(forms) & {low.replace("-", "_"), *_variants(low)}

    def singulars(self, form: str) -> list[str]:
        """Singular lemmas of a plural that WordNet also lists as a lemma of its own ("shoes" → shoe,
        "glasses" → glass); [] for words not ending in a plural -s ("boss", "bus")."""
        if not form.endswith("s") or form.endswith(("ss", "us", "is")):
            return []
        forms = [c for c in self._exceptions.get(form, ()) if c != form]
        forms += [form[: -len(old)] + new for old, new in _NOUN_RULES if form.endswith(old) and len(form) > len(old)]
        return [f for f in dict.fromkeys(forms) if f != form and f in self._index]

    def plural_only(self, key: str) -> bool:
        """A concrete thing that English names only in the plural (spectacles, shorts, stairs): every lemma of
        the synset is a plural."""
        rec = self._record(key)
        return self.is_concrete(key) and not rec[3] and all(lem.rsplit("_", 1)[-1].endswith("s") for lem in rec[0])

    def is_kind_of(self, key: str, head: str) -> bool:
        """Whether synset `key` is a kind of the noun `head` or a sibling of one of its senses: "hot dog" (frank
        is a sense of dog), "swimming pool" (a pool), "young lady" (a girl, whose parent woman is lady's parent)
        are; "yellow jacket" (a wasp, a barbiturate) and "black box" (a flight recorder) are not."""
        senses = {k for form in self.morphy(head) for k in self._index.get(form, ())}
        if key in senses:
            return True
        near = senses | {p for k in senses for p in self._record(k)[1]}
        return not near.isdisjoint(self._ancestor_distances(key))

    def noun_synsets(self, lemma: str) -> list[str]:
        """Synset keys of an exact noun lemma ("ice_cream" or "ice cream"), most frequent sense first."""
        return list(self._index.get(lemma.strip().lower().replace(" ", "_"), ()))

    def first_synset(self, lemma: str) -> str | None:
        senses = self._index.get(lemma)
        return senses[0] if senses else None

    def common_senses(self, lemma: str, trademarks: bool = True) -> list[str]:
        """Senses a lower-case caption word can mean: first those in which WordNet writes the lemma in lower
        case, then capitalised common nouns (trademarks such as Frisbee); never a named entity written with a
        capital. So "jersey" is the garment (not New Jersey, not the island Jersey), "grey" never the people
        named Grey, and "sun" keeps the star, because WordNet lists it as "sun" too. `trademarks=False` (for
        multi-word nouns) admits of the capitalised senses only kinds named after a proper adjective, capital on
        the first word alone ("german shepherd", "ferris wheel", "christmas tree"), not "White House"."""
        lower, capital = [], []
        for k in self._index.get(lemma, ()):
            rec = self._record(k)
            if lemma in rec[0]:
                lower.append(k)
            elif not rec[3] and (trademarks or self.named_kind(k, lemma)):
                capital.append(k)
        return lower + capital

    def named_kind(self, key: str, lemma: str) -> bool:
        """Whether WordNet writes `lemma` in synset `key` with a capital on its first word alone: a kind named
        after a proper adjective ("German_shepherd", "Ferris_wheel"), not a name ("White_House")."""
        return any(name.lower() == lemma and name[:1].isupper() and name[1:] == name[1:].lower()
                   for name in self._record(key)[0])

    def american(self, lemma: str) -> str:
        """The American spelling of a British lemma when WordNet lists both for one meaning ("colour" → color),
        else `lemma`: the American lemma's senses are ordered by more corpus evidence."""
        senses = self._index.get(lemma)
        for variant in _spelling.american(lemma):
            other = self._index.get(variant)
            if other and (senses is None or not set(senses).isdisjoint(other)):
                return variant
        return lemma

    # ------------------------------------------------------------------ synset records

    def _record(self, key: str) -> tuple[list[str], list[str], str, bool, int]:
        """(lemma names, hypernym keys, gloss, is an instance, lexicographer file number) of a synset, parsed
        once."""
        rec = self._records.get(key)
        if rec is not None:
            return rec
        if len(key) != 9 or key[0] != "n" or not key[1:].isdigit():
            raise KeyError(f"not a noun synset key: {key!r}")
        off = int(key[1:])
        end = self._data.find(b"\n", off)
        line = self._data[off:end if end >= 0 else len(self._data)]
        if not line.startswith(key[1:].encode()):
            raise KeyError(f"no noun synset at offset {key[1:]}")
        head, _, gloss = line.partition(b" | ")
        f = head.split()
        n_words = int(f[3], 16)
        lemmas = [f[4 + 2 * i].decode("utf-8", "replace") for i in range(n_words)]
        p = 4 + 2 * n_words
        n_ptrs = int(f[p])
        hypernyms, instance = [], False
        for i in range(n_ptrs):
            sym, target, pos = f[p + 1 + 4 * i], f[p + 2 + 4 * i], f[p + 3 + 4 * i]
            if sym in _HYPERNYM_POINTERS and pos == b"n":
                hypernyms.append("n" + target.decode())
                instance = instance or sym == _INSTANCE_POINTER
        rec = (lemmas, hypernyms, gloss.decode("utf-8", "replace").strip(), instance, int(f[1]))
        self._records[key] = rec
        return rec

    def lexfile(self, key: str) -> int:
        """WordNet's lexicographer file of a synset (lexnames(5)): 6 = noun.artifact, 4 = noun.act, ..."""
        return self._record(key)[4]

    def is_concrete(self, key: str) -> bool:
        """A thing one can see: an artifact, body part, animal, plant, food, natural object, substance or person."""
        return self._record(key)[4] in _CONCRETE_LEXFILES

    def is_colour_word(self, word: str) -> bool:
        """Whether one of the word's noun senses is a colour (a hyponym of color, n04956594): orange, silver
        (via ash grey), gold (via amber), tan."""
        senses = {k for form in self.morphy(word) for k in self._index.get(form, ())}
        return any(_COLOR in self._ancestor_distances(k) for k in senses if self._record(k)[4] == 7)

    def is_instance(self, key: str) -> bool:
        """True for a named entity: a synset WordNet links by an instance-hypernym ("@i") pointer (Paris, Einstein),
        as opposed to a common-noun class (city, physicist)."""
        return self._record(key)[3]

    # ------------------------------------------------------------------ other parts of speech

    def _other_forms(self) -> dict[str, frozenset]:
        """Every inflected form of a WordNet verb, adjective or adverb → its classes. Built once (~0.1 s) by
        running morphy's detachment rules backwards, so a lookup is one dict access."""
        if self._other is None:
            forms: dict[str, set] = {}

            def add(form: str, cls: str) -> None:
                forms.setdefault(form, set()).add(cls)

            for pos, suffixes in (("verb", _VERB_FORMS), ("adj", _ADJ_FORMS), ("adv", ())):
                path = self.root / f"index.{pos}"
                if not path.is_file():
                    continue
                with open(path, encoding="utf-8", errors="replace") as fh:
                    lemmas = [line.split(" ", 1)[0] for line in fh if not line.startswith("  ")]
                base = "VB" if pos == "verb" else pos
                for lemma in lemmas:
                    add(lemma, base)
                    for old, new, cls in suffixes:
                        # the rule maps form = stem + old (stem non-empty) to lemma = stem + new
                        stem = lemma[: len(lemma) - len(new)] if lemma.endswith(new) else ""
                        if stem:
                            add(stem + old, cls)
                known = set(lemmas)
                for form, lems in self._read_exceptions(self.root / f"{pos}.exc").items():
                    if not known.intersection(lems):
                        continue
                    if pos == "verb":
                        cls = "VBG" if form.endswith("ing") else "VBZ" if form.endswith("s") else "VBD"
                    else:
                        cls = base
                    add(form, cls)
            self._other = {form: frozenset(c) for form, c in forms.items()}
        return self._other

    def parts_of_speech(self, word: str) -> frozenset:
        """The word classes WordNet knows `word` in: a subset of {"noun", "adj", "adv", "VB", "VBD", "VBG",
        "VBZ"}, verbs split by the inflection `word` has (base form, -ed or irregular past, -ing, -s); empty if
        WordNet does not know it."""
        form = word.strip().lower().replace(" ", "_")
        if not form:
            return frozenset()
        other = self._other_forms().get(form, _EMPTY)
        return other | _NOUN if self.morphy(form) else other

    def synset_lemmas(self, key: str) -> list[str]:
        """Lemma names of a synset in WordNet order, e.g. ['ice_cream', 'icecream']."""
        return list(self._record(key)[0])

    def gloss(self, key: str) -> str:
        return self._record(key)[2]

    def hypernyms(self, key: str) -> list[str]:
        """Direct hypernyms and instance hypernyms."""
        return list(self._record(key)[1])

    def hypernym_paths(self, key: str) -> list[list[str]]:
        """Every path from the root (entity) down to `key`, root first and `key` last."""
        parents = self._record(key)[1]
        if not parents:
            return [[key]]
        return [path + [key] for parent in parents for path in self.hypernym_paths(parent)]

    def _ancestor_distances(self, key: str) -> dict[str, int]:
        dist = {key: 0}
        queue = deque([key])
        while queue:
            cur = queue.popleft()
            for parent in self._record(cur)[1]:
                if parent not in dist:
                    dist[parent] = dist[cur] + 1
                    queue.append(parent)
        return dist

    def path_similarity(self, a: str, b: str) -> float:
        """NLTK's path similarity: 1 / (1 + shortest distance through a common hypernym); 0.0 if none."""
        da, db = self._ancestor_distances(a), self._ancestor_distances(b)
        common = [da[k] + db[k] for k in da.keys() & db.keys()]
        return 1.0 / (1 + min(common)) if common else 0.0

    def name(self, key: str) -> str:
        """Human-readable name: the first lemma with spaces, e.g. 'ice cream'."""
        return self._record(key)[0][0].replace("_", " ")


@lru_cache(maxsize=None)
def _cached(root: str | None) -> WordNet:
    return WordNet(root)


def get_wordnet(root: str | Path | None = None) -> WordNet:
    """Process-wide WordNet instance (parsed once)."""
    # Resolve first, so an environment override (or a missing install) is noticed on every call.
    return _cached(str(root) if root is not None else str(locate("wordnet")))
