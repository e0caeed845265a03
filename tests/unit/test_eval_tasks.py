"""The evaluation-task registry (catlip.evaluate.tasks): every task runs on a tiny CatLIP checkpoint via main(argv).

One tiny ViT is pre-trained with CatLIP for a few steps on the synthetic scenes (so head zero-shot and Transfer
Init have a head and a vocabulary); the evaluation data are webdataset shards written here (``.jpg`` + ``.cls``
+ ``.json`` multi-labels, ``classes.txt`` beside them). Adding a task = adding its file in its family folder
(evaluate/classify/, caption/, dense/; named in that folder's TASKS) and its command line to ``ARGV`` below.
"""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from catlip.cli import build_parser, main
from catlip.errors import CliError
from catlip.evaluate import tasks as registry

from tiny import TINY_VIT as TINY  # noqa: E402  (tests/tiny.py)
KINDS = 3  # ball, box, car: synsets of the synthetic captions
COMMON = ["--workers", "0", "--no-progress", "--batch-size", "32"]

# Per task: its command line after `catlip <task> RUN` (paths filled in from the fixture) and the metric keys it
# must report in its JSON result.
ARGV = {
    "probe": (["--train", "{train}", "--test", "{test}", "--epochs", "3", "--init", "random,transfer"], ["rows"]),
    "knn": (["--train", "{train}", "--test", "{test}", "--k", "5"], ["rows"]),
    "multilabel": (["--train", "{train}", "--test", "{test}", "--epochs", "3"], ["rows"]),
    "zeroshot": (["--test", "{test}"], ["top1", "top5"]),
    "finetune": (["--train", "{train}", "--test", "{test}", "--config", "configs/finetune_tiny_cpu.yaml",
                  "--set", "epochs=1", "--set", "init=transfer"], ["final", "history"]),
    "retrieval": (["--data", "{test}", "--column", "labels"], ["image_to_text", "text_to_image", "mean_recall"]),
    "tag": (["{test}", "--top", "3"], ["images", "skipped"]),
    "segment": (["--train", "synthetic:6:32", "--holdout", "2", "--epochs", "1", "--set", "image_size=32",
                 "--set", "head_channels=16"], ["final", "history"]),
    "detect": (["--train", "synthetic:6:64", "--holdout", "2", "--epochs", "1", "--set", "image_size=64",
                "--set", "fpn_channels=16", "--set", "anchor_size=8", "--set", "box_head_dim=32",
                "--set", "masks=off"], ["final", "history"]),
}


def _write_shard(path, per_class: int, seed: int) -> None:
    from catlip.data.synthetic import OBJECTS, synthetic_sample

    counts, i = [0] * KINDS, 0
    with tarfile.open(path, "w") as tar:
        while min(counts) < per_class:
            s = synthetic_sample(i, seed=seed, image_size=32)
            i += 1
            if s.label >= KINDS or counts[s.label] >= per_class:
                continue
            counts[s.label] += 1
            buf = io.BytesIO()
            s.image.convert("RGB").save(buf, format="JPEG")
            other = OBJECTS[(s.label + 1) % KINDS]
            labels = [OBJECTS[s.label]] + ([other] if i % 2 else [])
            for ext, data in (("jpg", buf.getvalue()), ("cls", str(s.label).encode()),
                              ("json", json.dumps({"labels": labels}).encode())):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from catlip.config import load_config
    from catlip.data.synthetic import OBJECTS
    from catlip.train.loop import pretrain

    root = tmp_path_factory.mktemp("tasks")
    (root / "tiny.yaml").write_text(TINY)
    (root / "classes.txt").write_text("\n".join(OBJECTS[:KINDS]) + "\n")
    _write_shard(root / "train-000.tar", 10, seed=1)
    _write_shard(root / "test-000.tar", 5, seed=2)
    cfg = load_config(root / "tiny.yaml", [
        "method.name=catlip", "data.synthetic_size=64", "data.vocab_min_count=1", "data.batch_size=16",
        "data.num_workers=0", "optim.steps=6", "optim.warmup_steps=2", "optim.lr=0.003",
        f"train.output_dir={root / 'run'}", "train.progress=false", "train.tensorboard=false", "train.ckpt_every=6"])
    run = pretrain(cfg)
    return {"run": str(run), "train": str(root / "train-000.tar"), "test": str(root / "test-000.tar"), "root": root}


