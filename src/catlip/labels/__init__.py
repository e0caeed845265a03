"""Caption → label keys, and the vocabulary that maps keys to class ids. Pure Python: never imports torch.

The label sources (``synsets``, ``bpe``, ``words``) are the entries of ``catlip.labels.registry``.

    >>> ex = get_extractor("synsets")
    >>> ex.extract("Two men ride bicycles past a church")   # doctest: +SKIP
    ['n10287213', 'n02834778', 'n08082602']
"""

from __future__ import annotations

from catlip.labels import registry


def get_extractor(source: str, **options):
    """Extractor of the label source ``source`` (a name of ``catlip.labels.registry``, or an old method name:
    ``catlip`` → synsets, ``superclass`` → bpe).

    Options: synsets → ``proper_nouns`` (bool), ``style`` ("paper" | "corenet"), ``languages`` ("en", "en,de",
    "off"); bpe → ``stopwords`` (bool),
    ``context_length`` (int); words → ``lemmatize`` (bool), ``stopwords`` (bool). Unknown options raise
    ``TypeError``; an unknown source is a ``ConfigError`` listing the valid names.
    """
    return registry.get(source).make(**options)


def label_sources() -> tuple[str, ...]:
    """Names of the registered label sources."""
    return registry.names()
