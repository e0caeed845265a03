"""English part-of-speech tagger: a bigram HMM decoded with Viterbi over the Penn-Treebank-trained tables that
Debian's `liblingua-en-tagger-perl` ships (`words.yml`: tag counts per word; `tags.yml`: P(tag | previous tag)).

Unknown words get tag scores from a suffix model built from the *rare* words of the same lexicon (rare words
behave like unseen ones), split by word shape (capitalised, lower-case, with digits, hyphenated); the score is
P(tag | shape, suffix) / P(tag), the usual Bayes inversion into an emission. WordNet sharpens both: an unknown
word's tags outside the word classes WordNet knows it in are nearly ruled out ("greyhound" is only a noun there,
whatever "-ound" suggests), and a rare lexicon word gets a small count for each class WordNet knows but WSJ never
showed ("shower", seen once as a verb). Its settings were chosen on UD English-EWT *train* (dev is the test).

Speed: candidates per word are computed once and cached; words with a single candidate tag split the sentence
into independent runs (every best path passes through them), and each run's best tags are cached keyed by
(left tag, words, right tag), so repeated phrases ("a man in a red shirt") are decoded once.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

from catlip.errors import ResourceMissingError
from catlip.labels.resources import locate

# Lingua's tag names → Penn Treebank tags.
_PENN = {"det": "DT", "ppc": ",", "pp": ".", "ppd": "$", "ppl": "``", "ppr": "''", "pps": ":", "prps": "PRP$",
         "wps": "WP$", "lrb": "-LRB-", "rrb": "-RRB-"}
_OPEN_CLASS = {"NN", "NNS", "NNP", "NNPS", "JJ", "JJR", "JJS", "VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "RB", "CD",
               "FW", "UH"}
NOUN_TAGS = frozenset({"NN", "NNS"})
PROPER_TAGS = frozenset({"NNP", "NNPS"})
_ENTRY = re.compile(r'^("?)(.+?)\1: \{ (.*) \}\s*$')
_NUMBER = re.compile(r"^[-+]?\d[\d.,/:]*$")
_ORDINAL = re.compile(r"^\d+(?:st|nd|rd|th)$", re.IGNORECASE)
_ADDRESS = re.compile(r"^(?:\S+@\S+\.\w+|(?:https?://|www\.)\S+|\S+\.(?:com|org|net|edu|gov)(?:/\S*)?)$", re.I)
_PUNCT_WORD = {"(": "*LRB*", "[": "*LRB*", "{": "*LCB*", ")": "*RRB*", "]": "*RRB*", "}": "*RCB*", '"': "``"}
_RARE_MAX = 3           # lexicon words with at most this many occurrences model unknown words
_MIN_SUFFIX_COUNT = 20  # a suffix needs this much evidence before it is trusted over a shorter one
_MIN_SHARE = 0.005      # tags a word had in under 0.5 % of its occurrences are annotation noise; drop them
_FLOOR = math.log(1e-7)
_MAX_CACHE = 2_000_000  # cached words/runs before the caches are dropped (bounded memory on web-scale text)
_SMOOTH = 0.01      # weight of the tag prior in the transition table
# Word class of each open-class tag, as `WordNet.parts_of_speech` names it (verbs by inflection); an unknown word's tags outside the classes WordNet knows
# it in are scaled by _UNLICENSED (not removed: WordNet lacks many uses, e.g. nouns used as names).
_WORDNET_CLASS = {"NN": "noun", "NNS": "noun", "NNP": "noun", "NNPS": "noun", "VB": "VB", "VBD": "VBD",
                  "VBG": "VBG", "VBN": "VBD", "VBP": "VB", "VBZ": "VBZ", "JJ": "adj", "JJR": "adj", "JJS": "adj",
                  "RB": "adv", "RBR": "adv", "RBS": "adv"}
_UNLICENSED = 0.002
_CLASS_TAG = {"VB": "VB", "VBD": "VBD", "VBG": "VBG", "VBZ": "VBZ", "adj": "JJ", "adv": "RB"}
_RARE_PRIOR_MAX = 10  # lexicon words seen at most this often also get the uses WordNet knows ...
_RARE_PSEUDO = 0.2    # ... with this pseudo-count each


def _parse_yml(path: Path) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            m = _ENTRY.match(line)
            if not m:
                continue
            fields = {}
            for item in m.group(3).split(", "):
                tag, _, value = item.partition(": ")
                fields[_PENN.get(tag, tag.upper())] = float(value)
            table[m.group(2)] = fields
    return table


def _shape(word: str) -> str:
    if any(c.isdigit() for c in word):
        return "d"
    if "-" in word:
        return "h"
    return "C" if word[:1].isupper() else "l"


class Tagger:
    """Bigram HMM tagger with Penn Treebank tags. `tag(tokens)` returns one tag per token."""

    def __init__(self, root: str | Path | None = None, wordnet_prior: bool = True):
        root = Path(root) if root is not None else locate("tagger")
        lexicon = _parse_yml(root / "words.yml")
        hmm = {_PENN.get(prev, prev.upper()): row for prev, row in _parse_yml(root / "tags.yml").items()}
        self.tags: list[str] = sorted(set(hmm) | {t for row in hmm.values() for t in row})
        self._tid = {t: i for i, t in enumerate(self.tags)}
        self._start = self._tid["."]  # a sentence starts as if after a full stop
        tag_totals: dict[str, float] = defaultdict(float)
        for counts in lexicon.values():
            for tag, c in counts.items():
                tag_totals[tag] += c
        self._log_total = {t: math.log(c) for t, c in tag_totals.items()}
        grand = sum(tag_totals.values())
        self._prior = {t: c / grand for t, c in tag_totals.items()}
        # Interpolating with the tag prior lets transitions WSJ never saw (web text, captions) still happen.
        self._trans = [[_FLOOR] * len(self.tags) for _ in self.tags]
        for prev in self.tags:
            row = hmm.get(prev, {})
            for tag in self.tags:
                p = (1 - _SMOOTH) * row.get(tag, 0.0) + _SMOOTH * self._prior.get(tag, 0.0)
                self._trans[self._tid[prev]][self._tid[tag]] = math.log(p) if p > 0 else _FLOOR
        # Transposed: _into[tag][prev] = log P(tag | prev), the column Viterbi reads for each candidate tag.
        self._into = [list(col) for col in zip(*self._trans)]
        self._lexicon = lexicon
        self._suffix = self._suffix_model(lexicon)
        self._wordnet = _optional_wordnet() if wordnet_prior else None
        self._cands: dict[str, tuple] = {}
        self._runs: dict[tuple, tuple] = {}
        self.noun_ids = frozenset(self._tid[t] for t in NOUN_TAGS)
        self.proper_ids = frozenset(self._tid[t] for t in PROPER_TAGS)

    # ------------------------------------------------------------------ emission candidates

    @staticmethod
    def _suffix_model(lexicon) -> dict[tuple[str, str], dict[str, float]]:
        model: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for word, counts in lexicon.items():
            total = sum(counts.values())
            if total > _RARE_MAX or not word[:1].isalnum():
                continue
            shape, low = _shape(word), word.lower()
            for k in range(0, 5):
                if k > len(low):
                    break
                row = model[(shape, low[len(low) - k:] if k else "")]
                for tag, c in counts.items():
                    if tag in _OPEN_CLASS:
                        row[tag] += c
        return {key: dict(row) for key, row in model.items()}

    def _unknown(self, word: str, shape: str) -> dict[str, float]:
        low = word.lower()
        best = self._suffix.get((shape, "")) or self._suffix[("l", "")]
        for k in range(1, min(4, len(low)) + 1):
            row = self._suffix.get((shape, low[-k:]))
            if row is None or sum(row.values()) < _MIN_SUFFIX_COUNT:
                break
            best = row
        total = sum(best.values())
        return {t: c / total for t, c in best.items()}

    def _known(self, counts: dict[str, float]) -> list[tuple[int, float]]:
        total = sum(counts.values())
        return [(self._tid[t], math.log(c) - self._log_total[t]) for t, c in counts.items()
                if c / total >= _MIN_SHARE and t in self._tid]

    def _compute(self, word: str, first: bool) -> tuple:
        lex = self._lexicon
        counts = None
        if first and word[:1].isupper():
            # A sentence-initial capital says nothing: if the word is also a common lower-case word ("Dog",
            # "I"), pool both spellings but not the capitalised one's proper-noun uses; else keep the name.
            exact, lower = lex.get(word), lex.get(word.lower())
            counts = self._pool_capitalised(word.lower(), lower) if lower else exact
        else:
            counts = lex.get(word) or lex.get(word.lower())
            if word.islower() and sum((counts or {}).values()) < 5:
                counts = self._pool_capitalised(word, counts)
        if counts is None and word.isalpha():
            counts = self._variant_counts(word.lower())
        if counts is None and word in _PUNCT_WORD:
            counts = lex.get(_PUNCT_WORD[word])
        if counts is None and _ORDINAL.match(word):
            counts = lex.get("*ORD*")
        if counts is None and _NUMBER.match(word):
            counts = lex.get("*NUM*")
        if counts is not None and self._wordnet is not None and sum(counts.values()) <= _RARE_PRIOR_MAX:
            counts = self._add_wordnet_uses(word, counts)
        known = self._known(counts) if counts is not None else None
        if known:
            return tuple(known)
        if not any(c.isalnum() for c in word) or _ADDRESS.match(word):
            # Symbols, e-mail and web addresses are not words of any open class (and never nouns).
            return ((self._tid["SYM"], 0.0),)
        shape = _shape(word)
        if first and shape == "C" and (self._wordnet is None or self._wordnet.parts_of_speech(word)):
            # A sentence-initial capital hides whether the word is a name; unknown to both the tables and
            # WordNet ("Gregg", "Jared"), it most likely is one, so only then keep the capitalised shape.
            shape = "l"
        probs = self._unknown(word, shape)
        if self._wordnet is not None:
            probs = self._license(word, probs)
        cands = tuple((self._tid[t], math.log(p / self._prior[t])) for t, p in probs.items()
                      if p >= 0.01 and t in self._prior)
        return cands or ((self._tid["NN"], 0.0),)

    def _license(self, word: str, probs: dict[str, float]) -> dict[str, float]:
        """Reweight an unknown word's suffix-model tags by the word classes WordNet knows it in: "greyhound" is
        only a noun there, so its "-ound" suffix must not make it an adjective."""
        classes = self._wordnet.parts_of_speech(word) if word.replace("-", "").isalpha() else frozenset()
        if not classes:
            return probs
        scaled = {t: p * (1.0 if _WORDNET_CLASS.get(t, "noun") in classes or t not in _WORDNET_CLASS
                          else _UNLICENSED) for t, p in probs.items()}
        if "noun" in classes and not any(_WORDNET_CLASS.get(t) == "noun" for t in scaled):
            scaled["NNS" if self._wordnet.is_plural(word) else "NN"] = _UNLICENSED
        total = sum(scaled.values())
        return {t: p / total for t, p in scaled.items()}

    def _add_wordnet_uses(self, word: str, counts: dict[str, float]) -> dict[str, float]:
        """A rare word's few WSJ occurrences miss uses WordNet knows ("shower" seen only as a verb): give each
        missing word class a small pseudo-count."""
        if not word.replace("-", "").isalpha():
            return counts
        classes = self._wordnet.parts_of_speech(word)
        have = {_WORDNET_CLASS.get(t) for t in counts}
        added = dict(counts)
        for cls in classes - have:
            tag = _CLASS_TAG.get(cls)
            if cls == "noun":
                tag = "NNS" if self._wordnet.is_plural(word) else "NN"
            added[tag] = added.get(tag, 0.0) + _RARE_PSEUDO
        return added

    def _variant_counts(self, low: str) -> dict | None:
        """Tag counts of an unknown word's American spelling or accent-free form ("grey" is tagged like
        "gray", "colours" like "colors"): WSJ is American and unaccented."""
        from catlip.labels.spelling import american, fold_accents

        for variant in (fold_accents(low), *american(low)):
            counts = self._lexicon.get(variant)
            if counts and variant != low:
                return counts
        return None

    def _pool_capitalised(self, word: str, counts: dict | None) -> dict | None:
        # Web text writes "i", "u.s." in lower case; borrow the common-word uses of the capitalised spelling
        # (never its proper-noun uses: lower-case "york" is unknown, not a name).
        pooled = dict(counts or {})
        for variant in (word.capitalize(), word.upper()):
            for tag, c in self._lexicon.get(variant, {}).items():
                if tag not in PROPER_TAGS:
                    pooled[tag] = pooled.get(tag, 0) + c
        return pooled or None

    def counts(self, word: str) -> dict[str, float]:
        """Tag counts of a word in the lexicon ({} when unknown)."""
        return self._lexicon.get(word) or {}

    def candidates(self, word: str, first: bool = False) -> tuple:
        """((tag id, log emission score), ...) for a token; cached per (word, sentence-initial)."""
        key = ("\x00" + word) if first else word
        cands = self._cands.get(key)
        if cands is None:
            cands = self._cands[key] = self._compute(word, first)
        return cands

    # ------------------------------------------------------------------ decoding

    def _viterbi(self, left: int, run: list[tuple], right: int | None) -> tuple[int, ...]:
        """Best tags for a run of ambiguous words between fixed tags `left` and `right` (None: sentence end)."""
        trans = self._trans
        row = trans[left]
        prev = [(tag, row[tag] + emit) for tag, emit in run[0]]  # one predecessor: no choice to make
        back: list[list[int]] = [[0] * len(run[0])]
        into = self._into
        for cands in run[1:]:
            cur, ptr = [], []
            for tag, emit in cands:
                col = into[tag]
                scores = [score + col[p] for p, score in prev]
                best = max(scores)
                cur.append((tag, best + emit))
                ptr.append(scores.index(best))  # the first best, as a strict ">" scan would pick
            prev = cur
            back.append(ptr)
        final = [score + trans[t][right] for t, score in prev] if right is not None else [s for _, s in prev]
        k = final.index(max(final))
        tags = []
        for ptr, cands in zip(reversed(back), reversed(run)):
            tags.append(cands[k][0])
            k = ptr[k]
        return tuple(reversed(tags))

    def tag_ids(self, tokens: list[str]) -> list[int]:
        """Tag ids for `tokens` (see `self.tags`)."""
        if not tokens:
            return []
        cache = self._cands
        if len(cache) > _MAX_CACHE:
            self.clear_cache()
        cands = [cache.get("\x00" + tokens[0]) or self.candidates(tokens[0], True)]
        cands += [cache.get(w) or self.candidates(w) for w in tokens[1:]]
        return self.decode(tokens, cands)

    def decode(self, tokens: list[str], cands: list[tuple], anchors: list[int] | None = None) -> list[int]:
        """Best tag ids given each token's candidates (from `candidates`); `anchors` optionally gives, per
        token, its only candidate tag or -1 (saves recomputing it)."""
        if anchors is None:
            anchors = [c[0][0] if len(c) == 1 else -1 for c in cands]
        out: list[int] = []
        left, run = self._start, -1
        i = 0
        for anchor in anchors:
            if anchor >= 0:
                if run >= 0:
                    out += self._run(left, run, i, tokens, cands, anchor)
                    run = -1
                out.append(anchor)
                left = anchor
            elif run < 0:
                run = i
            i += 1
        if run >= 0:
            out += self._run(left, run, len(anchors), tokens, cands, None)
        return out

    def _run(self, left: int, start: int, end: int, tokens: list[str], cands: list[tuple], right: int | None):
        """Tags of the ambiguous tokens[start:end]; they depend only on the tags fixed on either side and the
        words, so results are cached under that key."""
        if end - start == 1:  # the common case: one ambiguous word between two fixed tags
            key = (left, start == 0, tokens[start], right)
            tags = self._runs.get(key)
            if tags is None:
                trans, row = self._trans, self._trans[left]
                if right is None:
                    best = max(cands[start], key=lambda te: row[te[0]] + te[1])
                else:
                    best = max(cands[start], key=lambda te: row[te[0]] + te[1] + trans[te[0]][right])
                tags = self._runs[key] = (best[0],)
            return tags
        key = (left, start == 0, tuple(tokens[start:end]), right)
        tags = self._runs.get(key)
        if tags is None:
            tags = self._runs[key] = self._viterbi(left, cands[start:end], right)
        return tags

    def tag(self, tokens: list[str]) -> list[str]:
        """Penn Treebank tag per token."""
        names = self.tags
        return [names[t] for t in self.tag_ids(tokens)]

    def clear_cache(self) -> None:
        self._cands.clear()
        self._runs.clear()


def _optional_wordnet():
    # The prior only sharpens unknown-word guesses: without WordNet the tagger still works.
    from catlip.labels.wordnet import get_wordnet

    try:
        return get_wordnet()
    except ResourceMissingError:
        return None


@lru_cache(maxsize=None)
def _cached(root: str | None) -> Tagger:
    return Tagger(root)


def get_tagger(root: str | Path | None = None) -> Tagger:
    """Process-wide tagger (tables parsed once)."""
    # Resolve first, so an environment override (or a missing install) is noticed on every call.
    return _cached(str(root) if root is not None else str(locate("tagger")))


# Tags English-EWT adds to the WSJ tagset (addresses, hyphens, list markers ...): no WSJ-trained tagger emits them.
_WEB_ONLY = {"ADD", "AFX", "GW", "HYPH", "NFP", "XX"}


def read_conllu(path: str | Path):
    """Sentences of a CoNLL-U file as lists of (form, xpos); multi-word token ranges and empty nodes skipped."""
    sent: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line:
                if sent:
                    yield sent
                sent = []
                continue
            if line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) >= 5 and cols[0].isdigit():
                sent.append((cols[1], cols[4]))
    if sent:
        yield sent


def evaluate_conllu(path: str | Path, tagger: Tagger | None = None) -> dict:
    """Penn tag accuracy and noun-vs-not F1 on gold-tokenised CoNLL-U (XPOS column = Penn tags).

    "noun" is NN/NNS/NNP/NNPS; `common_noun_f1` counts only NN/NNS (what CatLIP keeps by default).
    """
    tagger = tagger or get_tagger()
    total = correct = penn_total = penn_correct = 0
    pairs = {"noun": [0, 0, 0], "common": [0, 0, 0]}  # tp, fp, fn
    groups = {"noun": NOUN_TAGS | PROPER_TAGS, "common": NOUN_TAGS}
    for sent in read_conllu(path):
        words = [w for w, _ in sent]
        for (_, gold), pred in zip(sent, tagger.tag(words)):
            total += 1
            correct += gold == pred
            if gold not in _WEB_ONLY:
                penn_total += 1
                penn_correct += gold == pred
            for name, group in groups.items():
                g, p = gold in group, pred in group
                pairs[name][0] += g and p
                pairs[name][1] += p and not g
                pairs[name][2] += g and not p

    def f1(tp, fp, fn):
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0

    return {"tokens": total, "accuracy": correct / max(total, 1),
            "accuracy_wsj_tagset": penn_correct / max(penn_total, 1), "noun_f1": f1(*pairs["noun"]),
            "common_noun_f1": f1(*pairs["common"])}