def test_every_task_has_a_command_line_here():
    # eval runs a suite of these tasks; it has its own tests (tests/unit/test_eval_suite.py)
    assert set(registry.names()) - {"eval"} == set(ARGV)
    assert {"probe", "knn", "zeroshot", "finetune", "multilabel"} <= set(registry.names())


def test_the_cli_has_one_subcommand_per_task():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(registry.names()) <= set(sub.choices)
    for task in registry.tasks():
        p = sub.choices[task.name]
        dests = {a.dest for a in p._actions}
        out = "out_dir" if task.name == "eval" else "output"  # eval's -o is a folder (JSON + Markdown), not a file
        assert {"checkpoint", out, "workers", "device"} <= dests, task.name
        assert callable(task.run) and callable(task.report) and task.help and task.description


@pytest.mark.parametrize("name", sorted(ARGV))
def test_task_runs_on_a_tiny_checkpoint(name, tiny, tmp_path, capsys):
    argv, keys = ARGV[name]
    out = tmp_path / f"{name}.json"
    args = [a.format(**tiny) for a in argv]
    assert main([name, tiny["run"], *args, *COMMON, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["method"] == "catlip" and all(k in result for k in keys), result.keys()
    if name in ("probe", "knn"):
        assert result["num_classes"] == KINDS and result["test_images"] == 5 * KINDS
        assert all(0.0 <= r["top1"] <= 1.0 for r in result["rows"])
        assert "knn" in printed  # probe keeps its k-NN line; knn prints only that
    if name == "probe":
        assert {r["init"] for r in result["rows"] if r["protocol"] == "logistic"} == {"random", "transfer"}
        assert "Transfer Init coverage" in printed
    if name == "knn":
        assert [r["protocol"] for r in result["rows"]] == ["knn (k=5)"] and "logistic" not in printed
    if name == "multilabel":
        assert "mAP" in printed and [r["protocol"] for r in result["rows"]] == ["logistic"]
        assert 0.0 < result["rows"][0]["mAP"] <= 1.0
    if name == "zeroshot":
        assert result["mode"] == "head" and result["coverage"]["counts"]["exact"] == KINDS
        assert 0.0 <= result["top1"] <= 1.0 and "top1" in printed
    if name == "finetune":
        assert [h["epoch"] for h in result["history"]] == [1] and "train_loss" in printed


def test_knn_agrees_with_the_probe_row(tiny, tmp_path):
    """The knn task and probe's k-NN row are the same computation on the same features."""
    common = [*COMMON, "--cache-dir", str(tmp_path / "cache")]
    assert main(["knn", tiny["run"], "--train", tiny["train"], "--test", tiny["test"], *common,
                 "-o", str(tmp_path / "k.json")]) == 0
    assert main(["probe", tiny["run"], "--train", tiny["train"], "--test", tiny["test"], "--epochs", "1", *common,
                 "-o", str(tmp_path / "p.json")]) == 0
    knn = json.loads((tmp_path / "k.json").read_text())["rows"][0]
    row = next(r for r in json.loads((tmp_path / "p.json").read_text())["rows"] if r["protocol"].startswith("knn"))
    assert knn == row


def test_unknown_task_is_one_line_listing_the_valid_names(capsys):
    with pytest.raises(CliError) as err:
        registry.get("segmentt")
    text = str(err.value)
    assert "\n" not in text and all(n in text for n in registry.names())
    with pytest.raises(SystemExit) as exit_:
        main(["segmentt", "run"])
    assert exit_.value.code == 2
    lines = [l for l in capsys.readouterr().err.splitlines() if "error" in l]
    assert len(lines) == 1 and all(n in lines[0] for n in registry.names())


def test_bad_task_arguments_are_one_line_errors(tiny, capsys):
    assert main(["knn", tiny["run"], "--train", tiny["train"], "--test", tiny["test"], "--k", "0", *COMMON]) == 2
    assert "--k" in capsys.readouterr().err
    assert main(["multilabel", tiny["run"], "--train", tiny["train"], "--test", tiny["test"], "--fractions", "3",
                 *COMMON]) == 2
    assert "--fractions" in capsys.readouterr().err


def test_task_modules_do_not_import_torch():
    """`catlip --help` builds every task's parser: the registry and task modules import no torch at top level."""
    import subprocess
    import sys

    code = ("import sys; from catlip.cli import build_parser; build_parser(); "
            "from catlip.evaluate.tasks import tasks; tasks(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
