"""Issue 19, item 7: user and environment errors that were tracebacks are one line and exit 2, and a failed write
leaves nothing behind.

- backbone kwargs that timm rejects with an assertion (or torch with a RuntimeError) are a BackboneError;
- a full disk during `catlip export` (timm and open_clip formats) and `catlip labels --input F --output OUT` is
  one line, and neither the output nor a temp file remains. A full disk is simulated two ways: in a child process
  whose file-size limit (RLIMIT_FSIZE) makes the kernel fail the real write, and in-process by a write that raises
  ENOSPC part-way;
- detection boxes with 3 numbers or NaN coordinates are counted and dropped, never a traceback or a NaN target.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import resource
import signal
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from catlip.cli import main
from catlip.evaluate.dense.data import DenseDataset, clean_boxes, open_detection
from shards import write_tar  # tests/shards.py

ROOT = Path(__file__).resolve().parents[2]
# The smallest real CLIP run (timm and open_clip can both export it): 1 block, 32 px, one optimizer step.
TINY_CLIP = ["method.name=clip", "model.backbone=vit_tiny_patch16_224",
             "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}", "model.image_size=32",
             "model.embed_dim=32", "model.text_width=32", "model.text_layers=1", "model.text_heads=2",
             "data.context_length=16", "data.batch_size=4", "data.num_workers=0", "data.synthetic_size=8",
             "optim.steps=1", "optim.warmup_steps=0", "train.progress=false", "train.tensorboard=false"]
ENOSPC = os.strerror(errno.ENOSPC)  # "No space left on device"


def _one_line(err: str, command: str) -> str:
    """The error line, and nothing else on stderr but the line naming the checkpoint a command loaded."""
    lines = [x for x in err.strip("\n").splitlines() if not x.startswith("checkpoint: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"catlip {command}: error: "), err
    return lines[0]


def _everything_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------- backbone kwargs timm rejects


@pytest.mark.parametrize("kwargs, words", [
    ("{embed_dim: 97, num_heads: 3}", ["'embed_dim': 97", "'num_heads': 3", ": dim should be divisible by num_heads"]),
    ("{depth: -1}", ["'depth': -1"]),
], ids=["assertion", "runtime-error"])
def test_backbone_kwargs_that_timm_rejects_are_one_line(tmp_path, capsys, kwargs, words):
    rc = main(["pretrain", *TINY_CLIP, f"model.backbone_kwargs={kwargs}", f"train.output_dir={tmp_path / 'run'}"])
    line = _one_line(capsys.readouterr().err, "pretrain")
    assert rc == 2 and line.startswith("catlip pretrain: error: timm cannot build 'vit_tiny_patch16_224' with {")
    assert all(w in line for w in words), line


# ---------------------------------------------------------------- export on a full disk


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("errlines") / "run"
    assert main(["pretrain", *TINY_CLIP, f"train.output_dir={run}"]) == 0
    return run


def _file_size_limit(limit: int):
    def apply():  # in the child: a write past `limit` bytes fails with EFBIG, as a full disk fails with ENOSPC
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
@pytest.mark.parametrize("fmt, output", [("timm", "backbone.safetensors"), ("open_clip", "oc/folder")])
def test_export_that_the_kernel_cannot_write_is_one_line_and_leaves_nothing(clip_run, tmp_path, fmt, output):
    """The real safetensors writer hits the limit (~80 KB of weights, 16 KB allowed): its own error type must
    become the one-line error, and no weights, JSON, temp or newly made folder may remain."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "catlip.cli", "export", str(clip_run), "--format", fmt, "-o", str(out_dir / output)],
        capture_output=True, text=True, cwd=ROOT, preexec_fn=_file_size_limit(16_000), timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1"))
    line = _one_line(proc.stderr, "export")
    assert proc.returncode == 2 and "cannot write the" in line and os.strerror(errno.EFBIG) in line, line
    assert _everything_under(out_dir) == []


def _write_text_failing(monkeypatch, on_call: int) -> list[Path]:
    """Path.write_text that writes half its text and raises ENOSPC on call number `on_call` (1-based)."""
    real, calls = Path.write_text, []

    def write_text(self, data, *args, **kwargs):
        calls.append(self)
        if len(calls) == on_call:
            real(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, ENOSPC)
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    return calls


@pytest.mark.parametrize("fmt, output, on_call", [
    ("timm", "backbone.safetensors", 1),  # the weights are complete; the sidecar JSON fails
    ("timm", "folder", 1),
    ("open_clip", "folder", 2),  # weights and open_clip_config.json complete; <name>.json fails
])
def test_export_failing_after_the_weights_leaves_no_half_export(clip_run, tmp_path, capsys, monkeypatch, fmt,
                                                               output, on_call):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    calls = _write_text_failing(monkeypatch, on_call)
    rc = main(["export", str(clip_run), "--format", fmt, "-o", str(out_dir / output)])
    line = _one_line(capsys.readouterr().err, "export")
    assert len(calls) == on_call and rc == 2 and line.endswith(f": {ENOSPC}"), line
    assert _everything_under(out_dir) == []


