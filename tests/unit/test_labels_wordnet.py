"""WordNet reader: morphology, sense order, collocations, records, hypernym paths and path similarity."""

import pytest

from catlip.errors import ResourceMissingError
from catlip.labels.resources import locate
from catlip.labels.wordnet import WordNet, get_wordnet


@pytest.fixture(scope="module")
def wn():
    return get_wordnet()


@pytest.mark.parametrize("word, base", [("men", "man"), ("children", "child"), ("geese", "goose"),
                                        ("bicycles", "bicycle"), ("churches", "church"), ("boxes", "box"),
                                        ("puppies", "puppy"), ("dog", "dog"), ("fire hydrants", "fire_hydrant")])
def test_morphy_base_form_first(wn, word, base):
    assert wn.morphy(word)[0] == base


def test_morphy_keeps_plural_lemmas_and_rejects_non_words(wn):
    assert wn.morphy("glasses")[0] == "glasses"  # spectacles, a lemma of its own
    assert wn.morphy("qwzxv") == []
    assert wn.morphy("") == []


def test_noun_synsets_in_sense_order(wn):
    assert wn.noun_synsets("dog")[0] == "n02084071"
    assert wn.noun_synsets("tv") == ["n06277280", "n04405907"]
    assert wn.noun_synsets("ice cream") == wn.noun_synsets("ice_cream") == ["n07614500"]
    assert wn.noun_synsets("qwzxv") == []


def test_synset_record(wn):
    assert wn.synset_lemmas("n07614500") == ["ice_cream", "icecream"]
    assert wn.name("n03925226") == "photograph"
    assert "frozen dessert" in wn.gloss("n07614500")
    with pytest.raises(KeyError):
        wn.synset_lemmas("n00000001")


def test_collocation_index(wn):
    assert wn.max_collocation_words >= 4
    assert "cream" in wn.collocation_next["ice"]
    assert "hydrant" in wn.collocation_next["fire"]


def test_hypernym_paths_root_first(wn):
    paths = wn.hypernym_paths("n02084071")  # dog
    assert all(p[0] == "n00001740" and p[-1] == "n02084071" for p in paths)  # entity ... dog
    assert any("n02083346" in p for p in paths)  # canine
    # instance hypernyms count: a city's path goes through "city"
    new_york = wn.noun_synsets("new york")[0]
    assert any("n08524735" in p for p in wn.hypernym_paths(new_york))


def test_path_similarity_matches_nltk_values(wn):
    # values NLTK 3.9 gives on the same WordNet 3.0 files
    assert wn.path_similarity("n02084071", "n02121620") == pytest.approx(0.2)  # dog, cat
    assert wn.path_similarity("n02084071", "n02084071") == 1.0
    assert wn.path_similarity("n02084071", "n02958343") == pytest.approx(1 / 13)  # dog, car
    assert wn.path_similarity("n10287213", "n10787470") == pytest.approx(1 / 3)  # man, woman
    assert wn.path_similarity("n09119277", "n08524735") == pytest.approx(0.5)  # New York (instance), city


def test_missing_wordnet_names_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("CATLIP_WORDNET_DIR", str(tmp_path))
    with pytest.raises(ResourceMissingError, match="apt-get install -y wordnet-base"):
        locate("wordnet")
    with pytest.raises(ResourceMissingError):
        get_wordnet()


def test_env_override_is_used(tmp_path, monkeypatch):
    real = locate("wordnet")
    for name in ("index.noun", "noun.exc", "data.noun"):
        (tmp_path / name).symlink_to(real / name)
    monkeypatch.setenv("CATLIP_WORDNET_DIR", str(tmp_path))
    assert locate("wordnet") == tmp_path
    assert WordNet().noun_synsets("dog")[0] == "n02084071"


def test_instances_and_parts_of_speech(wn):
    assert wn.is_instance(wn.noun_synsets("paris")[0])  # Paris, France: an instance of city
    assert not wn.is_instance(wn.noun_synsets("city")[0])
    assert wn.parts_of_speech("greyhound") == {"noun"}
    assert wn.parts_of_speech("ran") == {"VBD"}  # irregular past from verb.exc
    assert {"noun", "VBG"} <= wn.parts_of_speech("running")
    assert wn.parts_of_speech("quickly") == {"adv"}
    assert wn.parts_of_speech("xqzzy") == frozenset()
