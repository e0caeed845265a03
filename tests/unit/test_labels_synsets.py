"""CatLIP extractor: hand-worked captions → WordNet synset keys."""

import subprocess
import sys

import pytest

from catlip.labels import get_extractor
from catlip.labels.synsets import SynsetExtractor

MAN, BICYCLE, CHILD, PHOTO, ICE_CREAM, HYDRANT = ("n10287213", "n02834778", "n09917593", "n03925226",
                                                  "n07614500", "n03346898")
TELEVISION = {"n06277280", "n04405907"}
CHURCH = {"n08082602", "n03028079"}


@pytest.fixture(scope="module")
def ex():
    return get_extractor("catlip")


def test_men_bicycles_church(ex):
    keys = ex.extract("Two men ride bicycles past a church")
    assert keys[:2] == [MAN, BICYCLE] and keys[2] in CHURCH and len(keys) == 3  # no "ride", "past", "two"


def test_photo_child_ice_cream(ex):
    assert ex.extract("A photo of a child eating an ice cream") == [PHOTO, CHILD, ICE_CREAM]


def test_kids_tv_fire_hydrant(ex):
    keys = ex.extract("The kids watch tv near the fire hydrant")
    assert keys[0] == CHILD and keys[1] in TELEVISION and keys[2] == HYDRANT and len(keys) == 3


def test_synonyms_merge_and_no_duplicates(ex):
    assert ex.extract("a photo and a photograph of a dog and two dogs") == [PHOTO, "n02084071"]
    assert ex.extract("ice cream and more ice creams") == [ICE_CREAM]


def test_first_occurrence_order(ex):
    assert ex.extract("a cat chases a dog") == ["n02121620", "n02084071"]
    assert ex.extract("a dog chases a cat") == ["n02084071", "n02121620"]


def test_collocations_respect_grammar(ex):
    assert "n03679712" in ex.extract("a cat in the living room")  # living room, VBG modifier
    assert ex.extract("a man is riding horse") == [MAN, "n02374451"]  # not "riding horse" (saddle horse)


def test_proper_nouns_option():
    plain, proper = SynsetExtractor(), SynsetExtractor(proper_nouns=True)
    caption = "A man walks through Paris"
    assert plain.extract(caption) == [MAN]
    assert proper.extract(caption) == [MAN, "n08932568"]  # Paris, France: its first sense


def test_corenet_style_keeps_only_head_words():
    core = SynsetExtractor(style="corenet")
    keys = core.extract("A photo of kids eating an ice cream")
    # photo -> photograph.n.01 and kid -> child.n.01 are named after another word: dropped;
    # "ice" and "cream" are separate tokens; "eating" is kept because eating.n.01 exists (tags are ignored)
    names = [core.name(k) for k in keys]
    assert "photograph" not in names and "child" not in names
    assert {"eating", "ice", "cream"} <= set(names)
    assert core.extract("Two dogs") == ["n13743269", "n02084071"]  # "two" is a noun sense too


def test_bad_input_never_crashes(ex):
    for caption in ["", "   ", "\n\t", "x" * 100_000, "\x00\x01\x1b[31m", "🐱🐶🎉", "猫が座っている",
                    "Кошка сидит", "&amp;&lt;&gt;&#x1F600;", "http://example.com/dog.jpg", "'''", "-", "@@@",
                    "dog " * 5000]:
        keys = ex.extract(caption)
        assert isinstance(keys, list) and len(keys) == len(set(keys))
    assert ex.extract("") == [] and ex.extract("   ") == []
    assert ex.extract("quickly and very slowly") == []  # no nouns, no labels
    assert ex.extract("Fish &amp; chips") == ["n02512053", "n07711080"]  # fish, chips (= french fries)
    assert ex.extract("a dog near https://www.cats.com/cat") == ["n02084071"]  # the URL is dropped


def test_not_a_string_gives_no_labels(ex):
    assert ex.extract(None) == []
    assert ex.extract(42) == []


