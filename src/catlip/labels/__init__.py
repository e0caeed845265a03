"""Caption → label keys, and the vocabulary that maps keys to class ids. Pure Python: never imports torch.

    >>> ex = get_extractor("catlip")
    >>> ex.extract("Two men ride bicycles past a church")   # doctest: +SKIP
    ['n10287213', 'n02834778', 'n08082602']
"""

from __future__ import annotations

METHODS = ("catlip", "superclass")


def get_extractor(method: str, **options):
    """Extractor for `method` ("catlip": WordNet noun synsets; "superclass": CLIP BPE ids).

    Options: catlip → `proper_nouns` (bool), `style` ("paper" | "corenet"); superclass → `stopwords` (bool),
    `context_length` (int). Unknown options raise `TypeError`.
    """
    if method == "catlip":
        from catlip.labels.synsets import SynsetExtractor

        return SynsetExtractor(**options)
    if method == "superclass":
        from catlip.labels.subwords import SubwordExtractor

        return SubwordExtractor(**options)
    raise ValueError(f"unknown label method {method!r}; expected one of {METHODS}")