def test_a_successful_export_is_readable_like_any_new_file(clip_run, tmp_path):
    """The staged files get the mode `open()` gives (0o666 less the umask), not safetensors' owner-only mode."""
    mask = os.umask(0o022)
    os.umask(mask)
    assert main(["export", str(clip_run), "-o", str(tmp_path / "folder")]) == 0
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "folder").iterdir()}
    assert modes == {"model.safetensors": 0o666 & ~mask, "config.json": 0o666 & ~mask}


# ---------------------------------------------------------------- catlip labels on a full disk


class _FillingFile:
    """A text file whose device fills up after `room` characters: writes past it raise ENOSPC (part written)."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def write(self, text: str) -> int:
        if len(text) > self.room:
            self.file.write(text[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, ENOSPC)
        self.room -= len(text)
        return self.file.write(text)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


@pytest.fixture
def captions(tmp_path) -> Path:
    path = tmp_path / "in" / "caps.txt"
    path.parent.mkdir()
    path.write_text("".join(f"a dog number {i} runs on the beach with a red ball\n" for i in range(3000)))
    return path


def _labels_error(err: str) -> str:
    """The error line of `catlip labels`, after its progress bar (tqdm, on stderr from the first sample on)."""
    return _one_line("\n".join(x for x in err.splitlines() if not x.startswith("labelling:")), "labels")


def test_labels_output_on_a_full_disk_is_one_line_and_leaves_no_file(captions, tmp_path, capsys, monkeypatch):
    from catlip.labels import tools

    real_open = open

    def filling_open(path, mode="r", *args, **kwargs):
        file = real_open(path, mode, *args, **kwargs)
        return _FillingFile(file, 64_000) if "w" in mode else file

    monkeypatch.setattr(tools, "open", filling_open, raising=False)
    out = tmp_path / "out" / "labels.jsonl"
    out.parent.mkdir()
    rc = main(["labels", "--labels", "words", "--input", str(captions), "--output", str(out)])
    line = _labels_error(capsys.readouterr().err)
    assert rc == 2 and line == f"catlip labels: error: cannot write {out}: {ENOSPC}"
    assert _everything_under(out.parent) == []


def test_labels_to_a_full_stdout_is_one_line(captions):
    if not Path("/dev/full").is_char_device():
        pytest.skip("no /dev/full character device here")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "catlip.cli", "labels", "--labels", "words", "--input",
                               str(captions)], stdout=full, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert _one_line(proc.stderr, "labels") == f"catlip labels: error: cannot write stdout: {ENOSPC}"


def test_labels_of_a_missing_input_leave_no_empty_output(tmp_path, capsys):
    out = tmp_path / "labels.jsonl"
    rc = main(["labels", "--labels", "words", "--input", str(tmp_path / "missing.txt"), "--output", str(out)])
    assert rc == 2 and "caption file not found" in _labels_error(capsys.readouterr().err)
    assert _everything_under(tmp_path) == []


def test_labels_output_is_complete_when_the_disk_is_not_full(captions, tmp_path):
    out = tmp_path / "labels.jsonl"
    assert main(["labels", "--labels", "words", "--input", str(captions), "--output", str(out)]) == 0
    from catlip.labels import get_extractor

    words = get_extractor("words")
    expected = [{"caption": c, "labels": words.extract(c)} for c in captions.read_text().splitlines()]
    assert [json.loads(line) for line in out.read_text().splitlines()] == expected
    assert expected[7]["labels"][:3] == ["a", "dog", "number"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "labels.jsonl"]


# ---------------------------------------------------------------- detection boxes


def test_a_box_with_three_numbers_is_counted_and_dropped():
    notes = Counter()
    target = clean_boxes([[1, 1, 5], [2, 2, 8, 8], 7], [0, 1, 0], width=20, height=16, num_classes=2, notes=notes)
    assert target["boxes"].tolist() == [[2, 2, 8, 8]] and target["labels"].tolist() == [2]
    assert notes == {"boxes without 4 coordinates": 2}


def test_nan_and_infinite_coordinates_are_counted_and_dropped():
    notes = Counter()
    target = clean_boxes([[math.nan, 1, 5, 5], [1, 1, 5, 5], [1, 1, math.inf, 5], [-math.inf, 1, 5, 5]],
                         [0, 0, 1, 1], width=20, height=16, num_classes=2, notes=notes)
    assert target["boxes"].tolist() == [[1, 1, 5, 5]] and target["labels"].tolist() == [1]
    assert notes == {"boxes with non-finite coordinates": 3}


def _jpg(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def test_bad_boxes_in_a_shard_are_counted_per_sample(tmp_path):
    boxes = '{"boxes": [[2, 2, 20], [NaN, 2, 20, 20], [3, 3, 12, 12]], "labels": [0, 1, 1]}'  # NaN: Python's JSON
    write_tar(tmp_path / "det-000.tar", [("a.jpg", _jpg(32, 24)), ("a.json", boxes.encode())])
    (tmp_path / "classes.json").write_text(json.dumps(["cat", "dog"]))
    image, target, notes = DenseDataset(open_detection(str(tmp_path / "det-000.tar")))[0]
    assert image is not None and target["boxes"].tolist() == [[3, 3, 12, 12]] and target["labels"].tolist() == [2]
    assert notes == {"boxes without 4 coordinates": 1, "boxes with non-finite coordinates": 1}


def test_a_coco_bbox_with_three_numbers_is_counted_not_a_traceback(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "images" / "1.jpg")
    coco = {"images": [{"id": 1, "file_name": "1.jpg", "width": 40, "height": 30}],
            "categories": [{"id": 5, "name": "dog"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [5, 5, 10]},
                            {"id": 2, "image_id": 1, "category_id": 5, "bbox": [5, 5, 10, 10]},
                            {"id": 3, "image_id": 1, "category_id": 5}]}
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    _, target, notes = DenseDataset(open_detection(str(tmp_path / "instances.json")))[0]
    assert target["boxes"].tolist() == [[5, 5, 15, 15]] and torch.isfinite(target["boxes"]).all()
    assert notes == {"boxes without 4 coordinates": 2}


def test_vocabulary_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """`catlip vocab build` / pre-training save the vocabulary through catlip.atomic: a full disk is a
    VocabularyError and neither the file nor its temp remains."""
    import errno

    from catlip import atomic
    from catlip.errors import VocabularyError
    from catlip.labels.vocab import Vocabulary

    vocab = Vocabulary(labels="words", keys=["dog", "cat"], counts=[3, 2], names=["dog", "cat"], glosses=["", ""],
                       num_captions=4)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(VocabularyError, match="cannot write the vocabulary .*No space left on device"):
        vocab.save(tmp_path / "vocab.json")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert Vocabulary.load(vocab.save(tmp_path / "vocab.json")).keys == ["dog", "cat"]


def _disk_full(monkeypatch):
    import errno

    from catlip import atomic

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)


def test_evaluation_results_on_a_full_disk_are_one_line_and_leave_nothing(tmp_path, monkeypatch):
    """Every evaluation command's -o JSON and `tag --jsonl` go through catlip.atomic: OutputError, no file."""
    from catlip.errors import OutputError
    from catlip.evaluate.common.cli import write_json
    from catlip.evaluate.caption.tag import _write_jsonl

    _disk_full(monkeypatch)
    with pytest.raises(OutputError, match="cannot write .*result.json: No space left on device"):
        write_json({"top1": 0.5}, str(tmp_path / "out" / "result.json"))
    with pytest.raises(OutputError, match="tags.jsonl: No space left on device"):
        _write_jsonl([{"image": "a.jpg", "tags": []}], str(tmp_path / "tags.jsonl"))
    assert list(tmp_path.iterdir()) == []  # not even the folder write_json would have created


