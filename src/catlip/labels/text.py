"""Normalise and tokenize a caption; shared by both extractors. Never raises on any `str`."""

from __future__ import annotations

import html
import re

# Captions longer than this are truncated: a 100k-character "caption" is junk text, and the cap bounds the work.
MAX_CHARS = 2000

_TAG = re.compile(r"</?[A-Za-z][^<>]{0,200}>")  # HTML markup left in scraped alt-text
_URL = re.compile(r"(?:https?://|ftp://|www\.)\S+", re.IGNORECASE)
# Bare domain names ("example.com", "shop.co.uk"): a web caption's site name, not words of the caption. Only
# top-level domains that are not also English words, so a missing space ("goal.net") is not taken for one.
_DOMAIN = re.compile(r"(?<![\w@.-])(?:[a-z0-9][a-z0-9-]*\.)+(?:com|org|edu|gov|io|info|biz|co\.uk|de|fr|jp|ru)\b"
                     r"(?:/\S*)?", re.IGNORECASE)
_DOMAIN_HINT = re.compile(r"\.(?:com|org|edu|gov|io|info|biz|uk|de|fr|jp|ru)\b", re.IGNORECASE)  # cheap pre-check
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})
# Penn-Treebank-like tokens: "do|n't", "man|'s", hyphenated words kept whole, numbers with separators whole.
_TOKEN = re.compile(
    r"\w+?(?=n't\b)|n't\b|'(?:s|re|ve|ll|m|d)\b|\d+(?:[.,/:]\d+)*(?:st|nd|rd|th|s)?\b|\w+(?:-\w+)*|[^\w\s]",
    re.IGNORECASE,
)


def normalize(caption: str) -> str:
    """Unescape HTML entities (&amp; → &), drop HTML tags, URLs, bare domain names and control characters,
    unify quotes."""
    if not isinstance(caption, str):
        caption = str(caption)
    text = caption[:MAX_CHARS]
    if "&" in text:
        text = html.unescape(text)
    if "<" in text:
        text = _TAG.sub(" ", text)
    if "://" in text or "www." in text.lower():
        text = _URL.sub(" ", text)
    if "." in text and _DOMAIN_HINT.search(text):
        text = _DOMAIN.sub(" ", text)
    if not (text.isascii() and text.isprintable()):
        text = _CONTROL.sub(" ", text).translate(_QUOTES)
    # All-caps captions ("DOG ON THE BEACH") would otherwise look like proper nouns to the tagger.
    if text.isupper() and sum(c.isalpha() for c in text) > 3:
        text = text.lower()
    return text


# Fast first pass; the rare tokens with an apostrophe are re-split by _TOKEN.
_FAST = re.compile(r"\d+(?:[.,/:]\d+)+(?:st|nd|rd|th|s)?\b|\w+(?:-\w+)*(?:'\w*)*|'(?:s|re|ve|ll|m|d)\b|[^\w\s]", re.IGNORECASE)


def tokenize_piece(piece: str) -> list[str]:
    """Tokens of one whitespace-free piece of normalised text."""
    if piece.isalpha():  # most pieces are plain words: skip the regular expressions
        return [piece]
    if "'" not in piece:
        return _FAST.findall(piece)
    out: list[str] = []
    for tok in _FAST.findall(piece):
        if "'" in tok and len(tok) > 1:
            out.extend(_TOKEN.findall(tok))
        else:
            out.append(tok)
    return out


def tokenize(caption: str) -> list[str]:
    """Normalised caption → word tokens (Penn-style splitting of clitics and punctuation). No token spans
    whitespace, so pieces are tokenized independently."""
    out: list[str] = []
    for piece in normalize(caption).split():
        out.extend(tokenize_piece(piece))
    return out
