"""CatLIP labels: caption → nouns → WordNet noun synsets, keyed "n%08d" (WordNet 3.0 offset = ImageNet wnid).

style="paper" (default) follows the paper's Eq. (1): tag parts of speech, keep nouns (NN, NNS; NNP/NNPS only with
`proper_nouns=True`), reduce each to its WordNet base form (exception lists first: men → man), and take the most
frequent noun sense (the first synset in sense order). Multi-word WordNet nouns are matched longest-first ("ice
cream", "fire hydrant", "new york") when the span ends in a noun and its other words are noun/adjective-like, so
a compound counts once even if the tagger split it; two nouns WordNet spells as one word also merge ("cell phone"
→ cellphone). Synonyms merge ("photo" and "photograph" → n03925226).
Capitals do not decide what a name is, WordNet does: a word tagged NNP/NNPS whose first sense is a common noun
(not an instance, i.e. no "@i" instance-hypernym pointer) counts as a noun ("a Springer Spaniel", "Frisbee"); a
multi-word *instance* ("New York", "Times Square") matches only with a capitalised word and, without
`proper_nouns`, is consumed without a label (no "square"); lower-case "little dog" is a dog, not Canis Minor.

style="corenet" reproduces the rule of the original CatLIP code (corenet's WordNet-tagged dataset), for
comparison: the caption is URL-unquoted and lower-cased; corenet part-of-speech tags the tokens but ignores the
tags (so we skip tagging: the labels are the same, as the benchmark checks against NLTK); every token is
lemmatised as a noun (NLTK's lemmatizer: the *shortest* base form WordNet knows, else the token), and kept only if
the first noun synset of that lemma is *named* after it, i.e. the synset's head (first) lemma is the token's lemma
(`synset.name() == lemma + ".n.01"`). So "photo" (its sense is named photograph.n.01) and "kids" (child.n.01) are
dropped, while verbs and adjectives that also are nouns ("walking" → walking.n.01, "red" → red.n.01) are kept.
No collocations are matched (NLTK's word tokenizer splits "ice cream").

In paper style the noun of a complex preposition or quantifier phrase is no label (`_IDIOMS`: "in front of a
house" shows a house, not a front; "a group of people", "in the air").
Both styles skip captions that are confidently in none of `languages` (default "en"; "off" keeps every caption),
counted per detected language in `skipped` (see catlip.labels.language). The detector runs only on captions
holding a word that neither the tagger's lexicon nor WordNet knows, so English captions cost a few dictionary
look-ups. Captions are cut to `text.MAX_CHARS` characters first (a 1 MB caption costs what its start costs).
"""

from __future__ import annotations

import urllib.parse
from collections import Counter
from operator import itemgetter

from catlip.labels.language import LanguageFilter, parse_languages
from catlip.labels.tagger import NOUN_TAGS, PROPER_TAGS, get_tagger
from catlip.labels.text import MAX_CHARS, normalize, tokenize, tokenize_piece
from catlip.labels.wordnet import get_wordnet

STYLES = ("paper", "corenet")
_MAX_CACHE = 2_000_000  # cached word records before the cache is dropped (bounded memory on web-scale text)
# Tags a non-final word of a multi-word noun may carry ("ice/NN cream", "new/JJ york", "living/VBG room").
_INNER_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS", "JJ", "FW", "VBG", "CD"})
# A VBG after these is a predicate ("a man riding horse"), not a modifier ("the living room").
_PREDICATE_BEFORE = frozenset({"NN", "NNS", "NNP", "NNPS", "PRP", "VBZ", "VBP", "VBD", "MD", "TO", "EX", "WP", "WDT"})

# A caption word after these that ends in -ing is read as a verb (see _verb_ing).
_SUBJECT_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS", "PRP", "CD"})  # CD: "one standing"
# Tags the tagger wrongly gives a caption-initial bare noun ("kitten/VB sleeping").
_INITIAL_MISREAD = frozenset({"VB", "VBP", "VBZ", "VBD", "VBN", "JJ", "RB", "FW", "UH"})  # UH: "Boy , ..."

