"""Tables and plots of benchmarks/small_study.py, from its result JSON alone.

    .venv/bin/python benchmarks/small_study_report.py benchmarks/results/small_study.json [--plots DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

COLORS = {"catlip": "tab:red", "superclass": "tab:green", "clip": "tab:blue", "superclip": "tab:purple",
          "random": "gray"}
TITLES = {"catlip": "CatLIP", "superclass": "SuperClass", "clip": "CLIP", "superclip": "SuperCLIP"}
METRICS = {  # name -> (path in a run's eval, label)
    "cifar": (("cifar10", "top1"), "CIFAR-10 probe top-1 (%)"),
    "map": (("flickr_multilabel", "mAP"), "Flickr8k multi-label probe mAP (%)"),
    "i2t": (("retrieval", "i2t_R@1"), "Flickr8k image→text R@1 (%)"),
    "t2i": (("retrieval", "t2i_R@1"), "Flickr8k text→image R@1 (%)"),
    "i2t5": (("retrieval", "i2t_R@5"), "image→text R@5 (%)"),
    "t2i5": (("retrieval", "t2i_R@5"), "text→image R@5 (%)"),
}


def value(ev: dict, metric: str) -> float | None:
    node = ev
    for key in METRICS[metric][0]:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) * 100


def stats(xs: list[float]) -> tuple[float, float, int]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0), len(xs)


def points(result: dict, method: str, metric: str) -> list[dict]:
    """One point per epoch budget: mean, std and seed count of ``metric`` over the runs that did not diverge."""
    out = []
    for e in sorted({r["epochs"] for r in result["runs"] if r["method"] == method}):
        runs = [r for r in result["runs"] if r["method"] == method and r["epochs"] == e]
        vals = [v for r in runs if not r["diverged"] and (v := value(r["eval"], metric)) is not None]
        wall = statistics.mean(r["wall_s_estimated"] for r in runs)
        if vals:
            mean, std, n = stats(vals)
            out.append({"epochs": e, "wall_s": wall, "mean": mean, "std": std, "n": n,
                        "diverged": sum(r["diverged"] for r in runs)})
        else:
            out.append({"epochs": e, "wall_s": wall, "mean": None, "std": None, "n": 0, "diverged": len(runs)})
    return out


def cell(p: dict) -> str:
    if p["mean"] is None:
        return "diverged"
    text = f"{p['mean']:.1f} ± {p['std']:.1f}" if p["n"] > 1 else f"{p['mean']:.1f}"
    return text + (f" ({p['diverged']} diverged)" if p["diverged"] else "")


# ---------------------------------------------------------------- markdown


def markdown(result: dict) -> str:
    floor = result.get("random_init", {})
    lines = [f"# Small-scale study ({result['env'].get('device', 'cpu')})", "",
             f"Command: `{result['command']}`; commit {result['env']['git_commit'][:7]}; {result['lr_rule']}.", ""]
    lines += _timing_table(result) + [""] + _main_table(result, floor) + [""] + _retrieval_table(result, floor)
    for method, study in result.get("transfer", {}).items():
        lines += [""] + (_transfer_tables(method, study) if not study.get("diverged")
                         else [f"Transfer Init, {TITLES[method]}: its run {study['run']} diverged (NaN loss)."])
    return "\n".join(lines) + "\n"


def _timing_table(result: dict) -> list[str]:
    rows = ["| method | s/step | images/s | load before |", "|---|---|---|---|"]
    for m in result["methods"]:
        t = result["timing"][m]
        rows.append(f"| {TITLES[m]} | {t['step_time_s']:.3f} | {t['images_per_s']:.0f} | "
                    f"{t['load_avg_before'][0]:.2f} |")
    return ["Step times (measured first, data loading included):", ""] + rows


def final_loss(result: dict, method: str, epochs: float) -> str:
    """Mean over seeds of the mean loss of the last tenth of the logged steps, with the prior-only level."""
    tails = []
    for r in result["runs"]:
        if r["method"] == method and r["epochs"] == epochs and not r["diverged"]:
            curve = [loss for _, loss in r["loss_curve"]]
            tail = curve[-max(1, len(curve) // 10):]
            tails.append(sum(tail) / len(tail))
    prior = result.get("prior_only_loss", {}).get(method)
    text = f"{statistics.mean(tails):.2f}" if tails else "–"
    return text + (f" ({prior:.2f})" if prior is not None else "")


def floor_of(result: dict, method: str) -> dict:
    """The random-init evaluation on the features ``method`` is probed on (CLS vs LayerNorm(mean token))."""
    run = next((r for r in result["runs"] if r["method"] == method and "features" in r.get("eval", {})), None)
    if run is not None and run["eval"]["features"] == "mean_token" and "random_init_mean_token" in result:
        return result["random_init_mean_token"]
    return result.get("random_init", {})


def _main_table(result: dict, floor: dict) -> list[str]:
    rows = ["| method | epochs | seeds | est. wall (s) | final loss (prior-only) | CIFAR-10 probe (%) | Δ floor | "
            "Flickr8k mAP | Δ floor |", "|---|---|---|---|---|---|---|---|---|"]
    for key, label in (("random_init", "random init, pooled (CLS) features"),
                       ("random_init_mean_token", "random init, LayerNorm(mean token) features")):
        if value(result.get(key, {}), "cifar") is not None:
            rows.append(f"| {label} | – | – | – | – | {value(result[key], 'cifar'):.1f} | – | "
                        f"{value(result[key], 'map'):.1f} | – |")
    for m in result["methods"]:
        own = floor_of(result, m)
        f_cifar, f_map = value(own, "cifar"), value(own, "map")
        for pc, pm in zip(points(result, m, "cifar"), points(result, m, "map")):
            dc = f"{pc['mean'] - f_cifar:+.1f}" if pc["mean"] is not None and f_cifar is not None else "–"
            dm = f"{pm['mean'] - f_map:+.1f}" if pm["mean"] is not None and f_map is not None else "–"
            rows.append(f"| {TITLES[m]} | {pc['epochs']:g} | {pc['n']} | {pc['wall_s']:.0f} | "
                        f"{final_loss(result, m, pc['epochs'])} | {cell(pc)} | {dc} | {cell(pm)} | {dm} |")
    return rows + ["", "Δ floor: against the random-init backbone probed on the same features as the method "
                   "(CatLIP, CLIP: the pooled CLS embedding; SuperClass, SuperCLIP: LayerNorm of the mean patch "
                   "token, which their heads read)."]


def _retrieval_table(result: dict, floor: dict) -> list[str]:
    largest = max(r["epochs"] for r in result["runs"])
    rows = [f"Flickr8k test caption retrieval at {largest:g} epochs (mean ± std over seeds):", "",
            "| method | mode | image→text R@1 | R@5 | text→image R@1 | R@5 |", "|---|---|---|---|---|---|"]
    if floor.get("retrieval"):
        rows.append(f"| random init | {floor['retrieval']['mode']} | " + " | ".join(
            f"{value(floor, k):.1f}" for k in ("i2t", "i2t5", "t2i", "t2i5")) + " |")
    for m in result["methods"]:
        runs = [r for r in result["runs"] if r["method"] == m and r["epochs"] == largest and not r["diverged"]]
        if not runs:
            continue
        mode = runs[0]["eval"]["retrieval"]["mode"]
        cells = []
        for k in ("i2t", "i2t5", "t2i", "t2i5"):
            mean, std, n = stats([value(r["eval"], k) for r in runs])
            cells.append(f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f}")
        rows.append(f"| {TITLES[m]} | {mode} | " + " | ".join(cells) + " |")
    return rows


def _transfer_tables(method: str, study: dict) -> list[str]:
    out = []
    for task, label, metric in (("objects", "Flickr8k single-label objects", "balanced"),
                                ("cifar10", "CIFAR-10", "top1")):
        t = study[task]
        zs = t["head_zero_shot"]["top1"] * 100
        out += [f"Random vs Transfer Init, {TITLES[method]} ({study['run']}), {label}: {t['coverage_summary']}; head "
                f"zero-shot top-1 {zs:.1f}%. Probe {'mean per-class accuracy' if metric == 'balanced' else 'top-1'} (%):",
                "", "| probe data | n_train | random init | transfer init | seeds |",
                "|---|---|---|---|---|"]
        by = {(r["kind"], r["value"], r["init"]): r for r in t["summary"]}
        n = {("shots" if "shots" in r else "fraction", r.get("shots", r.get("fraction"))): r["n_train"]
             for r in t["rows"]}
        for kind, v in sorted({(k, v) for k, v, _ in by}, key=lambda x: (x[0] != "shots", x[1])):
            label_v = f"{v:g}-shot" if kind == "shots" else f"{v * 100:g} %"
            cells = [f"{by[kind, v, i][metric + '_mean'] * 100:.1f} ± {by[kind, v, i][metric + '_std'] * 100:.1f}"
                     for i in ("random", "transfer")]
            out.append(f"| {label_v} | {n[kind, v]} | {cells[0]} | {cells[1]} | {by[kind, v, 'random']['seeds']} |")
        out.append("")
    return out


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plots(result: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if result.get("runs"):
        plot_fig4(result, folder / "small_study_fig4.png")
    if result.get("transfer"):
        plot_fig5(result, folder / "small_study_fig5.png")


def plot_fig4(result: dict, out: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for row, metric in enumerate(("cifar", "map")):
        floors = [(value(result.get(k, {}), metric), style, label) for k, style, label in (
            ("random_init", "--", "random init (CLS)"), ("random_init_mean_token", ":", "random init (mean token)"))]
        for col, key in enumerate(("epochs", "wall_s")):
            ax = axes[row][col]
            for m in result["methods"]:
                pts = [p for p in points(result, m, metric) if p["mean"] is not None]
                ax.errorbar([p[key] for p in pts], [p["mean"] for p in pts], yerr=[p["std"] for p in pts],
                            fmt="o-", capsize=3, color=COLORS[m], label=TITLES[m])
            for floor, style, label in floors:
                if floor is not None:
                    ax.axhline(floor, ls=style, color=COLORS["random"], label=label)
            ax.set_xlabel("pre-training epochs (Flickr8k train)" if key == "epochs"
                          else "pre-training wall-clock (s, measured step time × steps)")
            ax.set_ylabel(METRICS[metric][1])
            ax.grid(alpha=0.3)
    axes[0][1].legend(fontsize=8)
    fig.suptitle(f"Small-scale Fig. 4 ({result['env'].get('device', 'cpu')}); error bars: std over pre-training seeds")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_fig5(result: dict, out: Path) -> None:
    plt = _pyplot()
    studies = {m: st for m, st in result["transfer"].items() if not st.get("diverged")}
    if not studies:
        return
    fig, axes = plt.subplots(len(studies), 2, figsize=(12, 3.8 * len(studies)), squeeze=False)
    for r, (method, study) in enumerate(studies.items()):
        for c, task in enumerate(("objects", "cifar10")):
            ax, summ = axes[r][c], study[task]["summary"]
            metric = "balanced" if task == "objects" else "top1"
            keys = sorted({(s["kind"], s["value"]) for s in summ}, key=lambda x: (x[0] != "shots", x[1]))
            for k, init in enumerate(("random", "transfer")):
                rows = {(s["kind"], s["value"]): s for s in summ if s["init"] == init}
                xs = [i + (k - 0.5) * 0.38 for i in range(len(keys))]
                ax.bar(xs, [rows[key][metric + "_mean"] * 100 for key in keys], 0.38,
                       yerr=[rows[key][metric + "_std"] * 100 for key in keys], capsize=3,
                       color="lightgray" if init == "random" else COLORS[method], label=f"{init} init")
            ax.set_xticks(range(len(keys)))
            ax.set_xticklabels([f"{v:g}-shot" if kd == "shots" else f"{v * 100:g}%" for kd, v in keys])
            ax.set_ylabel("mean per-class accuracy (%)" if metric == "balanced" else "top-1 (%)")
            ax.set_title(f"{TITLES[method]}: {'Flickr8k objects' if task == 'objects' else 'CIFAR-10'}")
            ax.grid(alpha=0.3, axis="y")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Re-make the tables and plots of a small_study result JSON.")
    ap.add_argument("result")
    ap.add_argument("--plots", help="folder for the PNGs (default: beside the JSON)")
    args = ap.parse_args(argv)
    result = json.loads(Path(args.result).read_text())
    Path(args.result).with_suffix(".md").write_text(markdown(result))
    plots(result, Path(args.plots) if args.plots else Path(args.result).with_suffix(""))


if __name__ == "__main__":
    main()
