"""`catlip plan`: analytic sizes against real models, the collective model, the fits, and the command itself."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from catlip.plan import comm, fit, nccl_tests
from catlip.plan.arch import towers
from catlip.plan.cli import main
from catlip.errors import CliError
from catlip.plan.devices import Link, interpolate

ROOT = Path(__file__).resolve().parents[2]


def _plan(capsys, *argv) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("method", ["catlip", "clip"])
def test_analytic_parameters_match_the_built_tiny_models(method):
    from catlip.config import load_config
    from catlip.methods import build_method

    cfg = load_config(None, [f"method.name={method}", "model.backbone=vit_tiny_patch16_224", "model.image_size=224",
                             "data.context_length=77"])
    built = sum(p.numel() for p in build_method(cfg, 24320).parameters())
    analytic = sum(t.params for t in towers(method, "vit_tiny_patch16_224").values())
    assert abs(analytic - built) <= 2  # CLIP's logit scale (and SigLIP's bias) are the only scalars not counted


def test_analytic_flops_match_the_counted_flops_of_the_h100_run():
    rows = {r["method"]: r for r in json.loads((ROOT / "benchmarks/results/train_step_cuda.json").read_text())
            ["train_step"]}
    for method in ("catlip", "clip"):
        analytic = sum(t.train_flops for t in towers(method, "vit_base_patch16_224").values()) * 256 / 1e12
        assert analytic == pytest.approx(rows[method]["tflops_per_step"], rel=0.01)


def test_ring_collective_times():
    link = Link("x", 10.0, 5.0)  # 10 GB/s, 5 us per hop
    assert comm.all_reduce_s(1e9, 1, link) == 0.0
    assert comm.all_reduce_s(1e9, 4, link) == pytest.approx(2 * 3 / 4 * 0.1 + 6 * 5e-6)
    assert comm.all_gather_s(1e9, 4, link) == pytest.approx(3 / 4 * 0.1 + 3 * 5e-6)


def test_fit_link_recovers_bandwidth_and_latency_from_model_points():
    true = Link("true", 2.5, 40.0)
    points = [(kind, nbytes, n, (comm.all_reduce_s if kind == "all_reduce" else comm.all_gather_s)(nbytes, n, true))
              for kind in ("all_reduce", "all_gather") for nbytes in (2**16, 2**20, 2**24) for n in (2, 4)]
    got, host = comm.fit_link(points)
    assert got.gb_per_s == pytest.approx(2.5, rel=1e-6) and got.latency_us == pytest.approx(40.0, rel=1e-6)
    assert host is None


def test_bandwidth_by_message_size_interpolates_log_log_and_holds_its_ends():
    curve = ((2**20, 2.0), (2**24, 8.0))
    assert interpolate(curve, 2**20) == 2.0 and interpolate(curve, 2**24) == 8.0
    assert interpolate(curve, 2**22) == pytest.approx(4.0)  # halfway in log size: the geometric mean
    assert interpolate(curve, 1) == 2.0 and interpolate(curve, 2**30) == 8.0
    link = Link("x", 10.0, 5.0, curves=(("all_reduce", curve),))
    # a measured curve is read at the message size and already holds the latency; the other collective keeps
    # the link's own bandwidth and latency
    assert comm.all_reduce_s(2**26, 4, link, message=2**22) == pytest.approx(1.5 * 2**26 / 4e9)
    assert comm.all_gather_s(2**26, 4, link) == pytest.approx(0.75 * 2**26 / 10e9 + 3 * 5e-6)


def test_fit_link_by_size_recovers_each_collectives_curve_and_the_hosts_terms():
    true = Link("true", 0.0, 0.0, curves=(("all_gather", ((2**20, 1.0), (2**24, 4.0))),
                                          ("all_reduce", ((2**20, 3.0), (2**24, 2.0)))))
    host = comm.Host(cores=2, parallel=2.5, wait_us=70.0)  # 4 ranks share 2 cores; past 2, a hop waits 70 us
    points = [(kind, b, n, host.seconds(kind, b, n, true))
              for kind in ("all_reduce", "all_gather") for b in (2**20, 2**24) for n in (2, 4)]
    got, fitted = comm.fit_link(points, per_size=True, host=comm.Host(cores=2, parallel=2.5))
    assert fitted.wait_us == pytest.approx(70.0, rel=1e-6)
    for kind in ("all_reduce", "all_gather"):
        assert [b for b, _ in got.curve(kind)] == [2**20, 2**24]
        assert [g for _, g in got.curve(kind)] == pytest.approx([g for _, g in true.curve(kind)], rel=1e-6)
    plain, _ = comm.fit_link(points, per_size=True)  # the host left out is absorbed, wrongly, by the curves
    assert [g for _, g in plain.curve("all_reduce")] != pytest.approx([3.0, 2.0], rel=0.05)
    assert host.seconds("all_reduce", 2**20, 2, true) == comm.all_reduce_s(2**20, 2, true)  # 2 ranks: no term


NCCL_TESTS_LOG = """\
# nThread 1 nGpus 1 minBytes 1048576 maxBytes 67108864 step: 2(factor) warmup iters: 5 iters: 20
#
#                                                              out-of-place                       in-place
#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong
#        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)
     1048576        262144     float     sum      -1    60.00   17.48   30.58      0    61.00   17.19   30.08      0
     4194304       1048576     float     sum      -1    120.0   34.95   61.17      0    119.0   35.25   61.68      0
     4194304       1048576     float     sum      -1    125.0   33.55   58.71      0    124.0   33.83   59.20      0
    67108864      16777216     float     sum      -1   1000.0   67.11  117.44      0   1001.0   67.04  117.33      0
