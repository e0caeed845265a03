"""Which captions are not in the wanted languages: web-scale caption sets (DataComp, LAION) hold many captions in
other languages, and an English noun tagger would give them English senses ("ein Hund läuft am Strand" → strand).

The detector is py3langid (BSD-3-Clause; its naive Bayes model over byte n-grams for 97 languages ships inside the
wheel, so nothing is downloaded). Short captions are hard to classify ("a dog" reads as Croatian, "two men ride
bicycles" as Frisian), so a caption is skipped only when it has at least `MIN_WORDS` words and the detector gives
a language outside the wanted ones a probability of at least `MIN_CONFIDENCE`; anything less certain is kept.
On the 40,460 Flickr8k captions (all English) this rule alone drops 13 (0.03 %, e.g. "Group of dirty men play
football ." as Nigerian Pidgin); the synsets extractor asks it only about captions with a word that neither its
tagger nor WordNet knows (5 % of them), and then drops none (benchmarks/results/labels.json, "language_filter").
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

MIN_WORDS = 3
MIN_CONFIDENCE = 0.5
_MAX_CHARS = 500  # the first sentences decide the language; a bound on the detector's work


def parse_languages(value) -> tuple[str, ...]:
    """``"en"``, ``"en,de"``, ``["en", "de"]`` → ISO 639-1 codes; ``""``, ``"off"``, None, False → () (no filter).
    An unknown code is a ``ConfigError`` (a typo must not silently drop every caption)."""
    if value in (None, False, "", "off", "none", "all"):
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    codes = tuple(dict.fromkeys(str(c).strip().lower() for c in items if str(c).strip()))
    unknown = [c for c in codes if c not in _detector().nb_classes]
    if unknown:
        from catlip.errors import ConfigError

        raise ConfigError(f"unknown language code(s) {', '.join(unknown)}; use ISO 639-1 codes such as en, de, fr")
    return codes


@lru_cache(maxsize=1)
def _detector():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    # norm_probs: probabilities, so that "confident" has one meaning for every caption length
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


class LanguageFilter:
    """``foreign(text) -> bool``: whether a caption is confidently in none of ``languages``; skips are counted
    per detected language in ``skipped``."""

    def __init__(self, languages: tuple[str, ...]):
        self.languages = frozenset(languages)
        self.detector = _detector()
        self.skipped: Counter = Counter()

    def foreign(self, text: str) -> bool:
        text = text[:_MAX_CHARS]
        if len(text.split()) < MIN_WORDS:
            return False
        lang, prob = self.detector.classify(text)
        if lang in self.languages or prob < MIN_CONFIDENCE:
            return False
        self.skipped[lang] += 1
        return True
