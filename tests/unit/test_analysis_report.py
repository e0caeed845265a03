"""The written report: valid JSON, plots present, and every number on the HTML page equal to summary.json."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from catlip.analysis import build_summary, render
from catlip.analysis.stats import CorpusStats
from catlip.analysis.targets import load_targets

try:
    from catlip.labels.wordnet import get_wordnet

    WN = get_wordnet()
except Exception:  # noqa: BLE001 - ResourceMissingError when wordnet-base is absent
    WN = None

pytestmark = pytest.mark.skipif(WN is None, reason="WordNet 3.0 (wordnet-base) not available")

DOG, CAT, CAR, PERSON, BALL = "n02084071", "n02121620", "n02958343", "n00007846", "n02778669"


class _Cells(HTMLParser):
    """Collects (data-key, data-kind, text) of numeric cells, and img sources."""

    def __init__(self):
        super().__init__()
        self.cells, self.images, self._open = [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "data-key" in a:
            self._open = [a["data-key"], a.get("data-kind"), ""]
        if tag == "img":
            self.images.append(a["src"])

    def handle_data(self, data):
        if self._open is not None:
            self._open[2] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._open is not None:
            self.cells.append(tuple(self._open))
            self._open = None


def _lookup(summary, dotted):
    value = summary
    for part in dotted.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _check_page_against_json(out):
    summary = json.loads((out / "summary.json").read_text())
    parser = _Cells()
    parser.feed((out / "index.html").read_text())
    assert parser.cells, "no numeric cells found"
    for key, kind, text in parser.cells:
        expected = _lookup(summary, key)
        if kind == "share":
            assert float(text.rstrip("%")) == pytest.approx(100 * expected, abs=0.05), key
        elif isinstance(expected, int):
            assert int(text.replace(",", "")) == expected, key
        else:
            assert float(text.replace(",", "")) == pytest.approx(expected, abs=5e-4), key
    for src in parser.images:
        assert "/" not in src and (out / src).stat().st_size > 1000, src  # relative, rendered
    return summary, parser


def _corpus():
    stats = CorpusStats(unlabelled_keep=5, seed=0)
    rows = [([[DOG, BALL], [DOG]], ["a dog with a ball", "a dog"]), ([[]], ["running fast"]),
            ([[PERSON, CAR], [CAR]], ["a man by a car", "the car"]), ([[CAT]], ["a cat"]),
            ([[DOG, CAT]], ["dog and cat"])]
    for i, (keys, texts) in enumerate(rows):
        stats.add_sample(keys, texts, sample_id=str(i))
    return stats


def test_report_numbers_match_summary(tmp_path):
    names = tmp_path / "classes.txt"
    names.write_text("dog\npuppy\ntabby\ntruck\nxyzzy\n")
    targets = [load_targets(str(names), WN)]
    summary = build_summary(_corpus(), [{"path": "x.txt", "samples": 5, "captions": 7, "skipped": 0}], WN,
                            target_sets=targets, top=10)
    render(summary, tmp_path / "report")
    summary, parser = _check_page_against_json(tmp_path / "report")
    keys = {k for k, _, _ in parser.cells}
    assert {"corpus.unique_synsets", "corpus.num_captions", "targets.0.coverage.0.matched",
            "top_synsets.0.captions", "vtau.0.vocab_size"} <= keys
    c = summary["corpus"]
    assert (c["num_samples"], c["num_captions"], c["num_unlabelled_captions"], c["unique_synsets"]) == (5, 7, 1, 5)
    t = summary["targets"][0]
    assert t["unknown"] == ["xyzzy"] and t["num_targets"] == 5
    cov = {r["alpha"]: r["matched"] for r in t["coverage"]}
    # dog exact; puppy 1 hop from dog; tabby 2 hops from cat; truck 2 hops from car
    assert (cov[1.0], cov[0.5], cov[0.3]) == (1, 2, 4)
    assert summary["top_synsets"][0] == {"rank": 1, "key": DOG, "name": "dog", "lemmas": WN.synset_lemmas(DOG),
                                         "captions": 3, "samples": 2}
    assert summary["unlabelled_examples"] == ["running fast"]
    assert "xyzzy" in (tmp_path / "report" / "index.html").read_text()


def test_empty_corpus_gives_valid_report(tmp_path):
    stats = CorpusStats()
    stats.add_sample([[], []], ["!!!", "..."], sample_id="0")
    names = tmp_path / "classes.txt"
    names.write_text("dog\ncat\n")
    summary = build_summary(stats, [], WN, target_sets=[load_targets(str(names), WN)])
    render(summary, tmp_path / "r")
    summary, parser = _check_page_against_json(tmp_path / "r")
    assert summary["corpus"]["unique_synsets"] == 0 and summary["long_tail"] == []
    assert all(r["matched"] == 0 for r in summary["targets"][0]["coverage"])
    assert len(parser.images) == 5 and set(summary["unlabelled_examples"]) == {"!!!", "..."}


def test_committed_flickr8k_report_matches_its_summary():
    from pathlib import Path

    out = Path(__file__).resolve().parents[2] / "docs" / "analysis" / "flickr8k"
    if not (out / "index.html").is_file():
        pytest.skip("the Flickr8k report is not committed in this checkout")
    summary, parser = _check_page_against_json(out)
    assert summary["corpus"]["num_captions"] == 40455 and [t["name"] for t in summary["targets"]] == ["imagenet1k", "cifar10"]
    assert len(parser.cells) > 1000  # the full per-class table of ImageNet-1k is on the page
    total = sum(p.stat().st_size for p in out.iterdir())
    assert total < 2_000_000, total