# Out of bounds values : 0 OK
# Avg bus bandwidth    : 66.5
"""


def nccl_log(kind: str, ranks: int, busbw: dict[int, float]) -> str:
    """An nccl-tests log of ``kind`` on ``ranks`` GPUs with these bus bandwidths (GB/s) by size (bytes), its
    times and algorithm bandwidths derived as nccl-tests does."""
    factor = 2 * (ranks - 1) / ranks if kind == "all_reduce" else (ranks - 1) / ranks
    rows = []
    for size, bus in busbw.items():
        alg = bus / factor
        count = size // 4 if kind == "all_reduce" else size // 4 // ranks
        redop = "sum" if kind == "all_reduce" else "none"
        t = size / alg / 1e3  # microseconds
        rows.append(f"{size:12d} {count:13d}     float {redop:>7s}      -1 {t:8.2f} {alg:7.2f} {bus:7.2f}      0 "
                    f"{t:8.2f} {alg:7.2f} {bus:7.2f}      0")
    head = NCCL_TESTS_LOG.splitlines()[:5]
    return "\n".join(head + rows + ["# Avg bus bandwidth    : 1.0", ""])


RANK_LINES = "".join(f"#  Rank {r:2d} Group  0 Pid {100 + r} on node{r // 8} device {r % 8} [0x1b] NVIDIA H100\n"
                     for r in range(16))


def test_an_nccl_tests_log_gives_the_out_of_place_bus_bandwidth_by_size_and_its_ranks(tmp_path):
    log = tmp_path / "all_reduce_perf.txt"
    log.write_text(NCCL_TESTS_LOG)
    got = nccl_tests.read(log)
    assert [size for size, _ in got.curve] == [2**20, 2**22, 2**26]
    assert [gb for _, gb in got.curve] == pytest.approx([30.58, (61.17 + 58.71) / 2, 117.44])
    assert got.ranks == 8  # busbw / algbw = 117.44 / 67.11 = 1.75 = 2(N-1)/N
    log.write_text(RANK_LINES + NCCL_TESTS_LOG)
    assert nccl_tests.read(log).ranks == 16  # the rank lines, when the log has them
    # srun --label prefixes every line with its rank; newer nccl-tests print the header without "#"
    lines = NCCL_TESTS_LOG.splitlines()
    lines.insert(6, "gpu3:3408:3411 [1] NCCL INFO Channel 00/02 : 0 1")
    log.write_text("\n".join(f"0: {line}" for line in lines))
    assert nccl_tests.read(log) == got
    log.write_text(NCCL_TESTS_LOG.replace("#       size", "        size"))
    assert nccl_tests.read(log) == got


@pytest.mark.parametrize("kind, ranks, read", [
    ("all_reduce", 3, 3), ("all_reduce", 16, 16), ("all_reduce", 256, None),  # 2 decimals cannot tell 256 apart
    ("all_gather", 3, 3), ("all_gather", 256, 256),  # size / (count x 4 bytes), exact
])
def test_a_log_without_rank_lines_tells_its_ranks_only_where_its_numbers_do(tmp_path, kind, ranks, read):
    log = tmp_path / "perf.txt"
    log.write_text(nccl_log(kind, ranks, {2**20: 10.0, 2**30: 44.37}))
    assert nccl_tests.read(log, kind).ranks == read


@pytest.mark.parametrize("edit, kind, message", [
    (lambda t: t.replace("117.44      0   1001.0   67.04  117.33      0", "11"), "all_reduce", "line 9: a row with 8"),
    (lambda t: t, "all_gather", "line 6: reduction 'sum'"),
    (lambda t: t.replace(" sum ", " none"), "all_reduce", "reduction 'none'"),
    (lambda t: t.replace("   60.00   17.48   30.58", "   60.00   17.48   3O.58"), "all_reduce", "busbw '3O.58'"),
    (lambda t: t.replace("   60.00   17.48   30.58", "   60.00   17.48     inf"), "all_reduce", "busbw 'inf'"),
    (lambda t: t.replace("   60.00   17.48   30.58", "   60.00   17.48  -30.58"), "all_reduce", "busbw '-30.58'"),
    (lambda t: t.replace("     4194304       1048576", "    4,194,304      1048576"), "all_reduce", "'4,194,304'"),
    (lambda t: t.replace("sum      -1", "sum       0"), "all_reduce", "root 0, a rooted collective"),
    (lambda t: t.replace("117.44      0   1001", " 58.72      0   1001"), "all_reduce", "busbw / algbw = 0.875"),
    (lambda t: RANK_LINES + t + RANK_LINES[:RANK_LINES.index("Rank  8") - 3] + t, "all_reduce",
     "runs on 8 and 16 ranks"),
])
def test_a_damaged_or_mismatched_nccl_tests_log_is_refused_with_its_line(tmp_path, edit, kind, message):
    log = tmp_path / "perf.txt"
    log.write_text(edit(NCCL_TESTS_LOG))
    with pytest.raises(CliError, match=message):
        nccl_tests.read(log, kind)


def test_plan_reads_the_nccl_tests_bandwidth_at_each_message_size(tmp_path, capsys):
    flat = tmp_path / "flat.txt"
    flat.write_text(nccl_log("all_reduce", 8, {2**20: 117.44, 2**22: 117.44, 2**26: 117.44}))
    same = _plan(capsys, "--gpus", "256", "--nccl-tests", str(flat))
    flat_link = _plan(capsys, "--gpus", "256", "--bandwidth-gbs", "117.44", "--latency-us", "0")["plans"]
    assert [p["terms_s"] for p in same["plans"]] == [pytest.approx(p["terms_s"], rel=1e-12) for p in flat_link]
    assert same["nccl_tests"]["all_reduce"] == {"path": str(flat), "ranks": 8}
    log = tmp_path / "curve.txt"
    log.write_text(NCCL_TESTS_LOG)
    curve = nccl_tests.read(log).curve
    grads = sum(t.params for t in towers("clip", "vit_base_patch16_224").values()) * 4
    for bucket in (25.0, 2.0):
        out = _plan(capsys, "--gpus", "256", "--nccl-tests", str(log), "--bucket-mib", str(bucket))
        clip = next(r for r in out["plans"] if r["method"] == "clip")
        gb = interpolate(curve, bucket * 2**20)
        assert clip["links"]["all_reduce"] == {"link": "nccl-tests", "message_mib": bucket, "gb_per_s": gb,
                                               "latency_us": None}
        assert clip["terms_s"]["all_reduce"] == pytest.approx(2 * 255 / 256 * grads / (gb * 1e9))
        embed = 65536 * 512 * 4  # one tower's embeddings: the gather's message, past the log's end (117.44)
        assert clip["terms_s"]["all_gather"] == pytest.approx(2 * 255 / 256 * 2 * embed / 117.44e9)
    gather = tmp_path / "gather.txt"
    gather.write_text(nccl_log("all_gather", 8, {2**20: 20.0, 2**26: 50.0}))
    out = _plan(capsys, "--gpus", "256", "--nccl-tests", str(log), "--nccl-tests-gather", str(gather))
    clip = next(r for r in out["plans"] if r["method"] == "clip")
    assert clip["terms_s"]["all_gather"] == pytest.approx(2 * 255 / 256 * 2 * embed / 50e9)
    assert main(["--gpus", "64", "--nccl-tests", str(log)]) == 0  # the text names the log and its rank count
    out = capsys.readouterr().out
    assert f"note: {log} was measured on 8 ranks" in out
    assert f"note: {log} measured a ring inside one node; the 64-GPU plans run over the other link" in out
    assert main(["--gpus", "8", "--global-batch", "4096", "--nccl-tests", str(log)]) == 0
    assert "note:" not in capsys.readouterr().out  # planned on the log's own 8 ranks


def _row(method, batch, fixed, per_sample):
    step = fixed + per_sample * batch
    return {"method": method, "batch": batch, "step_s": step, "peak_mem_mb": 1000 + 10 * batch,
            "parts_s": {"image": 0.6 * per_sample * batch, "loss": 0.1 * per_sample * batch + 0.01}}


def test_fit_split_predicts_a_held_out_batch_and_splits_the_parts():
    rows = [_row("catlip", b, 0.3, 0.05) for b in (4, 8, 16, 24)]
    result = fit.fit_split(rows, [4, 8, 16], 24)
    f = result["fit"]["catlip"]
    assert f["image"]["per_sample_s"] == pytest.approx(0.03) and f["loss"]["fixed_s"] == pytest.approx(0.01)
    assert f["other"]["fixed_s"] == pytest.approx(0.29) and f["memory"]["per_sample_mb"] == pytest.approx(10)
    assert result["held_out"]["catlip"]["predicted_s"] == pytest.approx(0.3 + 0.05 * 24, abs=1e-4)
    with pytest.raises(ValueError):
        fit.linear_fit([4, 4], [1.0, 2.0])


def test_plan_on_a_tiny_backbone(capsys):
    out = _plan(capsys, "--backbone", "vit_tiny_patch16_224", "--global-batch", "64", "--gpus", "1,2,8",
                "--gpu", "a100-80gb", "--samples", "6400")
    plans = {(p["method"], p["gpus"]): p for p in out["plans"]}
    assert set(plans) == {(m, n) for m in ("catlip", "clip") for n in (1, 2, 8)}
    one, eight = plans[("clip", 1)], plans[("clip", 8)]
    assert one["per_gpu_batch"] == 64 and eight["per_gpu_batch"] == 8 and one["steps_per_epoch"] == 100
    assert one["terms_s"]["all_reduce"] == 0 and one["terms_s"]["all_gather"] == 0
    assert eight["terms_s"]["all_reduce"] > 0 and eight["terms_s"]["all_gather"] > 0
    assert plans[("catlip", 8)]["terms_s"]["all_gather"] == 0 and plans[("catlip", 8)]["terms_s"]["loss"] == 0
    for p in out["plans"]:
        assert p["gpu_hours"] == pytest.approx(p["steps_per_epoch"] * p["step_s"] * p["gpus"] / 3600)
        assert p["step_s"] == pytest.approx(sum(p["terms_s"].values()))
        assert p["dominant"] == max(p["terms_s"], key=p["terms_s"].get)
        assert 0 < p["per_gpu_batch"] <= p["max_batch"] < p["max_batch_ckpt"]
    # tiny compute is the ViT-B/16 H100 measurement scaled by the FLOP and peak ratios
    base = towers("catlip", "vit_base_patch16_224")["image"].train_flops
    tiny = towers("catlip", "vit_tiny_patch16_224")["image"].train_flops
    expected = 0.107 / 256 * 64 * tiny / base * 989 / 312
    assert plans[("catlip", 1)]["terms_s"]["compute"] == pytest.approx(expected)
    ratio = {r["gpus"]: r["gpu_hours_ratio"] for r in out["ratios"]}
    assert ratio[1] == pytest.approx(plans[("clip", 1)]["gpu_hours"] / plans[("catlip", 1)]["gpu_hours"])
    assert ratio[1] > 1  # CLIP's text tower costs more than CatLIP's head


def test_the_single_h100_point_reproduces_the_committed_measurement(capsys):
    out = _plan(capsys, "--gpu", "h100-80gb", "--gpus", "1", "--global-batch", "256")
    p = {r["method"]: r for r in out["plans"]}
    assert p["catlip"]["images_per_s_per_gpu"] / p["clip"]["images_per_s_per_gpu"] == pytest.approx(1.40, abs=0.005)
    assert p["catlip"]["memory_gib"] / p["clip"]["memory_gib"] == pytest.approx(0.81, abs=0.005)


def test_table_6b_configurations_fit_and_checkpointing_is_costed(capsys):
    out = _plan(capsys)  # the defaults are the paper's: ViT-B/16, 65,536, 64 and 256 A100-80GB, 1.3e9
    p = {(r["method"], r["gpus"]): r for r in out["plans"]}
    assert not p[("catlip", 64)]["grad_checkpointing"] and p[("catlip", 64)]["max_batch"] >= 1024
    assert p[("clip", 64)]["grad_checkpointing"]  # 1,024 CLIP images need checkpointing on 80 GB
    assert p[("clip", 256)]["terms_s"]["loss"] > 0
    cheapest = next(r for r in out["ratios"] if "cheapest" in str(r["gpus"]))
    paired = next(r for r in out["ratios"] if "paired" in str(r["gpus"]))
    assert cheapest["gpu_hours_ratio"] == pytest.approx(p[("clip", 256)]["gpu_hours"] / p[("catlip", 64)]["gpu_hours"])
    assert paired["gpu_hours_ratio"] == cheapest["gpu_hours_ratio"]
    slow = _plan(capsys, "--bandwidth-gbs", "1.5")  # a slow network makes the all-reduce dominate
    assert next(r for r in slow["ratios"] if "cheapest" in str(r["gpus"]))["gpu_hours_ratio"] > cheapest[
        "gpu_hours_ratio"]
    assert {r["dominant"] for r in slow["plans"] if r["gpus"] == 256} == {"all_reduce"}
    whole = _plan(capsys, "--clip-logits", "global", "--gpus", "256")  # G x G logits on every rank
    assert whole["plans"][1]["terms_s"]["loss"] > 50 * p[("clip", 256)]["terms_s"]["loss"]


def test_a_split_calibration_on_its_own_device_gives_back_its_fit(tmp_path, capsys):
    rows = [_row("catlip", b, 0.3, 0.05) for b in (4, 8, 16, 24)]
    data = {"device": "CPU: test", "backbone": "vit_tiny_patch16_224", "held_out_batch": 24,
            **fit.fit_split(rows, [4, 8, 16], 24)}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(data))
    out = _plan(capsys, "--measured", str(path), "--gpu", "measured", "--methods", "catlip", "--gpus", "1",
                "--global-batch", "24", "--backbone", "vit_tiny_patch16_224")
    assert out["plans"][0]["step_s"] == pytest.approx(fit.predict_step(data["fit"]["catlip"], 24))


@pytest.mark.parametrize("argv, message", [
    (["--gpus", "0"], "GPU counts >= 1"),
    (["--gpu", "v100"], "unknown --gpu 'v100'"),
    (["--backbone", "resnet50"], "got 'resnet50'"),
    (["--gpus", "8"], "does not fit"),
    (["--gpus", "3"], "does not split evenly"),
    (["--methods", "catlip,superclass"], "catlip, clip and siglip"),
    (["--nccl-tests", "/nonexistent/all_reduce_perf.txt"], "cannot read the nccl-tests log"),
    (["--nccl-tests", str(ROOT / "pyproject.toml")], "holds no nccl-tests results"),
    (["--nccl-tests", str(Path(__file__).parent)], "cannot read the nccl-tests log"),
    (["--nccl-tests-gather", str(ROOT / "pyproject.toml")], "--nccl-tests-gather needs --nccl-tests"),
    (["--nccl-tests", ""], "got an empty one"),
    (["--bucket-mib", "0"], "--bucket-mib must be a finite number > 0"),
    (["--bucket-mib", "nan"], "--bucket-mib must be a finite number > 0"),
    (["--samples", "1e400"], "--samples must be a finite number > 0, got inf"),
    (["--samples", "1e300"], "--samples must be at most"),
    (["--latency-us", "-1"], "--latency-us must be a finite number >= 0"),
    (["--gpus", "4"], "use at least 16 GPUs"),  # 65536 / 5912 per GPU needs 12, which does not split 65536
    (["--memory-gib", "1e-9"], "not one image per GPU fits, even with gradient checkpointing"),
    (["--global-batch", "99999999999999999999"], "--global-batch must be between 1 and 2,147,483,648"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("catlip plan: error: ") and message in err and "\n" not in err


@pytest.mark.parametrize("extra", [["--bandwidth-gbs", "5"], ["--latency-us", "3"], ["--link", "ib-ndr"]])
def test_a_link_given_twice_is_one_line_and_exit_2(tmp_path, capsys, extra):
    log = tmp_path / "all_reduce_perf.txt"
    log.write_text(NCCL_TESTS_LOG)
    assert main(["--nccl-tests", str(log), *extra]) == 2
    assert f"leave out {extra[0]}" in capsys.readouterr().err


def test_the_gpu_count_advised_splits_the_batch():
    from catlip.plan.costs import smallest_divisor_from

    assert smallest_divisor_from(65536, 12) == 16 and smallest_divisor_from(65536, 16) == 16
    assert smallest_divisor_from(1_000_000_007, 2) == 1_000_000_007  # a prime: one image per GPU
    assert smallest_divisor_from(2**31, 3) == 4


def test_registering_the_command_imports_no_torch():
    code = ("import argparse, sys; from catlip.plan.cli import add_parser; p = argparse.ArgumentParser(); "
            "add_parser(p.add_subparsers()); p.parse_args(['plan']); assert 'torch' not in sys.modules, 'torch'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_gpu_hours_scale_with_samples(capsys):
    a = _plan(capsys, "--samples", "1.3e9")["plans"][0]
    b = _plan(capsys, "--samples", "2.6e9")["plans"][0]
    assert b["gpu_hours"] / a["gpu_hours"] == pytest.approx(math.ceil(2.6e9 / 65536) / math.ceil(1.3e9 / 65536))


def test_the_committed_gloo_timings_refit_to_their_summary(tmp_path):
    """benchmarks/comm.py's analysis, rerun on its own committed measurements, gives the numbers docs/scaling.md
    quotes, and keeps what the measurement recorded about the machine."""
    committed = ROOT / "benchmarks/results/comm_gloo_cpu.json"
    out = tmp_path / "refit.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/comm.py"), "--from", str(committed),
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    old, new = json.loads(committed.read_text()), json.loads(out.read_text())
    for model in ("one_bandwidth", "bandwidth_by_size", "all_reduce_curve_for_both", "between_sizes"):
        assert new[model]["summary"] == pytest.approx(old[model]["summary"])
    assert {r["world"] for r in new["bandwidth_by_size"]["rows"] if r["held_out"]} == {3}
    assert new["bandwidth_by_size"]["summary"]["held_out_points"] == 16
    assert new["load_average_at_start"] == old["load_average_at_start"] and new["refit_of"] == str(committed)
