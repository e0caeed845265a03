"""Count the six classes of clearly wrong CatLIP labels (issue #8) on every Flickr8k caption.

Run: .venv/bin/python benchmarks/label_errors.py [--baseline-src OLD/src] [--json OUT] [--examples N]

With --baseline-src (e.g. `git worktree add /tmp/before d5f839c`, the commit before the fixes, then
`--baseline-src /tmp/before/src`) the same count also runs on that older extractor in a subprocess, and the JSON
(default benchmarks/results/label_errors.json) holds both with the reduction per class.

Each detector looks only at the caption text, the extractor's output keys and WordNet, never at the extractor's
internals, so the same script measures any version of the extractor (run it with PYTHONPATH pointing at an
older checkout's src/ for the "before" numbers). A label is attributed to the caption word(s) whose WordNet
senses contain it. The classes:

1. plural_lemma: a plural word ("shoes") labelled with a sense of the plural's own lemma (n13926786 "place, as
   in 'in my shoes'") that its singular does not have, when that sense is not a concrete thing named only in the
   plural (glasses, shorts, stairs are right);
2. lowercase_instance: a named entity, or a sense WordNet writes only with a capital ("New Jersey", "Jersey"),
   for a word or phrase written in lower case;
3. adjective_compound: a multi-word noun whose first word is an adjective here ("yellow jacket", "black box")
   and whose sense is not a kind of its head noun (a hot dog is a dog sense, a high school a school: right);
4. ing_after_noun: a noun sense of an -ing verb form that follows a noun or pronoun ("a person standing");
5. initial_noun_lost / title_case: a caption-initial bare noun before a verb or preposition without its label
   ("kitten sleeping on a bed"); Title Case captions whose labels differ from the lower-cased caption's. Real
   Flickr8k captions rarely do either, so each caption starting with "A"/"An" is also rewritten without its
   article (bare_start_rewrite: labels lost) and in Title Case (title_case_rewrite: labels changed);
6. spelling_noise: British spellings labelled differently from the American one, accented words, hyphenated
   compounds WordNet knows without a label, and labels taken from bare domain names.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CATLIP_SHARED_DATA", ROOT.parent / "shared" / "data"))

CONCRETE_LEXFILES = {"05", "06", "08", "13", "17", "20", "27"}  # animal, artifact, body, food, object, plant, substance
PRONOUNS = {"he", "she", "it", "they", "we", "i", "you", "who", "someone", "somebody", "everyone", "one"}
PREPOSITIONS = {"in", "on", "at", "with", "by", "near", "under", "over", "behind", "from", "of", "through",
                "into", "onto", "across", "along", "and", "is", "are", "runs", "jumps", "plays", "sits", "walks"}
FUNCTION = {"a", "an", "the", "two", "three", "four", "five", "several", "many", "some", "this", "that", "these",
            "those", "there", "here", "one", "people", "black", "white", "brown", "little", "young", "small", "big"}
TLD = ("com", "org", "edu", "gov", "io", "uk", "info", "biz")
WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*", re.UNICODE)
# A few British → American spellings, as rules (not a list of captions): -our, -tre, -ise nouns, -ll-, grey.
UK_RULES = ((r"our$", "or"), (r"our(s)$", r"or\1"), (r"tre$", "ter"), (r"tres$", "ters"), (r"^grey", "gray"),
            (r"isation$", "ization"), (r"ogue$", "og"), (r"ellery$", "elry"), (r"yre(s?)$", r"ire\1"),
            (r"^pyjama", "pajama"), (r"^aeroplane", "airplane"), (r"^moustache", "mustache"))


class Checker:
    def __init__(self, extractor):
        from catlip.labels.wordnet import get_wordnet

        self.ex = extractor
        self.wn = get_wordnet()
        self._lexfile: dict[str, str] = {}

    # -------------------------------------------------------------- WordNet helpers (independent of the extractor)

    def lexfile(self, key: str) -> str:
        if key not in self._lexfile:
            off = int(key[1:])
            line = self.wn._data[off:self.wn._data.find(b"\n", off)]
            self._lexfile[key] = line.split()[1].decode()
        return self._lexfile[key]

    def senses(self, word: str) -> set[str]:
        return set(self.wn.noun_synsets(word))

    def singulars(self, word: str) -> list[str]:
        if word.endswith("ss") or not word.endswith("s"):
            return []
        forms = list(self.wn._exceptions.get(word, ()))
        forms += [word[: -len(old)] + new for old, new in (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"),
                                                            ("ches", "ch"), ("shes", "sh"), ("ies", "y"))
                  if word.endswith(old)]
        return [f for f in dict.fromkeys(forms) if f != word and self.wn.has_lemma(f)]

    def plural_only(self, key: str) -> bool:
        lemmas = self.wn.synset_lemmas(key)
        return self.lexfile(key) in CONCRETE_LEXFILES and all(lem.split("_")[-1].endswith("s") for lem in lemmas)

    def capitalised_only(self, key: str, form: str) -> bool:
        """A named entity that WordNet does not also write in lower case as `form` (the star "sun" is fine)."""
        return self.wn.is_instance(key) and form not in self.wn.synset_lemmas(key) or (
            any(lem.lower() == form for lem in self.wn.synset_lemmas(key))
            and not any(lem == form for lem in self.wn.synset_lemmas(key))
            and any(not self.wn.is_instance(k) and form in self.wn.synset_lemmas(k) for k in self.senses(form)))

    def adjective_first(self, word: str) -> bool:
        classes = self.wn.parts_of_speech(word)
        return "adj" in classes and "noun" not in classes or word in FUNCTION

    def kind_of_head(self, key: str, head: str) -> bool:
        """A kind of the head noun, or a sibling of one of its senses (young lady: a girl; rural area: a country)."""
        heads = set()
        for form in self.wn.morphy(head) or [head]:
            heads |= self.senses(form)
        near = heads | {p for h in heads for p in self.wn.hypernyms(h)}
        return key in heads or bool(near & set(self.wn._ancestor_distances(key)))

    # -------------------------------------------------------------- detectors

    def check(self, caption: str) -> dict[str, list[str]]:
        keys = self.ex.extract(caption)
        found: dict[str, list[str]] = defaultdict(list)
        words = WORD.findall(caption)
        low = [w.lower() for w in words]
        keyset = set(keys)
        for i, w in enumerate(low):
            cased = words[i]
            if i and cased[:1].isupper():
                continue
            # 1. plural nouns read as their own lemma
            if self.wn.has_lemma(w):
                for s in self.singulars(w):
                    wrong = (keyset & self.senses(w)) - self.senses(s)
                    for k in wrong:
                        if not self.plural_only(k):
                            found["plural_lemma"].append(f"{w}->{self.wn.name(k)}")
            # 2. capitalised senses for lower-case words (single words and phrases)
            for n in range(1 if len(w) > 2 else 2, 4):
                if i + n > len(low):
                    break
                phrase = "_".join(low[i:i + n])
                forms = self.wn.morphy(phrase) if n > 1 else (self.wn.morphy(w) + [w])
                for form in dict.fromkeys(forms):
                    for k in keyset & self.senses(form):
                        if self.capitalised_only(k, form) and not any(x[:1].isupper() for x in words[i + 1:i + n]):
                            found["lowercase_instance"].append(f"{phrase}->{self.wn.name(k)}")
            # 3. adjective + noun read as an unrelated compound
            if i + 1 < len(low) and self.adjective_first(w):
                for n in (2, 3):
                    if i + n > len(low):
                        break
                    for form in self.wn.morphy("_".join(low[i:i + n])):
                        for k in keyset & self.senses(form):
                            if not self.kind_of_head(k, low[i + n - 1]):
                                found["adjective_compound"].append(f"{form}->{self.wn.name(k)}")
            # 4. -ing verb forms after a noun or pronoun
            if i and w.endswith("ing") and "VBG" in self.wn.parts_of_speech(w):
                prev = low[i - 1]
                prev_noun = prev in PRONOUNS or any(keyset & self.senses(f) for f in self.wn.morphy(prev))
                if prev_noun:
                    for k in keyset & self.senses(w):
                        if self.lexfile(k) in CONCRETE_LEXFILES:  # a brick building, winter clothing: nouns
                            continue
                        found["ing_after_noun"].append(f"{prev} {w}->{self.wn.name(k)}")
            # 6. spelling and noise
            self._spelling(w, i, low, keyset, found)
        # 5. sentence-initial bare nouns; Title Case captions
        if len(low) >= 2 and low[0] not in FUNCTION and low[0] not in PRONOUNS:
            second = low[1]
            if second.endswith("ing") or second in PREPOSITIONS:
                forms = self.wn.morphy(low[0])
                first = self.wn.first_synset(forms[0]) if forms else None
                concrete = first is not None and self.lexfile(first) in CONCRETE_LEXFILES | {"18"}
                named = first is not None and self.capitalised_only(first, forms[0])
                compound = any(keyset & self.senses(f) for f in self.wn.morphy("_".join(low[:2])))
                if concrete and not named and not compound and not w_is_modifier(low[0], self.wn):
                    if not (keyset & set().union(*(self.senses(f) for f in forms))):
                        found["initial_noun_lost"].append(low[0])
        # 5b. the same caption rewritten as a bare-noun start ("A dog runs" → "Dog runs") and in Title Case:
        # every label that changes is an error of this class (Flickr8k itself has few such captions)
        first, _, rest = caption.partition(" ")
        if first.lower() in ("a", "an") and rest[:1].isalpha():
            # only the new first word, and only where it heads its phrase: before a preposition, a conjunction,
            # a comma or a verb form ("Dog runs", "Female in ..."), not as a modifier ("Silver car")
            r = WORD.findall(rest.lower())
            head = len(r) > 1 and (r[1] in PREPOSITIONS or r[1] in (",", "and") or r[1].endswith("ing")
                                   or r[1].endswith("s") and "VBZ" in self.wn.parts_of_speech(r[1]))
            mine = set().union(*(self.senses(f) for f in self.wn.morphy(r[0]))) if head else set()
            for k in (keyset & mine) - set(self.ex.extract(rest[:1].upper() + rest[1:])):
                if self.lexfile(k) in CONCRETE_LEXFILES | {"18"}:  # a thing or person lost
                    found["bare_start_rewrite"].append(self.wn.name(k))
            titled = " ".join(x[:1].upper() + x[1:] for x in caption.split())
            for k in keyset ^ set(self.ex.extract(titled)):
                found["title_case_rewrite"].append(self.wn.name(k))
        caps = words[1:]  # Title Case: three quarters of the words after the first capitalised
        if len(caps) >= 3 and sum(x[:1].isupper() for x in caps) >= 0.75 * len(caps) and not caption.isupper():
            lower = set(self.ex.extract(caption.lower()))
            for k in keyset ^ lower:
                found["title_case"].append(self.wn.name(k))
        return found

    def _spelling(self, w: str, i: int, low: list[str], keyset: set, found) -> None:
        for pattern, repl in UK_RULES:
            us = re.sub(pattern, repl, w)
            if us == w or not self.wn.has_lemma(us) and not self.wn.morphy(us):
                continue
            if self.wn.has_lemma(w) and not self.senses(w) & self.senses(us):  # tour/tor: not a spelling pair
                continue
            us_forms = self.wn.morphy(us)
            want = self.wn.first_synset(us_forms[0]) if us_forms else None
            if want is None or self.wn.is_instance(want):
                continue
            got = keyset & set().union(*(self.senses(f) for f in (self.wn.morphy(w) or [w])))
            if want not in keyset and (got or not self.wn.morphy(w)):
                found["spelling_noise"].append(f"{w}: want {self.wn.name(want)}")
        if not w.isascii():
            folded = "".join(c for c in unicodedata.normalize("NFKD", w) if not unicodedata.combining(c))
            forms = self.wn.morphy(folded) if not self.wn.morphy(w) else []
            if forms and self.wn.first_synset(forms[0]) not in keyset:
                found["spelling_noise"].append(f"{w}: accent")
        if "-" in w and (i + 1 == len(low) or low[i + 1] in PREPOSITIONS):  # a compound in head position
            for form in (w.replace("-", "_"), w.replace("-", "")):
                if self.wn.has_lemma(form) and not self.wn.has_lemma(w) and not (keyset & self.senses(form)):
                    found["spelling_noise"].append(f"{w}: hyphen")
                    break
        if i + 1 < len(low) and low[i + 1] in TLD:
            for k in keyset & set().union(*(self.senses(f) for f in (self.wn.morphy(w) or [w]))):
                found["spelling_noise"].append(f"{w}.{low[i + 1]}: domain")


def w_is_modifier(word: str, wn) -> bool:
    """-ing/-ly words and words WordNet knows as adjectives (red, blond, female) are no bare-noun subjects."""
    return word.endswith(("ing", "ly")) or "adj" in wn.parts_of_speech(word)


CLASSES = ("plural_lemma", "lowercase_instance", "adjective_compound", "ing_after_noun", "initial_noun_lost",
           "title_case", "bare_start_rewrite", "title_case_rewrite", "spelling_noise")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", default=str(SHARED / "flickr8k" / "captions.token.txt"))
    parser.add_argument("--json", help="write the counts and examples to this JSON file")
    parser.add_argument("--examples", type=int, default=8, help="most frequent examples to print per class")
    parser.add_argument("--baseline-src", help="src/ folder of an older catlip to count too (in a subprocess)")
    args = parser.parse_args()
    if args.baseline_src:
        compare(args)
        return
    path = Path(args.captions)
    if not path.is_file():
        sys.exit(f"skipped: {path} not found (needs ../shared/data/flickr8k)")
    from catlip.labels.synsets import SynsetExtractor

    captions = [line.split("\t", 1)[1] for line in path.read_text(encoding="utf-8").splitlines() if "\t" in line]
    checker = Checker(SynsetExtractor())
    counts: Counter = Counter()
    examples: dict[str, Counter] = defaultdict(Counter)
    for caption in captions:
        for cls, hits in checker.check(caption).items():
            counts[cls] += len(hits)
            examples[cls].update(hits)
    import catlip

    result = {"captions": len(captions), "catlip_source": str(Path(catlip.__file__).parent),
              "counts": {c: counts[c] for c in CLASSES}, "total": sum(counts.values()),
              "examples": {c: examples[c].most_common(args.examples) for c in CLASSES}}
    print(f"{len(captions)} captions, extractor from {result['catlip_source']}")
    for c in CLASSES:
        top = ", ".join(f"{e} ({n})" for e, n in examples[c].most_common(args.examples))
        print(f"  {c:20s} {counts[c]:6d}   {top}")
    print(f"  {'total':20s} {result['total']:6d}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


def compare(args) -> None:
    import subprocess
    import tempfile

    runs = {}
    for name, src in (("before", args.baseline_src), ("after", str(ROOT / "src"))):
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            env = dict(os.environ, PYTHONPATH=src)
            subprocess.run([sys.executable, __file__, "--captions", args.captions, "--json", tmp.name,
                            "--examples", str(args.examples)], env=env, check=True)
            runs[name] = json.loads(Path(tmp.name).read_text())
    before, after = runs["before"]["counts"], runs["after"]["counts"]
    runs["reduction"] = {c: round(before[c] / max(after[c], 1), 1) for c in CLASSES}
    runs["reduction"]["total"] = round(runs["before"]["total"] / max(runs["after"]["total"], 1), 1)
    out = Path(args.json or ROOT / "benchmarks" / "results" / "label_errors.json")
    out.write_text(json.dumps(runs, indent=1) + "\n")
    print(f"total {runs['before']['total']} -> {runs['after']['total']} "
          f"({runs['reduction']['total']}x fewer); written to {out}")


if __name__ == "__main__":
    main()
