"""SuperClass labels: the caption's CLIP byte-pair-encoding token ids, as decimal strings.

The encoder reproduces open_clip's `SimpleTokenizer.encode` id for id (tested against it) but does not import
open_clip, whose tokenizer module imports torch. It reads the merges table shipped inside the open-clip-torch
wheel and uses the same text cleaning (ftfy + HTML unescaping + whitespace folding + lower case) and pre-split
pattern, both of which need `ftfy` and `regex` (dependencies of open-clip-torch).

Like SuperClass, labels are taken from the tokens a CLIP text tower would see: the start/end/pad tokens are never
labels, and only the first `context_length - 2` (75) content tokens count. Repeated tokens count once.

Two bounds keep junk text cheap (a 1 MB caption, a 100k-letter run): the extractor reads only the first
`MAX_CHARS` characters, far more than 75 tokens need; and, since merging costs the square of a word's length (16k
letters took 2.4 s), a pre-token longer than `_PROBE_CHARS` is merged from a prefix only: the first that yields
`_MARGIN` tokens more than are kept (the tokens next to the cut may differ from the whole word's). `MAX_WORD_CHARS`
always does, as no token is longer than 32 bytes. `BPE.encode` stays exact and unbounded (open_clip's reference).
"""

from __future__ import annotations

import gzip
import html
import math
from functools import lru_cache
from pathlib import Path

from catlip.errors import ResourceMissingError
from catlip.labels.resources import locate
from catlip.labels.stopwords import STOPWORDS

VOCAB_SIZE = 49408
MAX_CHARS = 16_000
_MARGIN = 8
_PROBE_CHARS = 256
MAX_WORD_CHARS = 32 * (75 + _MARGIN)  # 32 bytes: the longest CLIP token
_MAX_CACHE = 2_000_000  # cached pieces before the cache is dropped (bounded memory on web-scale text)
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
_N_MERGES = 49152 - 256 - 2


def _byte_alphabet() -> dict[int, str]:
    """Reversible byte → printable character map used by CLIP's BPE (avoids whitespace/control characters)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class BPE:
    """CLIP byte-pair encoder: `encode(text) -> list[int]` without start/end tokens."""

    def __init__(self, path: str | Path | None = None):
        try:
            import ftfy
            import regex
        except ImportError as err:  # pragma: no cover - both come with open-clip-torch
            raise ResourceMissingError(f"SuperClass tokenization needs {err.name}: pip install open-clip-torch") from err
        self._fix_text = ftfy.fix_text
        path = Path(path) if path is not None else locate("bpe")
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            lines = fh.read().split("\n")[1:_N_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        self.byte_char = _byte_alphabet()
        self.char_byte = {c: b for b, c in self.byte_char.items()}
        symbols = list(self.byte_char.values())
        symbols += [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + list(SPECIAL_TOKENS)
        self.token_id = {s: i for i, s in enumerate(symbols)}
        self.id_token = symbols
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.sot_id, self.eot_id = self.token_id[SPECIAL_TOKENS[0]], self.token_id[SPECIAL_TOKENS[1]]
        self._pattern = regex.compile(
            "|".join(regex.escape(t) for t in SPECIAL_TOKENS)
            + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self._cache: dict[str, tuple[int, ...]] = {}

    def clean(self, text: str) -> str:
        """open_clip's 'lower' cleaning: ftfy, HTML unescaping (twice), whitespace folding, lower case."""
        # Printable ASCII without '&' or escapes is left unchanged by ftfy and html.unescape (the slow steps).
        if not (text.isascii() and text.isprintable() and "&" not in text):
            text = html.unescape(html.unescape(self._fix_text(text)))
        return " ".join(text.split()).lower()

    def words(self, text: str) -> list[str]:
        """Cleaned pre-tokens (the units BPE merges within)."""
        return self._pattern.findall(self.clean(text))

    def split_words(self, cleaned: str) -> list[str]:
        """Pre-tokens of already cleaned text."""
        return self._pattern.findall(cleaned)

    def _merge(self, word: str) -> tuple[int, ...]:
        chars = [self.byte_char[b] for b in word.encode("utf-8")]
        parts = chars[:-1] + [chars[-1] + "</w>"]
        ranks = self.ranks
        while len(parts) > 1:
            best, best_rank = None, None
            for pair in zip(parts, parts[1:]):
                r = ranks.get(pair)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = pair, r
            if best is None:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == best[0] and parts[i + 1] == best[1]:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return tuple(self.token_id[p] for p in parts)

    def word_ids(self, word: str) -> tuple[int, ...]:
        ids = self._cache.get(word)
        if ids is None:
            ids = self._cache[word] = (self.token_id[word],) if word in SPECIAL_TOKENS else self._merge(word)
        return ids

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for word in self.words(text):
            out.extend(self.word_ids(word))
        return out

    def decode_token(self, token_id: int) -> str:
        sym = self.id_token[token_id]
        if sym in SPECIAL_TOKENS:
            return sym
        end = sym.endswith("</w>")
        raw = bytes(self.char_byte[c] for c in (sym[:-4] if end else sym))
        return raw.decode("utf-8", errors="replace") + (" " if end else "")


