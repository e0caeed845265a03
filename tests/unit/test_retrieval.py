"""Retrieval: Recall@K by hand on toy matrices, head caption scoring on a constructed head, `catlip retrieval`."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch

from shards import write_tar  # tests/shards.py
from test_eval_tasks import tiny  # noqa: F401 - the tiny CatLIP checkpoint of the task-registry tests (fixture)
from test_tag import _pretrain

from catlip.cli import main
from catlip.evaluate.caption.retrieval import (caption_label_ids, clip_similarity, head_caption_scores,
                                               label_log_marginals, recall_at_k)

# 3 images, 5 captions: images 0 and 1 have two captions each, image 2 one.
SIM = torch.tensor([[0.9, 0.1, 0.8, 0.2, 0.3],
                    [0.5, 0.4, 0.6, 0.7, 0.2],
                    [0.1, 0.2, 0.3, 0.9, 0.4]])
OWNER = torch.tensor([0, 0, 1, 1, 2])


def test_recall_equals_hand_computed_values():
    r = recall_at_k(SIM, OWNER, ks=(1, 2))
    # image->text: image 0 (best own caption 0.9) and image 1 (0.7) rank first; image 2's caption (0.4) is
    # beaten by caption 3 (0.9) only, so it is a hit at 2.
    assert r["image_to_text"] == {"R@1": pytest.approx(2 / 3), "R@2": pytest.approx(1.0)}
    # text->image, column by column: caption 0 hit@1; caption 1 (0.1 below 0.4 and 0.2) misses both; captions 2
    # and 3 have one better image (hit@2); caption 4 hit@1.
    assert r["text_to_image"] == {"R@1": pytest.approx(2 / 5), "R@2": pytest.approx(4 / 5)}
    assert r["mean_recall"] == pytest.approx((2 / 3 + 1 + 2 / 5 + 4 / 5) / 4)


def test_any_caption_of_an_image_counts_for_image_to_text():
    sim = torch.tensor([[0.1, 0.2, 0.9],   # image 0's second caption (0.2) is beaten by caption 2 only
                        [0.5, 0.6, 0.7]])
    r = recall_at_k(sim, torch.tensor([0, 0, 1]), ks=(1, 2))
    assert r["image_to_text"]["R@1"] == 0.5 and r["image_to_text"]["R@2"] == 1.0


def test_ties_count_as_broken_at_random_whatever_the_order():
    r = recall_at_k(torch.zeros(3, 5), OWNER, ks=(1, 2, 4, 5))
    # a constant score is chance: image 0 (2 captions among 5) misses at 1 with probability 3/5, at 2 with
    # C(3,2)/C(5,2) = 3/10; image 2 (1 caption) with 4/5, then C(4,2)/C(5,2) = 6/10 and at 4 with 1/5
    i2t = {"R@1": (0.4 + 0.4 + 0.2) / 3, "R@2": (0.7 + 0.7 + 0.4) / 3, "R@4": (1 + 1 + 0.8) / 3, "R@5": 1.0}
    assert r["image_to_text"] == pytest.approx(i2t)
    assert r["text_to_image"] == pytest.approx({"R@1": 1 / 3, "R@2": 2 / 3, "R@4": 1.0, "R@5": 1.0})
    tie = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # caption 1 (image 1) ties with caption 0 on image 0
    forward = recall_at_k(tie, torch.tensor([0, 1]), ks=(1,))
    backward = recall_at_k(tie.flip(0).flip(1), torch.tensor([0, 1]), ks=(1,))
    assert forward == backward
    assert forward["image_to_text"]["R@1"] == pytest.approx(0.5)  # both images: one tied wrong caption
    assert forward["text_to_image"]["R@1"] == pytest.approx(0.5)  # caption 0 hits, caption 1 is beaten


def test_a_tie_between_a_wrong_and_a_right_item_is_half_a_hit():
    sim = torch.tensor([[0.5, 0.9, 0.5],   # image 0: its caption 0 ties with caption 2 below caption 1
                        [0.1, 0.2, 0.3]])
    r = recall_at_k(sim, torch.tensor([0, 1, 1]), ks=(1, 2, 3))
    assert r["image_to_text"]["R@1"] == pytest.approx(0.5 * (0 + 1))  # image 1: caption 2 (0.3) wins outright
    assert r["image_to_text"]["R@2"] == pytest.approx(0.5 * (0.5 + 1))
    assert r["image_to_text"]["R@3"] == pytest.approx(1.0)


def test_recall_matches_a_topk_reference_on_random_scores():
    """Without ties, the result equals the usual top-k formulation (CLIP_benchmark's)."""
    g = torch.Generator().manual_seed(0)
    n, per = 40, 5
    owner = torch.arange(n).repeat_interleave(per)
    sim = torch.randn(n, n * per, generator=g)
    positive = owner[None, :] == torch.arange(n)[:, None]
    r = recall_at_k(sim, owner, ks=(1, 5, 10), chunk=7)
    for k in (1, 5, 10):
        i2t = positive.gather(1, sim.topk(k, dim=1).indices).any(1).float().mean().item()
        t2i = positive.T.gather(1, sim.T.topk(k, dim=1).indices).any(1).float().mean().item()
        assert r["image_to_text"][f"R@{k}"] == pytest.approx(i2t)
        assert r["text_to_image"][f"R@{k}"] == pytest.approx(t2i)


def test_recall_rejects_an_image_without_captions():
    with pytest.raises(ValueError, match="at least one caption"):
        recall_at_k(torch.zeros(3, 2), torch.tensor([0, 1]))


def test_clip_similarity_is_the_cosine():
    a, b = torch.tensor([[3.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 2.0], [5.0, 0.0]])
    torch.testing.assert_close(clip_similarity(a, b), torch.tensor([[0.0, 1.0], [2**-0.5, 2**-0.5]]))


# ---------------------------------------------------------------- head caption scoring


def words_vocab(keys):
    from catlip.labels.vocab import Vocabulary

    return Vocabulary(labels="words", keys=list(keys), counts=[1] * len(keys), names=list(keys),
                      glosses=[""] * len(keys))


def test_head_scoring_ranks_the_right_caption_first():
    vocab = words_vocab(["dog", "ball", "grass", "car", "road"])
    captions = ["a dog on the grass", "a red ball", "a car", "a dog on the road", "nothing known here"]
    labels = caption_label_ids(captions, vocab)
    assert labels == [[0, 2], [1], [3], [0, 4], []]
    # a constructed head: image i shows exactly the concepts of caption i (one-hot features, weight 8, bias -4).
    # No caption's labels are a subset of another's: the score only reads the caption's own labels, so a caption
    # naming part of an image ties with one naming all of it.
    shown = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 1, 0], [1, 0, 0, 0, 1]], dtype=torch.float32)
    weight, bias = 8 * torch.eye(5), torch.full((5,), -4.0)
    for activation in ("sigmoid", "softmax"):
        for reduce in ("mean", "sum"):
            sim = head_caption_scores(shown, weight, bias, labels, activation=activation, reduce=reduce)
            assert sim.shape == (4, 5)
            assert torch.isinf(sim[:, 4]).all() and (sim[:, 4] < 0).all()  # no label: -inf
            assert sim[:, :4].argmax(1).tolist() == [0, 1, 2, 3], (activation, reduce)
            assert sim[:, :4].argmax(0).tolist() == [0, 1, 2, 3], (activation, reduce)
            r = recall_at_k(sim, torch.tensor([0, 1, 2, 3, 0]), ks=(1,))
            # the -inf caption ties with every image: chance (1/4) for it, never in the way of another caption
            assert r["text_to_image"]["R@1"] == pytest.approx((4 + 1 / 4) / 5) and r["image_to_text"]["R@1"] == 1.0


