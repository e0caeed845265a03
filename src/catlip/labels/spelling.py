"""Spelling variants of a caption word that WordNet 3.0 may list instead: American spellings of British ones,
accent-free forms, and the joined / spaced forms of hyphenated compounds.

WordNet is an American resource: where it lists a British spelling at all ("colour"), its senses are ordered by
fewer corpus counts than the American lemma's ("color"), so the American lemma's first sense is the better guess
for either spelling. The rules are regular suffix/stem correspondences, not a list of caption words.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# (British pattern, American replacement), applied one at a time to the lower-case word.
_UK_US = tuple((re.compile(p), r) for p, r in (
    (r"our(s?)$", r"or\1"),            # colour, harbours, neighbour
    (r"(?<=[^aeiou])tre(s?)$", r"ter\1"),  # centre, theatres, metre
    (r"is(ation|ations)$", r"iz\1"),   # organisation
    (r"yse(s?)$", r"yze\1"),           # analyse (verbs; harmless for nouns)
    (r"ogue(s?)$", r"og\1"),           # catalogue, dialogue
    (r"(?<=[aeiou])ll(er|ers|ing|ery)$", r"l\1"),  # traveller, jewellery
    (r"ence(s?)$", r"ense\1"),         # defence, licence
    (r"^grey", "gray"),                # grey, greyhound stays (see has_lemma check)
    (r"^ae", "e"),                     # aeroplane → eroplane fails; aesthetic → esthetic
    (r"^aero", "air"),                 # aeroplane → airplane
    (r"yre(s?)$", r"ire\1"),           # tyre
    (r"^pyjama", "pajama"),
    (r"^moustache", "mustache"),
    (r"ough$", "ow"),                  # plough
    (r"^mould", "mold"),
    (r"mme(s?)$", r"m\1"),             # programme
    (r"^kerb", "curb"),
    (r"^storey", "story"),
    (r"^cosy", "cozy"),
    (r"^doughnut", "donut"),
))


def american(word: str) -> list[str]:
    """Candidate American spellings of a lower-case word (the word itself excluded; may not be words at all)."""
    return list(_american(word))


@lru_cache(maxsize=1 << 16)  # asked for every new word of a corpus; words repeat
def _american(word: str) -> tuple[str, ...]:
    out: list[str] = []
    for pattern, repl in _UK_US:
        cand = pattern.sub(repl, word, count=1)
        if cand != word and cand not in out:
            out.append(cand)
    return tuple(out)


def fold_accents(word: str) -> str:
    """"café" → "cafe", "naïve" → "naive"; ASCII words are returned unchanged."""
    if word.isascii():
        return word
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def compound_forms(word: str) -> list[str]:
    """"hot-dog" → ["hot_dog", "hotdog"]; a word without a hyphen has none."""
    if "-" not in word.strip("-"):
        return []
    parts = [p for p in word.split("-") if p]
    return ["_".join(parts), "".join(parts)]