def test_a_feature_cache_on_a_full_disk_costs_a_warning_not_the_run(tmp_path, monkeypatch, caplog):
    from catlip.evaluate.common import features

    import errno

    from catlip.models import export

    def full(tensors, path, metadata):
        path.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    feats = features.Features(torch.ones(3, 2), torch.tensor([0, 1, 0]), 1)
    monkeypatch.setattr(export, "save_tensors", full)
    features._store(tmp_path / "features-x.safetensors", feats, {"data": "d", "weights": "w"})
    assert list(tmp_path.iterdir()) == [] and "not written" in caplog.text


@pytest.mark.parametrize("argv", [["export", "{missing}", "-o", "{tmp}/b.safetensors"], ["lit", "{missing}"]])
def test_a_missing_run_folder_is_named_by_export_and_lit(tmp_path, capsys, argv):
    args = [a.format(missing=tmp_path / "no" / "run", tmp=tmp_path) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0], err


@pytest.mark.parametrize("argv", [
    ["pretrain", "--print-config", "-c", "{folder}"],
    ["lit", "{folder}", "--print-config", "-c", "{folder}"],
    ["vocab", "show", "{folder}"],
])
def test_a_folder_given_for_a_file_is_one_line(tmp_path, capsys, argv):
    """A config recipe or a vocabulary that names a folder: read errors other than "not found" are one line too."""
    folder = tmp_path / "notes"
    folder.mkdir()
    assert main([a.replace("{folder}", str(folder)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(folder) in err and "Traceback" not in err, err