def test_head_scoring_sum_and_mean_by_hand():
    feats = torch.tensor([[0.0, 0.0]])
    weight, bias = torch.zeros(3, 2), torch.tensor([0.0, math.log(3.0), -1.0])
    labels = [[0, 1], [2], []]
    s = head_caption_scores(feats, weight, bias, labels, activation="sigmoid", reduce="sum")
    expected = math.log(0.5) + math.log(0.75)
    assert s[0, 0].item() == pytest.approx(expected)
    assert s[0, 1].item() == pytest.approx(-math.log1p(math.e))
    m = head_caption_scores(feats, weight, bias, labels, activation="sigmoid", reduce="mean")
    assert m[0, 0].item() == pytest.approx(expected / 2) and m[0, 2].item() == float("-inf")
    soft = head_caption_scores(feats, weight, bias, labels, activation="softmax", reduce="sum")
    log_z = math.log(1 + 3 + math.exp(-1))
    assert soft[0, 1].item() == pytest.approx(-1 - log_z)
    with pytest.raises(ValueError):
        head_caption_scores(feats, weight, bias, labels, activation="sigmoid", reduce="max")


def test_label_marginals_by_hand():
    feats = torch.tensor([[1.0], [-1.0]])
    weight, bias = torch.tensor([[2.0], [0.0]]), torch.tensor([0.0, 1.0])
    got = label_log_marginals(feats, weight, bias, activation="sigmoid", chunk=1)
    sig = torch.sigmoid
    expected = torch.log(torch.stack([(sig(torch.tensor(2.0)) + sig(torch.tensor(-2.0))) / 2, sig(torch.tensor(1.0))]))
    torch.testing.assert_close(got, expected)


