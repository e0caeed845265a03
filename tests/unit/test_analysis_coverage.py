"""Target coverage by path similarity, with distances worked out by hand from WordNet 3.0 hypernym paths."""

from __future__ import annotations

import random

import pytest

from catlip.analysis.coverage import coverage_curve, samples_per_target
from catlip.labels.corpus_index import best_matches
from catlip.analysis.targets import load_targets, resolve_name

try:
    from catlip.labels.wordnet import get_wordnet

    WN = get_wordnet()
except Exception as err:  # noqa: BLE001 - the reader raises ResourceMissingError when wordnet-base is absent
    WN = None
    REASON = str(err)

pytestmark = pytest.mark.skipif(WN is None, reason="WordNet 3.0 (wordnet-base) not available")

DOG, CAT, CAR, PERSON = "n02084071", "n02121620", "n02958343", "n00007846"
PUPPY, BEAGLE, TRUCK, TABBY = "n01322604", "n02088364", "n04490091", "n02123045"


def test_hand_worked_distances():
    # dog.n.01 and cat.n.01 meet at carnivore: dog-canine-carnivore-feline-cat = 4 hops -> 1/5
    assert WN.path_similarity(DOG, CAT) == pytest.approx(0.2)
    # puppy's hypernyms include dog: 1 hop -> 1/2
    assert WN.path_similarity(DOG, PUPPY) == pytest.approx(0.5)
    # beagle-hound-hunting_dog-dog: 3 hops -> 1/4
    assert WN.path_similarity(DOG, BEAGLE) == pytest.approx(0.25)
    # truck-motor_vehicle-car: 2 hops -> 1/3; tabby-domestic_cat-cat: 2 hops -> 1/3
    assert WN.path_similarity(CAR, TRUCK) == pytest.approx(1 / 3)
    assert WN.path_similarity(CAT, TABBY) == pytest.approx(1 / 3)


def test_best_matches_and_alpha_coverage(tmp_path):
    corpus = {DOG: 5, CAR: 3, CAT: 2, PERSON: 9}  # key -> samples
    targets = [DOG, PUPPY, BEAGLE, TRUCK, TABBY]
    m = best_matches(targets, corpus, WN.hypernym_paths)
    got = {t: (m[t].key, m[t].distance, m[t].count) for t in targets}
    assert got == {DOG: (DOG, 0, 5), PUPPY: (DOG, 1, 5), BEAGLE: (DOG, 3, 5), TRUCK: (CAR, 2, 3),
                   TABBY: (CAT, 2, 2)}  # tabby is 3 hops from dog (via domestic_animal) but 2 from cat
    # a sixth target that WordNet does not know counts in the denominator only
    rows = {r["alpha"]: r["matched"] for r in coverage_curve(m, (1.0, 0.9, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2), 6)}
    assert rows == {1.0: 1, 0.9: 1, 0.6: 1, 0.5: 2, 0.4: 2, 0.3: 4, 0.25: 5, 0.2: 5}
    assert coverage_curve(m, (0.5,), 6)[0]["share"] == pytest.approx(2 / 6)
    assert samples_per_target(m, 1.0) == [5]
    assert samples_per_target(m, 0.3) == [5, 5, 3, 2]


def test_tie_prefers_the_more_frequent_synset():
    # carnivore is 2 hops above both dog (via canine) and cat (via feline): a tie broken by the count
    carnivore = WN.hypernyms(WN.hypernyms(CAT)[0])[0]
    assert WN.synset_lemmas(carnivore)[0] == "carnivore"
    assert WN.path_similarity(carnivore, DOG) == WN.path_similarity(carnivore, CAT) == pytest.approx(1 / 3)
    m1 = best_matches([carnivore], {CAT: 3, DOG: 7}, WN.hypernym_paths)[carnivore]
    m2 = best_matches([carnivore], {CAT: 9, DOG: 7}, WN.hypernym_paths)[carnivore]
    assert (m1.key, m1.count, m1.distance) == (DOG, 7, 2) and (m2.key, m2.count) == (CAT, 9)