# Complex prepositions and quantifier phrases: their noun names no thing in the picture ("in front of a house"
# shows a house, "a group of people" people, "in the air" something airborne). Kept to fixed idioms: "the back
# of a truck", "at the top of a hill" or "a couple sitting" name real parts and people, so they are not here.
_IDIOMS = (("in", "front"), ("on", "top"), ("in", "the", "middle", "of"), ("in", "the", "midst", "of"),
           ("a", "lot", "of"), ("lots", "of"), ("a", "couple", "of"), ("a", "bunch", "of"), ("a", "group", "of"),
           ("a", "pair", "of"), ("in", "spite", "of"), ("by", "the", "side", "of"), ("at", "the", "side", "of"),
           ("in", "the", "air"), ("in", "the", "background"), ("in", "the", "foreground"),
           ("in", "the", "distance"), ("all", "the", "way"))
_FUNCTION_WORDS = frozenset({"in", "on", "a", "of", "the", "by", "at", "all"})
# idiom noun -> ((phrase, index of the noun in it), ...): a noun is looked up once, phrases only for these nouns
_IDIOM_AT: dict[str, list[tuple[tuple[str, ...], int]]] = {}
for _phrase in _IDIOMS:
    _at = next(i for i, w in enumerate(_phrase) if w not in _FUNCTION_WORDS)
    _IDIOM_AT.setdefault(_phrase[_at], []).append((_phrase, _at))
_KNOWN = itemgetter(7)  # a word record's "the tagger or WordNet knows it" flag