@lru_cache(maxsize=None)
def _cached(path: str) -> BPE:
    return BPE(path)


def get_bpe(path: str | Path | None = None) -> BPE:
    """Process-wide encoder (merges parsed once per file)."""
    return _cached(str(path) if path is not None else str(locate("bpe")))


def idf(df: float, num_docs: float) -> float:
    """SuperClass inverse document frequency: log((N + 1) / (df + 1))."""
    return math.log((num_docs + 1) / (df + 1))


class SubwordExtractor:
    """`extract(caption) -> list[str]`: unique BPE ids (decimal strings) in first-occurrence order."""

    method = "superclass"

    def __init__(self, stopwords: bool = False, context_length: int = 77):
        self.stopwords = bool(stopwords)
        self.context_length = int(context_length)
        self.options = {"stopwords": self.stopwords, "context_length": self.context_length}
        self.bpe = get_bpe()
        self._special = {self.bpe.sot_id, self.bpe.eot_id}
        self._pieces: dict[str, tuple[int, ...]] = {}

    def encode_ids(self, text: str) -> list[int]:
        """All BPE ids of `text` (with repeats), truncated to what a CLIP text tower sees; stop-words removed
        when enabled."""
        if not isinstance(text, str):
            text = str(text)
        # Only the first 75 tokens count; 16k characters hold far more than that (a bound on junk input).
        text = text[:MAX_CHARS]
        if not text.isascii():  # lone surrogates (from undecodable bytes) cannot be UTF-8 encoded: replace them
            text = text.encode("utf-8", "replace").decode("utf-8")
        limit = max(self.context_length - 2, 0)
        ids: list[int] = []
        cache = self._pieces
        # No pre-token spans whitespace, so each whitespace-separated piece is encoded once and cached.
        for piece in self.bpe.clean(text).split():
            if len(ids) >= limit:
                break
            piece_ids = cache.get(piece)
            if piece_ids is None:
                piece_ids = self._encode_piece(piece)
                if len(cache) >= _MAX_CACHE:
                    cache.clear()
                cache[piece] = piece_ids
            ids += piece_ids
        return ids[:limit]

    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        out: list[int] = []
        for word in self.bpe.split_words(piece):
            if self.stopwords and word in STOPWORDS:
                continue
            ids = self.bpe.word_ids(word) if len(word) <= _PROBE_CHARS else self._long_word_ids(word)
            out.extend(i for i in ids if i not in self._special)
        return tuple(out)

    def _long_word_ids(self, word: str) -> tuple[int, ...]:
        """The first tokens of a very long pre-token, merged from a prefix (not cached: such words are junk)."""
        keep = max(self.context_length - 2, 0)
        for cut in (_PROBE_CHARS, MAX_WORD_CHARS):
            ids = self.bpe._merge(word[:cut])
            if len(ids) >= keep + _MARGIN:
                break
        if len(word) <= cut:
            return ids
        return ids[:keep]

    def extract(self, caption: str) -> list[str]:
        if not isinstance(caption, str):
            return []
        try:
            ids = self.encode_ids(caption)
        except Exception:  # never raise on a caption: odd text yields no labels rather than a crash
            return []
        return [str(i) for i in dict.fromkeys(ids)]

    def name(self, key: str) -> str:
        return self.bpe.decode_token(int(key)).strip()
