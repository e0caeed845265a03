"""`catlip eval RUN --suite`: the shipped suite over ../shared/data on a tiny CatLIP run (--limit 20), its JSON and
Markdown summary, resuming, --limit / holdout subset shards, and suite-file errors as one line with exit 2."""

from __future__ import annotations

import json
import re
import tarfile
from statistics import mean

import pytest

from catlip.cli import main
from catlip.evaluate.suite import KINDS, load_suite, option_argv, task_splits

from tiny import TINY_VIT  # noqa: E402  (tests/tiny.py)

TINY = TINY_VIT + "  head_bias_init: -3.0\n"
SUITE = "configs/suites/shared_small.yaml"
TASKS = ["cifar10-zeroshot", "cifar10-probe", "cifar10-knn", "flickr8k-retrieval", "coco128-multilabel"]
COMMON = ["--workers", "0", "--no-progress", "--device", "cpu", "--batch-size", "20"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A CatLIP run of a few steps on the synthetic scenes: its vocabulary has `car` (CIFAR's automobile)."""
    from catlip.config import load_config
    from catlip.train.loop import pretrain

    root = tmp_path_factory.mktemp("suite")
    (root / "tiny.yaml").write_text(TINY)
    cfg = load_config(root / "tiny.yaml", [
        "method.name=catlip", "data.synthetic_size=64", "data.vocab_min_count=1", "data.batch_size=16",
        "data.num_workers=0", "data.augment=none", "optim.steps=3", "optim.warmup_steps=1", "optim.lr=0.003",
        f"train.output_dir={root / 'run'}", "train.progress=false", "train.tensorboard=false", "train.ckpt_every=3"])
    return str(pretrain(cfg))


@pytest.fixture(scope="module")
def suite_run(tiny_run, shared_data, tmp_path_factory):
    """The shipped suite, run twice into the same folder; the outputs and printed text of both runs."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("eval") / "out"
    argv = ["eval", tiny_run, "--suite", SUITE, "--limit", "20", "-o", str(out), "--data-root", str(shared_data),
            *COMMON]
    runs = []
    for _ in range(2):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(argv) == 0
        runs.append({"text": printed.getvalue(), "json": (out / "results.json").read_text(),
                     "md": (out / "results.md").read_text()})
    return {"out": out, "runs": runs, "result": json.loads(runs[0]["json"])}


def test_every_task_of_the_suite_has_its_main_metric_in_range(suite_run):
    result = suite_run["result"]
    assert list(result["tasks"]) == TASKS
    for name, task in result["tasks"].items():
        assert task["metric"] == KINDS[task["kind"]].metric
        assert 0.0 <= task["value"] <= 1.0, name
    assert result["tasks"]["cifar10-zeroshot"]["result"]["mode"] == "head"  # CatLIP: auto picks the head
    assert result["tasks"]["cifar10-zeroshot"]["result"]["test_images"] == 20  # --limit 20
    assert result["tasks"]["flickr8k-retrieval"]["result"]["images"] == 20
    multilabel = result["tasks"]["coco128-multilabel"]["result"]
    assert (multilabel["train_images"], multilabel["test_images"]) == (20, 20)  # holdout 28, then --limit 20


def test_the_main_metric_is_the_documented_number_of_each_result(suite_run):
    tasks = suite_run["result"]["tasks"]
    retrieval = tasks["flickr8k-retrieval"]["result"]
    assert tasks["flickr8k-retrieval"]["value"] == pytest.approx(
        (retrieval["image_to_text"]["R@1"] + retrieval["text_to_image"]["R@1"]) / 2)
    assert tasks["cifar10-zeroshot"]["value"] == tasks["cifar10-zeroshot"]["result"]["top1"]
    assert tasks["cifar10-knn"]["value"] == tasks["cifar10-knn"]["result"]["rows"][0]["top1"]
    assert tasks["coco128-multilabel"]["value"] == tasks["coco128-multilabel"]["result"]["rows"][0]["mAP"]
    probe_rows = tasks["cifar10-probe"]["result"]["rows"]
    assert [r["protocol"] for r in probe_rows] == ["logistic"]  # no_knn: true in the suite
    assert tasks["cifar10-probe"]["value"] == probe_rows[0]["top1"]


def test_the_average_is_the_mean_of_the_task_metrics(suite_run):
    result = suite_run["result"]
    values = [t["value"] for t in result["tasks"].values()]
    assert result["average"] == pytest.approx(mean(values), abs=1e-12)
    assert result["tasks_done"] == len(TASKS)


def test_the_markdown_table_has_a_row_per_task_and_the_average(suite_run):
    md = suite_run["runs"][0]["md"]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("| ")]
    assert rows[0] == ["task", "kind", "dataset", "metric", "value"]
    body = {r[0]: r for r in rows[1:]}
    assert list(body) == [*TASKS, "**average**"]
    for name, task in suite_run["result"]["tasks"].items():
        assert body[name][1:] == [task["kind"], task["dataset"], task["metric"], f"{100 * task['value']:.2f}"]
    assert body["**average**"][-1] == f"**{100 * suite_run['result']['average']:.2f}**"


def test_the_same_features_are_extracted_once_for_the_tasks_sharing_a_split(suite_run):
    # zero-shot, probe and k-NN all read CIFAR-10 test at the same size; probe and k-NN the same train split;
    # COCO's two splits; retrieval encodes its own images: four feature files in all
    assert len(list((suite_run["out"] / "cache").glob("features-*.safetensors"))) == 4


def test_a_second_run_skips_every_task_and_leaves_the_outputs_unchanged(suite_run):
    first, second = suite_run["runs"]
    assert first["text"].count(": running") == len(TASKS)
    assert second["text"].count(": running") == 0
    assert second["text"].count("(stored result, not run again)") == len(TASKS)
    assert second["json"] == first["json"] and second["md"] == first["md"]
    table = second["text"][second["text"].index("task "):]
    assert sum(line.rstrip().endswith("stored") for line in table.splitlines()) == len(TASKS)


def test_an_interrupted_suite_runs_only_its_missing_tasks(suite_run, tiny_run, shared_data, capsys):
    out = suite_run["out"]
    stored = json.loads(suite_run["runs"][0]["json"])
    del stored["tasks"]["cifar10-knn"]  # as if killed during k-NN: the JSON has what finished before it
    (out / "results.json").write_text(json.dumps(stored))
    argv = ["eval", tiny_run, "--suite", SUITE, "--limit", "20", "-o", str(out), "--data-root", str(shared_data)]
    assert main(argv + COMMON) == 0
    text = capsys.readouterr().out
    assert re.findall(r"\] (\S+) \([^)]*\): running", text) == ["cifar10-knn"]
    assert _untimed(json.loads((out / "results.json").read_text())) == _untimed(json.loads(suite_run["runs"][0]["json"]))


def _untimed(results: dict) -> dict:
    """The results without each task's wall-clock ``seconds`` (a re-run task takes its own time on a busy machine)."""
    return {**results, "tasks": {name: {k: v for k, v in task.items() if k != "seconds"}
                                 for name, task in results["tasks"].items()}}


def test_another_limit_is_another_result(tiny_run, shared_data, tmp_path):
    suite = tmp_path / "one.yaml"
    suite.write_text("datasets:\n  c: {train: cifar10/cifar10-train-000.tar, test: cifar10/cifar10-test-000.tar}\n"
                     "tasks:\n  - {kind: knn, dataset: c, options: {k: 3}}\n")
    base = ["eval", tiny_run, "--suite", str(suite), "-o", str(tmp_path / "o"), "--data-root", str(shared_data)]
    assert main(base + ["--limit", "6"] + COMMON) == 0
    first = json.loads((tmp_path / "o" / "results.json").read_text())["tasks"]["c-knn"]
    assert main(base + ["--limit", "8"] + COMMON) == 0
    second = json.loads((tmp_path / "o" / "results.json").read_text())["tasks"]["c-knn"]
    assert (first["result"]["test_images"], second["result"]["test_images"]) == (6, 8)
    assert first["result"]["rows"][0]["n_train"] == 6 and first["key"] != second["key"]


def test_limit_and_holdout_make_subset_shards_of_the_first_samples(shared_data, tmp_path):
    suite = load_suite(SUITE, str(shared_data))
    splits = task_splits(suite.datasets["coco128"], 5, tmp_path)
    with tarfile.open(splits["train"]) as tar:
        train_keys = sorted({m.name.split(".")[0] for m in tar.getmembers()})
        assert {m.name.split(".", 1)[1] for m in tar.getmembers()} >= {"jpg", "json", "seg.png"}
    with tarfile.open(shared_data / "coco128" / "coco128-train-000.tar") as tar:
        keys = list(dict.fromkeys(m.name.split(".")[0] for m in tar.getmembers()))
    with tarfile.open(splits["test"]) as tar:
        test_keys = list(dict.fromkeys(m.name.split(".")[0] for m in tar.getmembers()))
    assert train_keys == sorted(keys[:5]) and test_keys == keys[100:105]
    assert splits["classes"].endswith("coco128/classes.json")
    assert task_splits(suite.datasets["flickr8k"], None, tmp_path)["test"] == suite.datasets["flickr8k"].test


def test_options_are_the_subcommand_flags():
    assert option_argv({"epochs": 3, "no_knn": True, "raw_features": False, "lrs": [0.01, 0.1]}) == [
        "--epochs", "3", "--no-knn", "--lrs", "0.01,0.1"]


BAD = {
    "unknown kind": ("tasks:\n  - {kind: segmentation, dataset: c}\n", "unknown kind 'segmentation'; valid kinds"),
    "undeclared dataset": ("tasks:\n  - {kind: knn, dataset: imagenet}\n", "unknown dataset 'imagenet'"),
    "missing split": ("tasks:\n  - {kind: knn, dataset: t}\n", "needs the train split of dataset t"),
    "unknown option": ("tasks:\n  - {kind: knn, dataset: c, options: {neighbours: 3}}\n",
                       "task c-knn: options: unrecognized arguments: --neighbours 3"),
    "reserved option": ("tasks:\n  - {kind: knn, dataset: c, options: {test: x.tar}}\n", "options may not set test"),
    "unknown key": ("tasks:\n  - {kind: knn, dataset: c, epochs: 3}\n", "unknown key(s) epochs"),
}
DATASETS = ("datasets:\n  c: {train: cifar10/cifar10-train-000.tar, test: cifar10/cifar10-test-000.tar}\n"
            "  t: {test: cifar10/cifar10-test-000.tar}\n")


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_suite_file_is_a_one_line_error(case, shared_data, tmp_path, capsys):
    body, message = BAD[case]
    (tmp_path / "bad.yaml").write_text(DATASETS + body)
    argv = ["eval", "random:vit_tiny_patch16_224", "--suite", str(tmp_path / "bad.yaml"), "-o", str(tmp_path / "o"),
            "--data-root", str(shared_data), *COMMON]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("catlip eval: error: ") and "\n" not in err and message in err, err
    assert not (tmp_path / "o").exists()  # nothing ran


def test_a_dataset_whose_files_are_missing_is_named_before_anything_runs(tmp_path, capsys):
    argv = ["eval", "random:vit_tiny_patch16_224", "--suite", SUITE, "-o", str(tmp_path / "o"),
            "--data-root", str(tmp_path / "nowhere"), *COMMON]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "dataset cifar10: train not found:" in err and "--data-root" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_an_unknown_suite_name_lists_the_shipped_ones(tmp_path, capsys):
    assert main(["eval", "random:vit_tiny_patch16_224", "--suite", "no_such_suite", "-o", str(tmp_path)]) == 2
    assert "shipped: shared_small" in capsys.readouterr().err


def test_limit_on_a_folder_dataset_is_refused_before_any_task_runs(tiny_run, tmp_path, capsys):
    """--limit cuts shards only; an image-folder dataset is named as such up front, not after the first tasks."""
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8), "red").save(tmp_path / "imgs" / cls / "a.png")
    suite = tmp_path / "folder.yaml"
    suite.write_text("datasets:\n  f: {train: imgs, test: imgs}\ntasks:\n  - {kind: knn, dataset: f}\n")
    argv = ["eval", tiny_run, "--suite", str(suite), "--limit", "1", "-o", str(tmp_path / "o"),
            "--data-root", str(tmp_path)]
    assert main(argv + COMMON) == 2
    out, err = capsys.readouterr()
    assert "running" not in out and not (tmp_path / "o" / "results.json").exists()
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "dataset f: --limit and holdout data" in errors[0] and "shards" in errors[0], err