class SynsetExtractor:
    """`extract(caption) -> list[str]` of synset keys in first-occurrence order, no duplicates."""

    method = "catlip"

    def __init__(self, proper_nouns: bool = False, style: str = "paper", languages: str = "en"):
        if style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {style!r}")
        self.proper_nouns = bool(proper_nouns)
        self.style = style
        codes = parse_languages(languages)
        self.options = {"proper_nouns": self.proper_nouns, "style": style, "languages": ",".join(codes) or "off"}
        self.language = LanguageFilter(codes) if codes else None
        # The shortcut "every word is known, so it is English" holds only when English is wanted.
        self._known_is_wanted = "en" in codes
        self.wordnet = get_wordnet()
        self.tagger = get_tagger()
        tags = self.tagger.tags
        heads = NOUN_TAGS | PROPER_TAGS if proper_nouns else NOUN_TAGS
        self._head_ids = frozenset(i for i, t in enumerate(tags) if t in heads)
        # Proper-noun tags whose word may still be a common noun ("a Springer Spaniel", "Boston terriers").
        self._proper_ids = frozenset(i for i, t in enumerate(tags) if t in PROPER_TAGS) - self._head_ids
        self._noun_ids = self._head_ids | self._proper_ids
        self._proper_tags = frozenset(i for i, t in enumerate(tags) if t in PROPER_TAGS)
        self._inner_ids = frozenset(i for i, t in enumerate(tags) if t in _INNER_TAGS)
        self._colloc_ids = self._noun_ids | self._inner_ids  # tags a word that matters here can carry
        self._vbg = tags.index("VBG")
        self._predicate_ids = frozenset(i for i, t in enumerate(tags) if t in _PREDICATE_BEFORE)
        self._nn = tags.index("NN")
        self._plural_ids = frozenset(i for i, t in enumerate(tags) if t in ("NNS", "NNPS"))
        self._subject_ids = frozenset(i for i, t in enumerate(tags) if t in _SUBJECT_TAGS)
        self._initial_ids = frozenset(i for i, t in enumerate(tags) if t in _INITIAL_MISREAD)
        self._verb_after_ids = frozenset(i for i, t in enumerate(tags) if t in ("VB", "VBG", "VBZ", "VBP", "VBD", "MD"))
        self._jj, self._cc = tags.index("JJ"), tags.index("CC")
        self._link_ids = frozenset(i for i, t in enumerate(tags) if t in ("IN", "CC", ",", "TO"))
        self._vbz = tags.index("VBZ")
        self._modifier_ids = frozenset(i for i, t in enumerate(tags) if t in ("JJ", "JJR", "JJS", "CD", "VBN"))
        self._determiner_ids = frozenset(i for i, t in enumerate(tags) if t in ("DT", "PRP$", "CD"))
        self._clause_start_ids = frozenset(i for i, t in enumerate(tags) if t in ("CC", ",", ":", "."))
        self._after_verb_ids = frozenset(i for i, t in enumerate(tags) if t in ("DT", "IN", "RP", "PRP$", "TO", "RB"))
        self._pieces: dict[str, tuple] = {}
        self._pieces_first: dict[str, tuple] = {}
        self._colloc_key: dict[tuple[str, ...], str | None] = {}
        self._compounds: dict[tuple[str, str], str | None] = {}
        self._corenet_key: dict[str, str | None] = {}
        self._word_rules: dict[tuple[str, str], bool] = {}  # (rule, word) -> answer: each asked once per word

    # ------------------------------------------------------------------ word → key (cached)

    def _span_key(self, words: tuple[str, ...], capitalised: bool = True, modifier: bool = False) -> str | None:
        """First sense of a multi-word noun. Written in lower case it may only mean what WordNet writes in lower
        case (not "White House"); after a modifier that is not a noun ("yellow/JJ jacket") only a sense that is
        a kind of its head noun counts (a hot dog is a frank, a yellow jacket is no jacket)."""
        cache = (words, capitalised, modifier)
        key = self._colloc_key.get(cache, "")
        if key == "":
            forms = self.wordnet.morphy("_".join(words))
            senses = []
            if forms:
                wn = self.wordnet
                senses = wn.noun_synsets(forms[0]) if capitalised else wn.common_senses(forms[0], False)
                if modifier:
                    senses = [k for k in senses if wn.is_kind_of(k, words[-1]) or wn.named_kind(k, forms[0])]
            key = senses[0] if senses else None
            _remember(self._colloc_key, cache, key)
        return key

    # ------------------------------------------------------------------ paper style

    def _collocation(self, low: list[str], tags: list[int], prev_tag: int) -> tuple[str | None, int]:
        """(key, length) of the longest multi-word noun at the start of `low` (tags aligned, `prev_tag` = tag of
        the word before); (None, length) for a named entity consumed without a label; else (None, 0)."""
        longest = self.wordnet.collocation_starts.get(low[0])
        if longest is None:
            return None, 0
        for n in range(min(longest, len(low)), 1, -1):
            if tags[n - 1] in self._noun_ids and self._inner_ok(tags, n, prev_tag):
                capitalised = any(t in self._proper_tags for t in tags[:n])
                # a capitalised modifier names a kind ("German Shepherd", "Great Dane"): no composition check
                key = self._span_key(tuple(low[:n]), capitalised, tags[0] not in self._noun_ids and not capitalised)
                if key is not None and self.wordnet.is_instance(key):
                    # A named entity needs a capitalised word: lower-case "little dog" is a dog, not Canis Minor.
                    if not capitalised:
                        continue
                    # It is consumed whole, so its words do not become labels one by one ("Times Square" is
                    # not a "square"); it is a label only with proper_nouns=True.
                    return (key if self.proper_nouns else None), n
                if key is not None:
                    return key, n
        return None, 0

    def _inner_ok(self, tags: list[int], n: int, prev_tag: int) -> bool:
        inner = self._inner_ids
        for j in range(n - 1):
            t = tags[j]
            if t not in inner:
                return False
            if t == self._vbg and (tags[j - 1] if j else prev_tag) in self._predicate_ids:
                return False
        return True

    def _token_info(self, word: str, first: bool) -> tuple:
        """(tag candidates, lower-case form, words that may follow it in a multi-word noun, key if a noun,
        base forms, the tag if unambiguous else -1, key if tagged as a plural, known to the tagger or WordNet)."""
        low = word.lower()
        bases = self.wordnet.morphy(low)
        # A capital at the start of a caption says nothing; elsewhere it allows the senses WordNet capitalises.
        lower = word == low
        key = self._sense(bases[0], lower) if bases else None
        if first and not lower and bases:  # a sentence-initial capital says nothing: prefer lower-case senses
            key = self._sense(bases[0], True) or key
        plural_key = key
        if bases and bases[0] == low:
            singular = self.wordnet.singulars(low)
            if singular and key is not None and not self.wordnet.plural_only(key) \
                    and key not in self.wordnet.noun_synsets(singular[0]):
                # "shoes" is also a lemma (in my shoes = situation), but a plural noun means more shoes
                plural_key = self._sense(singular[0], lower or first)
        # The word's spellings a multi-word noun may continue with ("ice creams" ends in "cream").
        forms = tuple(dict.fromkeys([low, *bases]))
        cands = self.tagger.candidates(word, first)
        anchor = cands[0][0] if len(cands) == 1 else -1
        return (cands, low, self.wordnet.collocation_next.get(low), key, forms, anchor, plural_key,
                bool(bases) or self._knows(low))

    def _sense(self, base: str, lower: bool) -> str | None:
        """First sense of a noun lemma: of its American spelling ("colour" → color), and for a word written in
        lower case only among the senses WordNet writes in lower case ("jersey" is a garment, not New Jersey)."""
        wn = self.wordnet
        base = wn.american(base)
        senses = wn.common_senses(base) if lower else wn.noun_synsets(base)
        return senses[0] if senses else None

    def _piece(self, piece: str, first: bool) -> tuple[tuple[str, ...], tuple]:
        """Tokens of one whitespace-separated piece and their records, cached per piece."""
        tokens = tuple(tokenize_piece(piece))
        rec = (tokens, tuple(self._token_info(t, first and i == 0) for i, t in enumerate(tokens)))
        _remember(self._pieces_first if first else self._pieces, piece, rec)
        return rec

    def _extract_paper(self, caption: str) -> list[str]:
        text = normalize(caption)
        pieces = text.split()
        if not pieces:
            return []
        if _title_case(pieces):
            pieces = [self._untitle(p) for p in pieces]
        p0 = pieces[0]
        if p0[:1].isupper():  # a sentence-initial capital is looked up differently
            tokens, infos = self._pieces_first.get(p0) or self._piece(p0, True)
        else:
            tokens, infos = self._pieces.get(p0) or self._piece(p0, False)
        tokens, infos = list(tokens), list(infos)
        get = self._pieces.get
        for piece in pieces[1:]:
            rec = get(piece) or self._piece(piece, False)
            tokens += rec[0]
            infos += rec[1]
        if self.language is not None and self._foreign(all(map(_KNOWN, infos)), text):
            return []
        tags = self.tagger.decode(tokens, [inf[0] for inf in infos], [inf[5] for inf in infos])
        if tags[0] in self._initial_ids and self._bare_noun_start(tokens, infos, tags):
            tags = [self._nn, *tags[1:]]
        if not self._plural_ids.isdisjoint(tags[1:-1]):
            tags = self._subject_verbs(infos, tags)
        maybe = self._colloc_ids
        picks = [i for i, tag in enumerate(tags) if tag in maybe]
        if not picks:
            return []
        heads, proper = self._head_ids, self._proper_ids
        out: list[str] = []
        n, skip_to = len(tokens), 0
        for i in picks:
            if i < skip_to:
                continue
            info = infos[i]
            if info[1] in _IDIOM_AT and self._idiom(infos, i):
                continue
            follow = info[2]
            if follow is not None and i + 1 < n and not follow.isdisjoint(infos[i + 1][4]):
                span_max = i + self.wordnet.max_collocation_words
                key, span = self._collocation([inf[1] for inf in infos[i:span_max]], tags[i:span_max],
                                              tags[i - 1] if i else -1)
                if span:
                    if key is not None and key not in out:
                        out.append(key)
                    skip_to = i + span
                    continue
            if tags[i] in heads or (tags[i] in proper and self._common(info[3])):
                if i and info[1].endswith("ing") and tags[i - 1] in self._subject_ids and self._verb_ing(info):
                    continue
                nxt = tags[i + 1] if i + 1 < n else -1
                if nxt in heads or (nxt in proper and self._common(infos[i + 1][3])):
                    key = self._compound(info[1], infos[i + 1][1])
                    if key is not None:
                        if key not in out:
                            out.append(key)
                        skip_to = i + 2
                        continue
                    if self._colour_modifier(info):
                        continue
                key = info[6] if tags[i] in self._plural_ids else info[3]
                if key is not None and key not in out:
                    out.append(key)
        return out

    def _idiom(self, infos: list[tuple], i: int) -> bool:
        """Whether the noun at `i` is the noun of one of `_IDIOMS` there."""
        for phrase, at in _IDIOM_AT[infos[i][1]]:
            start = i - at
            if start >= 0 and start + len(phrase) <= len(infos) \
                    and all(infos[start + j][1] == w for j, w in enumerate(phrase)):
                return True
        return False

    def _foreign(self, all_known: bool, text: str) -> bool:
        """Whether the caption is to be skipped as not in `languages` (counted by the filter)."""
        if self._known_is_wanted and all_known:
            return False
        return self.language.foreign(text)

    def _knows(self, word: str) -> bool:
        wn = self.wordnet
        return not word.isalpha() or bool(self.tagger.counts(word) or wn.parts_of_speech(word) or wn.morphy(word))

    def _known_token(self, word: str) -> bool:
        return self._rule("known", word, self._knows)

    @property
    def skipped(self) -> Counter:
        """Captions skipped per detected language (empty without a language filter)."""
        return self.language.skipped if self.language is not None else Counter()

    def _rule(self, rule: str, word: str, answer) -> bool:
        """Per-word answers of the rules below, computed once (words repeat across captions)."""
        cached = self._word_rules.get((rule, word))
        if cached is None:
            cached = bool(answer(word))
            _remember(self._word_rules, (rule, word), cached)
        return cached

    def _colour_modifier(self, info: tuple) -> bool:
        """A colour word before a noun ("a small orange flower", "a silver car") describes it: WordNet files its
        noun sense under attributes (a colour) or knows it as an adjective whose noun is a fruit or metal."""
        wn = self.wordnet
        return info[3] is not None and self._rule(
            "colour", info[1], lambda w: "adj" in wn.parts_of_speech(w) and wn.is_colour_word(w))

    def _verb_ing(self, info: tuple) -> bool:
        """An -ing word after a noun or pronoun ("a person standing", "a dog swimming") is a verb when its noun
        reading is an action or state (standing = social status, swimming = the sport); a thing one can see
        ("a brick building", "a wall painting") stays a noun."""
        key, wn = info[3], self.wordnet
        return key is None or self._rule(
            "verb_ing", info[1], lambda w: "VBG" in wn.parts_of_speech(w) and not wn.is_concrete(key))

    def _bare_noun_start(self, tokens: list[str], infos: list[tuple], tags: list[int]) -> bool:
        """Captions often start with a bare noun that the tagger reads as a verb or adjective ("kitten sleeping
        on a bed", "Dog runs", "Female in a green shirt"): a first word with a noun sense followed by a verb is
        the subject; an "adjective" followed by a preposition or conjunction has nothing to modify, so it is a
        noun too ("Black and white dog" is not: the conjunction joins adjectives); a verb followed by a
        preposition only when the lexicon does not say it is mostly a verb ("look at ...")."""
        if infos[0][3] is None:
            return False
        nxt = tags[1] if len(tags) > 1 else -1
        if nxt in self._verb_after_ids or nxt == -1:
            return True
        if nxt not in self._link_ids:
            return False
        if tags[0] == self._jj:
            after = tags[2] if len(tags) > 2 else -1
            return nxt != self._cc or after not in self._modifier_ids
        counts = self.tagger.counts(tokens[0].lower())
        if not counts:
            return True
        noun = sum(c for t, c in counts.items() if t.startswith("NN"))
        return noun >= sum(c for t, c in counts.items() if not t.startswith("NN"))

    def _subject_verbs(self, infos: list[tuple], tags: list[int]) -> list[int]:
        """"A man skis down a slope", "Dalmatian runs through the woods": a noun phrase (a bare noun at the
        start, or determiner [adjectives] noun), then an -s word that can be a verb, then a determiner,
        preposition or particle — the -s word is the verb, not a plural noun ("skis" is no ski here)."""
        tags = list(tags)
        for i in range(1, len(tags) - 1):
            if tags[i] not in self._plural_ids or tags[i + 1] not in self._after_verb_ids:
                continue
            subject = i - 1
            if infos[subject][3] is None or tags[subject] in self._plural_ids:
                continue
            if subject == 0:
                if tags[0] not in self._head_ids and tags[0] not in self._initial_ids:
                    continue
            else:
                j = subject - 1
                while j >= 0 and tags[j] in self._modifier_ids:
                    j -= 1
                if tags[subject] not in self._head_ids or j < 0 or tags[j] not in self._determiner_ids \
                        or (j and tags[j - 1] not in self._clause_start_ids):
                    continue
            if self._can_be_vbz(infos[i][1]):
                tags[subject], tags[i] = self._nn if tags[subject] not in self._head_ids else tags[subject], self._vbz
        return tags

    def _can_be_vbz(self, word: str) -> bool:
        return self._rule("vbz", word, self._vbz_reading)

    def _vbz_reading(self, word: str) -> bool:
        counts = self.tagger.counts(word)  # WSJ's verdict where it saw the word often ("officers" never a verb)
        if "VBZ" in counts or sum(counts.values()) >= 5:
            return "VBZ" in counts
        return "VBZ" in self.wordnet.parts_of_speech(word)  # rare or unseen in WSJ: what WordNet allows

    def _untitle(self, piece: str) -> str:
        """A Title Case word as it would be written in a sentence: lower-case when the tagger's lexicon or WordNet
        knows the lower-case word; unknown words (names) keep their capital."""
        low = piece.lower()
        if piece == low:
            return piece
        word = low.strip(".,;:!?\"'()")
        if self.tagger.counts(word) or self.wordnet.parts_of_speech(word):
            return low
        return piece

    def _common(self, key: str | None) -> bool:
        """Whether a word tagged as a name still counts: its sense is a common noun, not a named entity (breed
        names, "Frisbee"); "Paris" (an instance of city) stays a name. Asked only for proper-noun tags."""
        return key is not None and not self.wordnet.is_instance(key)

    def _compound(self, first: str, second: str) -> str | None:
        """Two nouns that WordNet writes as one word ("cell phone" → cellphone, "sun glasses" → sunglasses)."""
        pair = (first, second)
        key = self._compounds.get(pair, "")
        if key == "":
            forms = self.wordnet.morphy(first + second) if first.isalpha() and second.isalpha() else []
            key = self.wordnet.first_synset(forms[0]) if forms else None
            _remember(self._compounds, pair, key)
        return key

    # ------------------------------------------------------------------ corenet style

    def _nltk_lemma(self, word: str) -> str:
        """NLTK WordNetLemmatizer for nouns: the shortest known base form (ties: first found), else the word."""
        wn = self.wordnet
        exc = wn._exceptions.get(word)
        if exc is not None:
            forms = [f for f in dict.fromkeys((word,) + exc) if wn.has_lemma(f)]
        else:
            forms = [f for f in dict.fromkeys([word] + _detach(word)) if wn.has_lemma(f)]
            todo = _detach(word)
            while not forms and todo:
                todo = [g for f in todo for g in _detach(f)]
                forms = [f for f in dict.fromkeys(todo) if wn.has_lemma(f)]
        return min(forms, key=len) if forms else word

    def _corenet_word(self, word: str) -> str | None:
        key = self._corenet_key.get(word, "")
        if key == "":
            lemma = self._nltk_lemma(word)
            first = self.wordnet.first_synset(lemma)
            key = first if first is not None and self.wordnet.synset_lemmas(first)[0].lower() == lemma else None
            _remember(self._corenet_key, word, key)
        return key

    def _extract_corenet(self, caption: str) -> list[str]:
        out: list[str] = []
        # corenet's caption_preprocessing: URL-unquote, "+" → space, then (in tokenize) HTML and whitespace clean-up
        if "%" in caption or "+" in caption:
            caption = urllib.parse.unquote(caption).replace("+", " ")
        tokens = tokenize(caption.lower())
        if self.language is not None and self._foreign(all(map(self._known_token, tokens)), caption):
            return []
        for tok in tokens:
            key = self._corenet_word(tok)
            if key is not None and key not in out:
                out.append(key)
        return out

    # ------------------------------------------------------------------ public

    def extract(self, caption: str) -> list[str]:
        """Synset keys of `caption`; never raises on any string (junk yields no labels)."""
        if not isinstance(caption, str):
            return []
        caption = caption[:MAX_CHARS]  # later steps cut too; this bounds the unquoting and the language check
        if not caption.strip():
            return []
        if self.style == "corenet":
            return self._extract_corenet(caption)
        return self._extract_paper(caption)

    def name(self, key: str) -> str:
        return self.wordnet.name(key)


def _title_case(pieces: list[str]) -> bool:
    """Whether a caption is written in Title Case ("A Dog Running On The Beach"): most words after the first
    capitalised. A name inside a sentence ("a man in New York City") is not."""
    if len(pieces) < 4 or pieces[1][:1].islower() and pieces[2][:1].islower():  # the common case, decided fast
        return False
    words = [p for p in pieces[1:] if p[:1].isalpha()]
    return len(words) >= 3 and sum(w[0].isupper() for w in words) >= 0.75 * len(words)


def _remember(cache: dict, key, value) -> None:
    # Web-scale text has an endless tail of junk words: drop the cache rather than grow without bound.
    if len(cache) >= _MAX_CACHE:
        cache.clear()
    cache[key] = value


def _detach(form: str) -> list[str]:
    from catlip.labels.wordnet import _NOUN_RULES

    return [form[: -len(old)] + new for old, new in _NOUN_RULES if form.endswith(old)]