def test_index_agrees_with_pairwise_path_similarity():
    # the hypernym index must give the same best similarity as comparing every pair with the reader
    rng = random.Random(0)
    words = ["dog", "cat", "car", "man", "woman", "child", "ball", "water", "grass", "bike", "beach", "shirt",
             "street", "snow", "rock", "tree", "boat", "horse", "bird", "hat", "building", "crowd", "field"]
    corpus = {WN.noun_synsets(w)[0]: rng.randint(1, 50) for w in words}
    targets = [t.wnid for t in load_targets_tsv_like(["goldfish", "tabby", "pickup", "sandal", "seashore", "jersey",
                                                      "mountain bike", "sports car", "lakeside", "soccer ball"])]
    m = best_matches(targets, corpus, WN.hypernym_paths)
    for t in targets:
        brute = max(WN.path_similarity(t, c) for c in corpus)
        assert m[t].similarity == pytest.approx(brute), WN.synset_lemmas(t)


def load_targets_tsv_like(names):
    out = []
    for n in names:
        key, how = resolve_name(n, WN)
        assert key is not None, n
        out.append(type("T", (), {"wnid": key})())
    return out


def test_target_files(tmp_path):
    tsv = tmp_path / "classes.tsv"
    tsv.write_text("index\twnid\tname\n0\tn02084071\tdog\n1\tn99999999\tbogus\n2\tn02121620\tcat\n")
    ts = load_targets(str(tsv), WN)
    assert [(t.name, t.wnid, t.how) for t in ts.targets] == [
        ("dog", DOG, "wnid"), ("bogus", None, "unknown-wnid"), ("cat", CAT, "wnid")]
    names = tmp_path / "names.txt"
    names.write_text("Dogs\ngreat white shark\nxyzzy plugh\nsports car\n\nShih-Tzu\n")
    ts = load_targets(str(names), WN)
    assert [t.how for t in ts.targets] == ["name", "name", "unknown-name", "name", "name"]
    assert ts.targets[0].wnid == DOG and ts.targets[1].wnid == "n01484850"
    assert [t.name for t in ts.unknown] == ["xyzzy plugh"]  # listed, not dropped


def test_builtin_imagenet1k_matches_shared_class_list(shared_data):
    ts = load_targets("imagenet1k", WN)
    wnids = [line.split("\t")[1] for line in (shared_data / "class_lists" / "imagenet1k.tsv").read_text().splitlines()[1:]]
    assert [t.wnid for t in ts.targets] == wnids and not ts.unknown


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The multilingual functions")
def test_best_match_equals_nltk_reference(shared_data, tmp_path_factory, monkeypatch):
    """The index's best similarity equals NLTK's path_similarity maximised over every corpus synset (the tool of
    CatLIP's original code), for 100 random ImageNet-1k classes against 54 frequent caption synsets."""
    import shutil
    import subprocess

    nltk = pytest.importorskip("nltk")
    script = shared_data / "nltk" / "make-nltk-data.sh"
    if not script.is_file() or shutil.which("unzip") is None:
        pytest.skip("make-nltk-data.sh or unzip missing")
    dest = tmp_path_factory.mktemp("nltk_data")
    subprocess.run(["bash", str(script), str(dest)], check=True, capture_output=True)
    monkeypatch.setattr(nltk.data, "path", [str(dest), *nltk.data.path])  # NLTK only reads from its data path
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    nwn = WordNetCorpusReader(str(dest / "corpora" / "wordnet"), None)
    words = ("dog cat car man woman child ball water grass bike beach shirt street snow rock tree boat horse bird hat "
             "building crowd field mountain jacket camera toy wall pool picture hill face bicycle player ocean wave "
             "stick sand swing shorts people girl boy person air front group motorcycle mouth jump background drive "
             "lass standing trick").split()
    corpus = {WN.noun_synsets(w)[0]: i + 1 for i, w in enumerate(words)}
    classes = load_targets(str(shared_data / "class_lists" / "imagenet1k.tsv"), WN).targets
    targets = [t.wnid for t in random.Random(0).sample(classes, 100)]

    def synset(key):
        return nwn.synset_from_pos_and_offset("n", int(key[1:]))

    ref = {t: max(synset(t).path_similarity(synset(c)) for c in corpus) for t in targets}
    got = best_matches(targets, corpus, WN.hypernym_paths)
    assert {t: round(got[t].similarity, 9) for t in targets} == {t: round(ref[t], 9) for t in targets}
    assert len({round(v, 6) for v in ref.values()}) >= 3  # the sample spans several similarity levels