def test_pmi_stops_a_frequent_label_winning_every_image():
    """Label 0 ("man") is likely on every image; a caption naming only it outranks each image's own caption until
    each label's mean probability over the images is divided out."""
    labels = [[0], [0, 1], [0, 2], [0, 3]]  # "a man", "a man and a dog", "a man on a bike", "a man in the snow"
    feats = torch.eye(3)  # image i shows concept i + 1 (and, like every image, a man)
    weight = torch.cat([torch.zeros(1, 3), 6 * torch.eye(3)])
    bias = torch.tensor([4.0, -3.0, -3.0, -3.0])
    owner = torch.tensor([0, 0, 1, 2])  # caption 0 belongs to image 0 too; image 0 is the one with a dog
    raw = head_caption_scores(feats, weight, bias, labels, activation="sigmoid")
    assert raw.argmax(1).tolist() == [0, 0, 0]  # "a man" beats every image's own caption
    prior = label_log_marginals(feats, weight, bias, activation="sigmoid")
    pmi = head_caption_scores(feats, weight, bias, labels, activation="sigmoid", log_prior=prior)
    assert pmi.argmax(1).tolist() == [1, 2, 3]
    assert recall_at_k(pmi, owner, ks=(1,))["image_to_text"]["R@1"] == 1.0
    assert recall_at_k(raw, owner, ks=(1,))["image_to_text"]["R@1"] == pytest.approx(1 / 3)
    # text->image ranks images for one caption: the prior is a constant per caption there
    assert (pmi - raw).std(dim=0).max() < 1e-5


def test_bpe_special_tokens_are_never_caption_labels():
    from catlip.labels.vocab import Vocabulary

    labels = caption_label_ids(["a dog"], Vocabulary.full_bpe())
    assert labels[0] and not set(labels[0]) & {0, 49406, 49407}


# ---------------------------------------------------------------- the task on shards


def _jpeg(colour) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buf, format="JPEG")
    return buf.getvalue()


def caption_shard(path):
    """4 readable images (one without captions) and an undecodable one, 2 + 1 + 0 + 1 + 1 captions."""
    members = []
    for i, (colour, caps) in enumerate([("red", ["a red ball on the grass", "a ball"]), ("blue", ["a blue car"]),
                                        ("green", []), ("white", ["a box"])]):
        members += [(f"{i:03d}.jpg", _jpeg(colour)), (f"{i:03d}.json", json.dumps({"captions": caps}).encode())]
    members += [("004.jpg", b"not a jpeg"), ("004.json", json.dumps({"captions": ["a car"]}).encode())]
    return write_tar(path, members)


