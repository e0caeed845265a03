"""What the evaluation commands say about what they did (issue 20, items 3 and 4): the checkpoint each one used,
a run folder that is not there, zero-shot's per-class recall and its note on a collapsed classifier, and output
free of cursor-movement escapes when stderr is a log rather than a terminal.

One tiny CatLIP run (6 steps, checkpoints at steps 3 and 6) and one tiny shard of three synthetic object kinds.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys

import pytest
import torch
from shards import write_tar  # tests/shards.py

from catlip.cli import main

from tiny import TINY_VIT as TINY  # noqa: E402  (tests/tiny.py)
KINDS = 3  # ball, box, car: synsets of the synthetic captions
PER_CLASS = 4
COMMON = ["--workers", "0", "--no-progress"]
ESCAPES = ("\r", "\x1b[")

# Each command after `catlip <name> RUN`, on the tiny shard (or, for the dense tasks, the embedded scenes).
ARGV = {
    "probe": ["--train", "{data}", "--test", "{data}", "--epochs", "1", "--no-knn"],
    "knn": ["--train", "{data}", "--test", "{data}", "--k", "3"],
    "multilabel": ["--train", "{data}", "--test", "{data}", "--epochs", "1"],
    "zeroshot": ["--test", "{data}"],
    "finetune": ["--train", "{data}", "--config", "configs/finetune_tiny_cpu.yaml", "--set", "epochs=1"],
    "retrieval": ["--data", "{data}", "--column", "labels"],
    "tag": ["{data}", "--top", "2"],
    "segment": ["--train", "synthetic:4:32", "--holdout", "2", "--epochs", "1", "--set", "image_size=32",
                "--set", "head_channels=16"],
    "detect": ["--train", "synthetic:4:64", "--holdout", "2", "--epochs", "1", "--set", "image_size=64",
               "--set", "fpn_channels=16", "--set", "anchor_size=8", "--set", "box_head_dim=32",
               "--set", "masks=off"],
}


def _shard(path) -> str:
    from catlip.data.synthetic import OBJECTS, synthetic_sample

    members, counts, i = [], [0] * KINDS, 0
    while min(counts) < PER_CLASS:
        s = synthetic_sample(i, seed=3, image_size=32)
        i += 1
        if s.label >= KINDS or counts[s.label] >= PER_CLASS:
            continue
        counts[s.label] += 1
        buf = io.BytesIO()
        s.image.convert("RGB").save(buf, format="JPEG")
        members += [(f"{i:05d}.jpg", buf.getvalue()), (f"{i:05d}.cls", str(s.label).encode()),
                    (f"{i:05d}.json", json.dumps({"labels": [OBJECTS[s.label]]}).encode())]
    (path.parent / "classes.txt").write_text("\n".join(OBJECTS[:KINDS]) + "\n")
    return str(write_tar(path, members))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from catlip.config import load_config
    from catlip.train.loop import pretrain

    root = tmp_path_factory.mktemp("messages")
    (root / "tiny.yaml").write_text(TINY)
    cfg = load_config(root / "tiny.yaml", [
        "method.name=catlip", "data.synthetic_size=48", "data.vocab_min_count=1", "data.batch_size=16",
        "data.num_workers=0", "optim.steps=6", "optim.warmup_steps=2", "optim.lr=0.003",
        f"train.output_dir={root / 'run'}", "train.progress=false", "train.tensorboard=false", "train.ckpt_every=3"])
    return {"run": str(pretrain(cfg)), "data": _shard(root / "data-000.tar"), "root": root}


def _argv(name: str, tiny: dict) -> list[str]:
    return [a.format(**tiny) for a in ARGV[name]]


# ---------------------------------------------------------------- the checkpoint each command used


@pytest.mark.parametrize("name", sorted(ARGV))
def test_every_command_names_the_checkpoint_and_its_step(name, tiny, tmp_path, capsys):
    out = tmp_path / "result.json"
    assert main([name, tiny["run"], *_argv(name, tiny), *COMMON, "-o", str(out)]) == 0
    newest = os.path.join(tiny["run"], "checkpoints", "step_0000006")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("checkpoint:")]
    assert lines == [f"checkpoint: {newest} (step 6 of 6)"]
    result = json.loads(out.read_text())
    assert (result["checkpoint_path"], result["checkpoint_step"], result["checkpoint_steps"]) == (newest, 6, 6)


def test_an_older_checkpoint_says_how_far_its_run_had_got(tiny, capsys):
    older = os.path.join(tiny["run"], "checkpoints", "step_0000003")
    assert main(["knn", older, *_argv("knn", tiny), *COMMON]) == 0
    assert f"checkpoint: {older} (step 3 of 6)\n" in capsys.readouterr().err


def test_the_random_floor_says_it_has_no_checkpoint(tiny, capsys):
    spec = f"random:{tiny['root'] / 'tiny.yaml'}"
    assert main(["knn", spec, *_argv("knn", tiny), *COMMON]) == 0
    err = capsys.readouterr().err
    assert f"checkpoint: none, {spec} is the random-init floor" in err and "step" not in err


# ---------------------------------------------------------------- a run folder that is not there


@pytest.mark.parametrize("name", sorted(ARGV))
def test_a_missing_run_folder_is_named_as_missing(name, tiny, tmp_path, capsys):
    missing = str(tmp_path / "no" / "such" / "dir")
    assert main([name, missing, *_argv(name, tiny), *COMMON]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: run folder {missing} does not exist" in err
    assert "no valid checkpoint" not in err


def test_a_file_given_as_run_folder_is_named_as_a_file(tiny, capsys):
    weights = os.path.join(tiny["run"], "checkpoints", "step_0000006", "model.safetensors")
    assert main(["zeroshot", weights, "--test", tiny["data"], *COMMON]) == 2
    assert f"run folder {weights} is a file, not a folder" in capsys.readouterr().err


# ---------------------------------------------------------------- zero-shot: per-class recall, collapse, coverage


def test_zeroshot_prints_per_class_recall_and_head_coverage_words(tiny, tmp_path, capsys):
    (tmp_path / "classes.txt").write_text("ball\nbox\nqwzx\n")  # a name no synset has: unmapped
    out = tmp_path / "zs.json"
    assert main(["zeroshot", tiny["run"], "--test", tiny["data"], "--classes", str(tmp_path / "classes.txt"),
                 *COMMON, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["per_class_images"] == [PER_CLASS] * KINDS and sum(result["predictions_per_class"]) == 12
    assert result["predictions_per_class"][2] == 0  # an unmapped class is never predicted
    assert "Transfer Init" not in printed and "random init" not in printed
    assert "classes mapped to the head: 2 of 3 (exact 2, similar 0, averaged 0;" in printed
    assert "unmapped classes (scored -inf: never predicted, their images count as errors): 1: qwzx" in printed
    after = printed[printed.index("mean_per_class_recall"):]  # the per-class table follows the summary
    table = after[after.index("per-class recall:"):].splitlines()
    assert table[1].split() == ["class", "images", "predicted", "recall"]
    rows = {r.split()[0]: r.split()[1:] for r in table[3:6]}
    for i, name in enumerate(["ball", "box", "qwzx"]):
        recall = result["per_class_recall"][i]
        assert rows[name] == [str(PER_CLASS), str(result["predictions_per_class"][i]), f"{100 * recall:.2f}"]
    assert rows["qwzx"][2] == "0.00"


def _zeroshot_result(predicted: list[int], images: list[int]) -> dict:
    """A head zero-shot result whose predictions per class are ``predicted`` on ``images`` images per class."""
    from catlip.evaluate.classify.zeroshot import classification_metrics

    targets = torch.cat([torch.full((n,), c) for c, n in enumerate(images)])
    preds = torch.cat([torch.full((n,), c) for c, n in enumerate(predicted)])
    logits = torch.nn.functional.one_hot(preds, len(images)).float()
    names = [f"class{c}" for c in range(len(images))]
    return {**classification_metrics(logits, targets), "mode": "head", "method": "catlip", "class_names": names,
            "num_classes": len(images), "test_images": sum(images)}


def test_a_collapsed_head_is_noted_in_one_line(capsys):
    from catlip.evaluate.classify import zeroshot

    result = _zeroshot_result(predicted=[0, 0, 10, 0, 0, 0, 0, 0, 0, 0], images=[1] * 10)
    assert result["top1"] == pytest.approx(0.10)  # the number that gave no hint before
    zeroshot.report(result, argparse.Namespace(no_bias=False))
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == ["note: 10 of 10 predictions (100%) fall in one class, 'class2', which has 1 of the 10 images: "
                     "the classifier has collapsed onto it; the head's bias is a label prior: try --no-bias"]
    zeroshot.report(result, argparse.Namespace(no_bias=True))
    assert "try --no-bias" not in capsys.readouterr().out


@pytest.mark.parametrize("predicted, images, dominant", [
    ([4, 4, 4], [4, 4, 4], None),  # balanced
    ([7, 3, 2], [4, 4, 4], 0),  # 7 of 12: more than half
    ([6, 3, 3], [4, 4, 4], None),  # exactly half is not more than half
    ([9, 1], [9, 1], None),  # the class really holds most of the images
    ([0, 0], [0, 0], None),  # no prediction at all
])
def test_dominant_class(predicted, images, dominant):
    from catlip.evaluate.classify.zeroshot import dominant_class

    assert dominant_class(predicted, images) == dominant


def test_no_collapse_note_for_spread_predictions(capsys):
    from catlip.evaluate.classify import zeroshot

    zeroshot.report(_zeroshot_result(predicted=[2, 1, 1], images=[2, 1, 1]), argparse.Namespace(no_bias=False))
    printed = capsys.readouterr().out
    assert "note:" not in printed and "per-class recall:" in printed


def test_many_classes_show_the_lowest_and_highest_recalls(capsys):
    from catlip.evaluate.classify import zeroshot

    images = [c + 1 for c in range(40)]  # class c: c + 1 images, every one predicted right
    result = _zeroshot_result(predicted=images, images=images)
    result["per_class_recall"] = [c / 40 for c in range(40)]  # class c: recall c/40 (set by hand: a ranking)
    zeroshot.print_per_class(result)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "per-class recall (the 10 lowest and 10 highest of 40):"
    assert [line.split()[0] for line in lines[3:]] == [f"class{c}" for c in [*range(10), *range(30, 40)]]
    assert lines[3].split() == ["class0", "1", "1", "0.00"] and lines[-1].split() == ["class39", "40", "40", "97.50"]


# ---------------------------------------------------------------- pipes and logs


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_lines_in_a_log(monkeypatch):
    from catlip import progress

    from tqdm import tqdm

    assert isinstance(progress.progress_bar(total=3, file=_Terminal()), tqdm)
    log = io.StringIO()
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.0)  # a line at every update
    bar = progress.progress_bar(total=4, desc="features x", unit="img", file=log)
    bar.update(2)
    bar.set_postfix(loss="0.5")
    bar.update(2)
    bar.close()
    bar.close()  # a second close writes nothing
    lines = log.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("features x: 2/4 img (50%), ")
    assert lines[1].startswith("features x: 4/4 img (100%)") and lines[1].endswith("[loss=0.5]")
    assert lines[2].startswith("features x: done, 4/4 img in ")
    assert not any(e in log.getvalue() for e in ESCAPES)
    assert progress.progress_bar(total=4, file=log, disable=True).disable  # --no-progress: nothing at all


def test_plain_progress_iterates_like_tqdm(monkeypatch):
    from catlip import progress

    log = io.StringIO()
    assert list(progress.progress_bar(range(3), desc="captions", unit="batch", file=log)) == [0, 1, 2]
    assert log.getvalue().startswith("captions: done, 3/3 batch in ")  # PLAIN_EVERY not reached: one line


def test_knn_progress_in_a_log_has_no_escapes(tiny, capsys):
    # --no-cache: train and test are one shard, which the feature cache would read back the second time
    assert main(["knn", tiny["run"], *_argv("knn", tiny), "--workers", "0", "--no-cache"]) == 0
    printed = capsys.readouterr()
    assert not any(e in printed.err + printed.out for e in ESCAPES)
    assert printed.err.count(f"features data-000.tar: done, {KINDS * PER_CLASS} img in ") == 2  # train, test
    assert printed.out.splitlines()[0].split() == ["protocol", "subset", "n_train", "top1", "top5"]


def test_segment_log_is_free_of_escapes_and_ends_with_labelled_tables(tiny, tmp_path):
    """`catlip segment ... > log 2>&1`: progress lines, then the result tables with their headers."""
    log = tmp_path / "segment.log"
    cmd = [sys.executable, "-m", "catlip.cli", "segment", tiny["run"], *_argv("segment", tiny), "--workers", "0"]
    with open(log, "w") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=os.getcwd(), timeout=300)
    text = log.read_text()
    assert done.returncode == 0, text
    assert not any(e in text for e in ESCAPES)
    lines = text.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("epoch ")))
    assert lines[header].split() == ["epoch", "steps", "train_loss", "mIoU", "pixel_acc", "mean_acc"]
    last_progress = max(i for i, line in enumerate(lines) if line.startswith(("segment: ", "evaluate: ")))
    assert last_progress < header and lines[header + 1].startswith("-----")
    assert any(line.startswith("segment: done, 1/1 step in ") for line in lines)
    assert any(line.startswith("evaluate: done, 1/1 batch in ") for line in lines)
    assert any(line.split() == ["class", "IoU"] for line in lines[header:])


@pytest.mark.parametrize("command", ["zeroshot", "knn", "probe", "tag"])
def test_limit_evaluates_the_first_n_images(command, tiny, tmp_path):
    shard, classes = tiny["data"], str(tiny["root"] / "classes.txt")
    data = {"zeroshot": ["--test", shard], "knn": ["--train", shard, "--test", shard],
            "probe": ["--train", shard, "--test", shard, "--no-knn", "--epochs", "1"], "tag": [shard]}[command]
    extra = [] if command == "tag" else ["--classes", classes]
    out = tmp_path / "r.json"
    assert main([command, tiny["run"], *data, *extra, "--limit", "7", "--workers", "0", "--no-progress",
                 "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (len(result["images"]) if command == "tag" else result["test_images"]) == 7


def test_limit_must_be_positive(tiny, capsys):
    assert main(["zeroshot", tiny["run"], "--test", tiny["data"], "--limit", "0"]) == 2
    assert "--limit must be >= 1" in capsys.readouterr().err


def test_retrieval_limit_keeps_the_first_captioned_images(tiny, tmp_path):
    out = tmp_path / "r.json"
    assert main(["retrieval", tiny["run"], "--data", tiny["data"], "--column", "labels", "--limit", "5",
                 "--workers", "0", "--no-progress", "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 5 and result["captions"] == 5


def test_features_are_cached_by_default_and_no_cache_keeps_none(tiny, tmp_path, monkeypatch):
    """A second command on the same weights and data reads the first one's features from the user cache."""
    import os

    monkeypatch.setenv("CATLIP_CACHE", str(tmp_path / "cache"))
    argv = ["zeroshot", tiny["run"], "--test", tiny["data"], "--workers", "0", "--no-progress"]
    assert main([*argv, "--no-cache"]) == 0
    assert not (tmp_path / "cache").exists()
    assert main(argv) == 0
    cached = sorted((tmp_path / "cache" / "features").glob("features-*.safetensors"))
    assert len(cached) == 1
    stamp = os.stat(cached[0]).st_mtime_ns
    assert main(argv) == 0  # read back, not written again
    assert os.stat(cached[0]).st_mtime_ns == stamp


def test_a_limit_cuts_the_last_batch_and_the_progress_total(capsys):
    from catlip.evaluate.common.datasets import LabelledData
    from catlip.evaluate.common.features import extract_features

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.seen = []

        def forward(self, x):
            self.seen.append(len(x))
            return x.flatten(1)

    images = [(torch.full((3, 2, 2), float(i)), i % 2) for i in range(10)]
    enc = Recorder()
    feats = extract_features(enc, LabelledData("ten", images, ["a", "b"]), batch_size=4, device="cpu", limit=7)
    assert enc.seen == [4, 3] and len(feats) == 7  # the second batch is cut at the limit before encoding
    assert feats.x[:, 0].tolist() == [0, 1, 2, 3, 4, 5, 6] and feats.y.tolist() == [0, 1, 0, 1, 0, 1, 0]
    err = capsys.readouterr().err
    assert "7/7 img" in err and "/10 img" not in err and "8/" not in err
