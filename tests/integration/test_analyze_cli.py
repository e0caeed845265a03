"""`catlip analyze` end to end, in-process: shards and text files in, JSON + PNG + HTML out."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from catlip.cli import main

pytest.importorskip("catlip.labels.corpus", reason="labels stage (caption reader) not installed yet")

SAMPLES = [
    ["A dog runs on the grass .", "A brown dog plays with a ball ."],
    ["Two cats sleep on a sofa .", "A cat is sleeping ."],
    ["Running fast !", "A man drives a red car ."],
    ["A puppy chases a ball on the beach .", "A dog on the beach ."],
]


def _shard(path, samples):
    with tarfile.open(path, "w") as tar:
        for i, captions in enumerate(samples):
            data = json.dumps({"captions": captions}).encode()
            info = tarfile.TarInfo(f"{i:06d}.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _run(tmp_path, out, *extra):
    _shard(tmp_path / "s-000.tar", SAMPLES[:2])
    _shard(tmp_path / "s-001.tar", SAMPLES[2:])
    names = tmp_path / "classes.txt"
    names.write_text("dog\ncat\npuppy\nairplane\nxyzzy\n")
    argv = ["analyze", "--input", str(tmp_path / "s-{000..001}.tar"), "--targets", str(names),
            "--out", str(tmp_path / out), "--no-progress", *extra]
    assert main(argv) == 0
    return json.loads((tmp_path / out / "summary.json").read_text())


def test_analyze_shards(tmp_path, capsys):
    s = _run(tmp_path, "r1")
    c = s["corpus"]
    assert (c["num_files"], c["num_samples"], c["num_captions"]) == (2, 4, 8)
    assert c["num_unlabelled_captions"] == 1 and s["unlabelled_examples"] == ["Running fast !"]
    top = {r["name"]: (r["captions"], r["samples"]) for r in s["top_synsets"]}
    assert top["dog"] == (3, 2) and top["cat"] == (2, 1) and top["ball"] == (2, 2) and top["beach"] == (2, 1)
    t = s["targets"][0]
    assert t["unknown"] == ["xyzzy"]
    by_name = {m["name"]: m for m in t["matches"]}
    assert by_name["dog"]["similarity"] == 1.0 and by_name["dog"]["samples"] == 2
    assert by_name["puppy"]["similarity"] == 1.0  # "puppy" is in a caption itself
    assert by_name["airplane"]["similarity"] < 0.5
    assert {r["alpha"]: r["matched"] for r in t["coverage"]}[1.0] == 3
    for name in ("index.html", "long_tail.png", "growth.png", "vtau.png", "coverage.png", "samples_per_target_0.png"):
        assert (tmp_path / "r1" / name).stat().st_size > 1000, name
    assert "unique synsets" in capsys.readouterr().out


@pytest.mark.slow
def test_workers_do_not_change_the_result(tmp_path):
    one = _run(tmp_path, "w1", "--workers", "1")
    two = _run(tmp_path, "w2", "--workers", "2")
    for key in ("corpus", "growth", "long_tail", "vtau", "targets", "top_synsets", "unlabelled_examples"):
        assert one[key] == two[key], key


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    assert main(["analyze", "--input", str(tmp_path / "missing.tar"), "--out", str(tmp_path / "r")]) == 2
    assert "matches no file" in capsys.readouterr().err
    (tmp_path / "c.txt").write_text("a dog\n")
    assert main(["analyze", "--input", str(tmp_path / "c.txt"), "--targets", "imagenet99k",
                 "--out", str(tmp_path / "r")]) == 2
    assert "imagenet99k" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["analyze", "--input", str(tmp_path / "c.txt"), "--out", str(tmp_path / "file" / "r"),
                 "--no-progress"]) == 2
    assert "cannot write the report" in capsys.readouterr().err


def test_no_labelled_caption_gives_an_empty_valid_report(tmp_path):
    (tmp_path / "c.txt").write_text("!!!\n...\nquickly\n")
    assert main(["analyze", "--input", str(tmp_path / "c.txt"), "--out", str(tmp_path / "r"), "--no-progress",
                 "--targets", str(tmp_path / "t.txt")]) == 2  # the target file is missing: an error, not a crash
    (tmp_path / "t.txt").write_text("dog\n")
    assert main(["analyze", "--input", str(tmp_path / "c.txt"), "--out", str(tmp_path / "r"), "--no-progress",
                 "--targets", str(tmp_path / "t.txt")]) == 0
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["corpus"]["num_captions"] == 3 and s["corpus"]["unique_synsets"] == 0
    assert s["targets"][0]["coverage"][0]["matched"] == 0 and (tmp_path / "r" / "long_tail.png").is_file()


@pytest.mark.slow
def test_flickr8k_captions_with_cifar10(shared_data, tmp_path):
    out = tmp_path / "f"
    assert main(["analyze", "--input", str(shared_data / "flickr8k" / "captions.token.txt"), "--targets",
                 str(shared_data / "cifar10" / "classes.txt"), "--out", str(out), "--no-progress"]) == 0
    s = json.loads((out / "summary.json").read_text())
    # 8,091 photos x 5 captions, plus the 5 captions of "2258277193_586949ec62.jpg.1", an id without a photo
    assert s["corpus"]["num_captions"] == 40460 and s["corpus"]["num_samples"] == 8092  # grouped by image
    names = {r["name"] for r in s["top_synsets"][:10]}
    assert {"dog", "man", "woman"} <= names
    t = s["targets"][0]
    by_name = {m["name"]: m for m in t["matches"]}
    assert by_name["dog"]["similarity"] == 1.0 and by_name["dog"]["samples"] > 1500  # 2,021 photos
    assert t["num_unknown"] == 0 and t["coverage"][0]["matched"] >= 7


def test_vocab_option_matches_labels_stage_counts(tmp_path):
    from catlip.labels.vocab import build_vocabulary

    _shard(tmp_path / "s-000.tar", SAMPLES[:2])
    _shard(tmp_path / "s-001.tar", SAMPLES[2:])
    vocab, _ = build_vocabulary([tmp_path / "s-000.tar", tmp_path / "s-001.tar"], min_count=2)
    vocab.save(tmp_path / "vocab.json")
    s = _run(tmp_path, "rv", "--vocab", str(tmp_path / "vocab.json"))
    # the labels stage and the analysis count the same captions the same way
    counts = {r["key"]: r["captions"] for r in s["top_synsets"]}
    assert {k: counts[k] for k in vocab.keys} == dict(zip(vocab.keys, vocab.counts))
    assert s["corpus"]["num_captions"] == vocab.num_captions
    assert s["vocabulary"]["size"] == len(vocab) and s["vocabulary"]["hash"] == vocab.hash
    kept = sum(vocab.counts)
    assert s["vocabulary"]["share_in_vocab"] == pytest.approx(kept / s["corpus"]["label_occurrences"])
    t = s["targets"][0]
    assert t["corpus_synsets"] == len(vocab)
    by_name = {m["name"]: m for m in t["matches"]}
    # "puppy" is in one caption only, so not in the V_tau=2 vocabulary: its best match is dog, one hop away
    assert "puppy" not in vocab.names and by_name["puppy"]["best_name"] == "dog"
    assert by_name["puppy"]["similarity"] == 0.5


@pytest.mark.slow
def test_analysis_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    (tmp_path / "c.txt").write_text("a dog on the grass\na cat\n")
    (tmp_path / "t.txt").write_text("dog\n")
    code = ("import sys; from catlip.cli import main; "
            f"rc = main(['analyze', '--input', {str(tmp_path / 'c.txt')!r}, '--targets', {str(tmp_path / 't.txt')!r}, "
            f"'--out', {str(tmp_path / 'r')!r}, '--no-progress']); "
            "assert rc == 0; assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