def test_retrieval_counts_empty_captions_and_undecodable_images(tiny, tmp_path, capsys):
    shard = caption_shard(tmp_path / "caps-000.tar")
    out = tmp_path / "r.json"
    assert main(["retrieval", tiny["run"], "--data", str(shard), "--workers", "0", "--no-progress",
                 "--reduce", "sum", "--pmi", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["mode"] == "head" and "head caption scoring" in printed and "text tower" not in printed
    assert result["skipped"] == {"no_caption": 1, "undecodable": 1}
    assert result["images"] == 3 and result["captions"] == 4 and result["reduce"] == "sum" and result["pmi"]
    assert "log mean probability" in printed
    assert set(result["image_to_text"]) == {"R@1", "R@5", "R@10"}
    assert result["image_to_text"]["R@5"] == 1.0  # 4 captions: every image's caption is in the top 5
    assert "image→text" in printed and "R@10" in printed


def test_images_beyond_limit_are_not_counted_as_skipped(tiny, tmp_path):
    """--limit 2 keeps the first two captioned images; the captioned ones after them were never skipped data."""
    shard = caption_shard(tmp_path / "caps-000.tar")
    out = tmp_path / "r.json"
    assert main(["retrieval", tiny["run"], "--data", str(shard), "--workers", "0", "--no-progress", "--limit", "2",
                 "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 2 and result["captions"] == 3
    assert result["skipped"] == {"no_caption": 1, "undecodable": 0}  # the bad image 004 lies beyond the limit


def test_retrieval_without_any_caption_is_one_line(tiny, tmp_path, capsys):
    shard = write_tar(tmp_path / "empty-000.tar", [("000.jpg", _jpeg("red")),
                                                    ("000.json", json.dumps({"captions": []}).encode())])
    assert main(["retrieval", tiny["run"], "--data", str(shard), "--workers", "0", "--no-progress"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "caption" in err[0]


def test_a_clip_checkpoint_retrieves_with_its_text_tower(tmp_path, capsys):
    run = _pretrain(tmp_path, "clip", ["method.name=clip", "data.synthetic_size=16", "data.batch_size=8",
                                       "optim.steps=1", "train.ckpt_every=1"])
    shard, out = caption_shard(tmp_path / "caps-000.tar"), tmp_path / "r.json"
    assert main(["retrieval", run, "--data", str(shard), "--workers", "0", "--no-progress", "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["mode"] == "text" and "text tower" in capsys.readouterr().out
    assert result["images"] == 3 and result["captions"] == 4 and "captions_without_labels" not in result
    assert main(["retrieval", run, "--data", str(shard), "--mode", "head", "--workers", "0", "--no-progress"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "classification head" in errors[0]


@pytest.mark.slow
@pytest.mark.shared_data
def test_retrieval_on_the_flickr8k_test_shard(shared_data, tiny, tmp_path):

    shard = shared_data / "flickr8k" / "flickr8k-test-000.tar"
    if not shard.is_file():
        pytest.skip(f"{shard} is absent")
    out = tmp_path / "flickr.json"
    assert main(["retrieval", tiny["run"], "--data", str(shard), "--workers", "0", "--no-progress",
                 "--batch-size", "250", "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 1000 and result["captions"] == 5000
    assert all(0.0 <= v <= 1.0 for d in ("image_to_text", "text_to_image") for v in result[d].values())
    assert 0 < result["captions_without_labels"] < 5000


def test_retrieval_refusals_name_its_own_flag(tiny, tmp_path, capsys):
    """The captioned data comes from --data, so a refusal names --data, not the training key data.train."""
    notes = tmp_path / "notes.txt"
    notes.write_text("a dog\n")
    assert main(["retrieval", tiny["run"], "--data", str(notes), "--workers", "0", "--no-progress"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("catlip retrieval: error:")]
    assert len(errors) == 1 and f"--data entry '{notes}'" in errors[0] and "data.train" not in errors[0]
