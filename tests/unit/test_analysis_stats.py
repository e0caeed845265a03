"""Corpus statistics on a hand-made corpus of label-key lists (no WordNet, no extractor)."""

from __future__ import annotations

from catlip.analysis.stats import CorpusStats, count_corpus, growth_curve, log_points, rank_counts, top_keys, vtau_curve

# Four samples, six captions. Caption 2 has no label; caption 4 repeats "c" (a caption counts a key once).
CORPUS = [
    [["a", "b"], ["a"]],
    [[]],
    [["c"], ["b", "c", "c"]],
    [["d"]],
]
CAPTIONS = [["a b", "a"], ["nothing here"], ["c", "b c c"], ["d"]]


def _stats(samples=CORPUS, captions=CAPTIONS, **kw) -> CorpusStats:
    stats = CorpusStats(**kw)
    for i, (keys, texts) in enumerate(zip(samples, captions)):
        stats.add_sample(keys, texts, sample_id=str(i))
    return stats


def test_counts_by_hand():
    s = _stats()
    assert (s.num_samples, s.num_captions, s.num_labelled_captions, s.num_unlabelled_captions) == (4, 6, 5, 1)
    assert s.label_occurrences == 2 + 1 + 0 + 1 + 2 + 1
    assert dict(s.caption_counts) == {"a": 2, "b": 2, "c": 2, "d": 1}
    assert dict(s.sample_counts) == {"a": 1, "b": 2, "c": 1, "d": 1}  # "b" is in samples 0 and 2
    assert s.first_seen == {"a": 0, "b": 0, "c": 3, "d": 5}
    assert s.unlabelled_examples() == ["nothing here"]


def test_growth_curve_points():
    s = _stats()
    # every caption index is a point for a 6-caption stream; keys first seen at captions 0, 0, 3, 5
    assert growth_curve(s.first_seen, s.num_captions) == [(1, 2), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4)]
    points = log_points(40455, 40)
    assert points[0] == 1 and points[-1] == 40455 and points == sorted(set(points))
    assert 30 <= len(points) <= 40
    ratios = [b / a for a, b in zip(points[10:], points[11:])]  # log spacing: a constant ratio once past rounding
    assert max(ratios) / min(ratios) < 1.2


def test_growth_curve_large_stream():
    # key i first appears at caption 10*i: after n captions, ceil(n / 10) keys are known
    first = {f"k{i}": 10 * i for i in range(100)}
    for n, unique in growth_curve(first, 1000):
        assert unique == -(-n // 10)


def test_vtau_and_long_tail():
    s = _stats()
    rows = {r["tau"]: r for r in vtau_curve(s.caption_counts, taus=(1, 2, 3))}
    assert (rows[1]["vocab_size"], rows[1]["occurrences_kept"], rows[1]["share_kept"]) == (4, 7, 1.0)
    assert (rows[2]["vocab_size"], rows[2]["occurrences_kept"]) == (3, 6)
    assert abs(rows[2]["share_kept"] - 6 / 7) < 1e-12
    assert (rows[3]["vocab_size"], rows[3]["share_kept"]) == (0, 0.0)
    assert rank_counts(s.caption_counts) == [(1, 2), (2, 2), (3, 2), (4, 1)]
    assert top_keys(s.caption_counts, 2) == [("a", 2), ("b", 2)]


def test_merge_equals_single_pass():
    whole = _stats()
    first = _stats(CORPUS[:2], CAPTIONS[:2])
    second = _stats(CORPUS[2:], CAPTIONS[2:])
    merged = first.merge(second)
    for field in ("num_samples", "num_captions", "num_labelled_captions", "label_occurrences",
                  "caption_counts", "sample_counts", "first_seen"):
        assert getattr(merged, field) == getattr(whole, field), field


def test_unlabelled_sample_is_seeded_and_bounded():
    samples = [[[]] for _ in range(200)]
    captions = [[f"caption {i}"] for i in range(200)]
    a = _stats(samples, captions, unlabelled_keep=20, seed=1).unlabelled_examples()
    b = _stats(samples, captions, unlabelled_keep=20, seed=1).unlabelled_examples()
    c = _stats(samples, captions, unlabelled_keep=20, seed=2).unlabelled_examples()
    assert a == b and len(a) == 20 and len(set(a)) == 20 and a != c
    assert set(a) <= {t[0] for t in captions}
    # the sample is spread over the stream, not the first 20 captions
    assert max(int(x.split()[1]) for x in a) > 40


def test_empty_corpus():
    s = count_corpus([])
    assert s.num_captions == 0 and growth_curve(s.first_seen, 0) == [] and rank_counts(s.caption_counts) == []
    assert all(r["vocab_size"] == 0 and r["share_kept"] == 0.0 for r in vtau_curve(s.caption_counts))
