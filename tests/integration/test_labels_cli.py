"""`catlip labels` and `catlip vocab` in-process through `catlip.cli.main`."""

import json

import pytest

from catlip.cli import main


def test_labels_acceptance_captions(capsys):
    assert main(["labels", "--method", "catlip", "Two men ride bicycles past a church",
                 "A photo of a child eating an ice cream", "The kids watch tv near the fire hydrant"]) == 0
    blocks = capsys.readouterr().out.strip().split("\n\n")
    assert len(blocks) == 3
    first = blocks[0].splitlines()
    assert first[0] == "Two men ride bicycles past a church"
    assert [line.split()[0] for line in first[1:]] == ["n10287213", "n02834778", "n08082602"]
    assert "man" in first[1] and "bicycle" in first[2]
    assert [line.split()[0] for line in blocks[1].splitlines()[1:]] == ["n03925226", "n09917593", "n07614500"]
    keys = [line.split()[0] for line in blocks[2].splitlines()[1:]]
    assert keys[0] == "n09917593" and keys[1] in ("n06277280", "n04405907") and keys[2] == "n03346898"


def test_labels_superclass_and_option_errors(capsys):
    assert main(["labels", "--method", "superclass", "--stopwords", "a photo of the dog"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in out[1:3]] == ["photo", "dog"]
    assert main(["labels", "--method", "superclass", "--style", "corenet", "x"]) == 2
    assert "apply to --method catlip" in capsys.readouterr().err
    assert main(["labels"]) == 2


def test_labels_file_to_jsonl(tmp_path, capsys):
    src = tmp_path / "caps.txt"
    src.write_bytes(b"A dog runs .\n\nquickly and slowly\nbad \xff line\nA cat &amp; a hat \xf0\x9f\x8e\xa9\n")
    dst = tmp_path / "labels.jsonl"
    assert main(["labels", "--method", "catlip", "--input", str(src), "--output", str(dst)]) == 0
    rows = [json.loads(line) for line in dst.read_text().splitlines()]
    assert rows == [{"caption": "A dog runs .", "labels": ["n02084071"]},
                    {"caption": "quickly and slowly", "labels": []},
                    {"caption": "A cat &amp; a hat 🎩", "labels": ["n02121620", "n03497657"]}]
    err = capsys.readouterr().err
    assert "labelled 3 captions; lines skipped: 1" in err and f"{src}:4: invalid UTF-8" in err


def test_missing_wordnet_is_one_line_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CATLIP_WORDNET_DIR", str(tmp_path / "nowhere"))
    assert main(["labels", "a dog"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "apt-get install -y wordnet-base wordnet-sense-index" in err


def test_vocab_show_rejects_corrupt_file(tmp_path, capsys):
    bad = tmp_path / "v.json"
    bad.write_text('{"format_version": 1, "keys": [')
    assert main(["vocab", "show", str(bad)]) == 2
    assert "corrupt vocabulary" in capsys.readouterr().err


@pytest.mark.slow
def test_vocab_build_flickr_shards_workers_identical(shared_data, tmp_path, capsys):
    shards = sorted(str(p) for p in (shared_data / "flickr8k").glob("*.tar"))
    assert len(shards) == 9
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"vocab{workers}.json"
        assert main(["vocab", "build", "--method", "catlip", "--input", *shards, "--min-count", "5",
                     "--workers", str(workers), "--output", str(out)]) == 0
        outs.append(out)
    summary = capsys.readouterr().out
    assert "captions read:     40,455 (8,091 samples from 9 file(s))" in summary
    assert "lines skipped:     0" in summary and "captions with >= 1 kept label: 99." in summary
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert main(["vocab", "show", str(outs[0]), "--top", "5"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("catlip vocabulary: ") and len(table) == 2 + 5
    assert table[2].split()[:2] == ["0", "n02084071"]  # "dog" is Flickr8k's most frequent noun
    data = json.loads(outs[0].read_text())
    assert data["counts"] == sorted(data["counts"], reverse=True) and min(data["counts"]) >= 5


def test_vocab_build_expands_brace_patterns(tmp_path, capsys):
    (tmp_path / "part0.txt").write_text("a dog on the grass\na dog and a cat\n")
    (tmp_path / "part1.txt").write_text("a cat on a sofa\n")
    out = tmp_path / "vocab.json"
    assert main(["vocab", "build", "--input", str(tmp_path / "part{0..1}.txt"), "--min-count", "2",
                 "--output", str(out)]) == 0
    vocab = json.loads(out.read_text())
    # dog.n.01 and cat.n.01 (2 captions each) pass min count 2; grass and sofa (1 each) do not
    assert sorted(vocab["keys"]) == ["n02084071", "n02121620"]
    assert main(["vocab", "build", "--input", str(tmp_path / "part{7..8}.txt"), "--output", str(out)]) == 2
    assert "matches no file" in capsys.readouterr().err