def test_labels_package_never_imports_torch():
    code = ("import sys; from catlip.labels import get_extractor; from catlip.labels.vocab import Vocabulary;"
            "import catlip.labels.tools, catlip.labels.corpus;"
            "get_extractor('catlip').extract('a dog'); get_extractor('superclass').extract('a dog');"
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_random_unicode_never_raises():
    import random

    rng = random.Random(0)
    pools = ["abcdefghij ABC .,;:'\"-!?&#;<>/", "éüñçß ÀÉ", "猫犬鳥 ひらがな", "🐱🐶🎉👍🏽", "\x00\x07\x1b\x7f\u200b\ufeff",
             "\ud800\udfff", "0123456789%$"]
    extractors = [get_extractor("catlip"), get_extractor("catlip", style="corenet", proper_nouns=False),
                  get_extractor("catlip", proper_nouns=True), get_extractor("superclass", stopwords=True)]
    for _ in range(300):
        text = "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(0, 80)))
        for ex in extractors:
            keys = ex.extract(text)
            assert len(keys) == len(set(keys))


# Hand-checked: each key is the first WordNet noun sense of the caption's nouns (collocations and one-word
# compounds merged, plurals and irregular forms reduced), in order of first mention.
GOLDEN = [
    ("A girl in a pink dress is climbing the stairs of a wooden house .",
     ["girl", "dress", "stairs", "house"]),
    ("A black dog and a spotted dog are fighting", ["dog"]),
    ("Children play soccer on a grassy field in the park", ["child", "soccer", "field", "park"]),
    ("A woman wearing sunglasses sits on a bench near the ocean", ["woman", "sunglasses", "bench", "ocean"]),
    ("Three geese swim across a lake at sunset", ["goose", "lake", "sunset"]),
    ("A man on a skateboard does a trick on a ramp", ["man", "skateboard", "trick", "ramp"]),
    ("The teddy bear sits on the couch next to a cell phone", ["teddy", "sofa", "cellular telephone"]),
    ("Two people ride horses along the beach", ["people", "horse", "beach"]),
    ("Boys are jumping into a swimming pool", ["male child", "swimming pool"]),
    ("A DOG ON THE BEACH", ["dog", "beach"]),
]


@pytest.mark.parametrize("caption, names", GOLDEN)
def test_golden_captions(ex, caption, names):
    assert [ex.name(k) for k in ex.extract(caption)] == names


# Flickr8k captions the dataset analysis found label-less. Keys worked out by hand in WordNet 3.0 (index.noun):
# greyhound → n02090827 (its only sense); boston_terrier → n02096585 ("Boston bull"; "boston" alone is the city,
# an instance, n09095751); collie → n02106030; springer_spaniel → n02101861; rugby → n00470966 (its only
# sense); WordNet has no "rugby_match", and the first (most frequent) sense of "match" is the matchstick
# n03728437: that is the paper's first-sense rule, not a tagging error.
GREYHOUND, BOSTON_TERRIER, COLLIE, SPRINGER_SPANIEL = "n02090827", "n02096585", "n02106030", "n02101861"
RUGBY, MATCH = "n00470966", "n03728437"


def test_unknown_noun_after_participle(ex):
    # "greyhound" is unknown to the tagger tables; WordNet knows it only as a noun, so it is not an adjective.
    assert ex.extract("A running greyhound") == [GREYHOUND]


def test_breed_collocation_with_capitalised_first_word(ex):
    # "Boston" is tagged NNP; the longest WordNet match "boston terrier" (a common noun) wins over the city.
    assert ex.extract("There are two Boston terriers biting at each other") == [BOSTON_TERRIER]


def test_capitalised_common_nouns_are_not_names(ex):
    keys = ex.extract("A Collie and a Springer Spaniel playing outside")
    # The tagger reads "playing" after the NNP pair as a noun (a tagging error we accept), hence only [:2].
    assert keys[:2] == [COLLIE, SPRINGER_SPANIEL]


def test_nouns_without_context(ex):
    assert ex.extract("rugby match") == [RUGBY, MATCH]


def test_named_entities_need_capitals_and_are_consumed_whole():
    plain, proper = SynsetExtractor(), SynsetExtractor(proper_nouns=True)
    # lower-case "little dog" is a dog, not the constellation Canis Minor (n09232989, an instance)
    assert plain.extract("A little dog runs") == proper.extract("A little dog runs") == ["n02084071"]
    # "Times Square" / "New York" are instances: no "square" label from inside the name
    assert plain.extract("A taxi in New York") == ["n02930766"]
    assert proper.extract("A taxi in New York") == ["n02930766", "n09119277"]
