"""PNG plots of the report (matplotlib, Agg backend). An empty series draws the axes with a "no data" note."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

_DPI = 90


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, fontsize=16, color="gray")


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path.name


def _curve(points: list, path: Path, plot: str, xlabel: str, ylabel: str, title: str, **style) -> str:
    """One log-axis line (``plot``: the Axes method, loglog or semilogx) of (x, y) points, or the no-data panel."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    if points and points[-1][1] > 0:
        xs, ys = zip(*points)
        getattr(ax, plot)(xs, ys, **style)
    else:
        _no_data(ax)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def plot_long_tail(rank_counts: list, path: Path) -> str:
    return _curve(rank_counts, path, "loglog", "synset rank", "captions containing the synset",
                  "Synset frequency (long tail)", marker=".", lw=1)


def plot_growth(points: list, path: Path) -> str:
    return _curve(points, path, "semilogx", "captions seen", "unique synsets", "Unique synsets vs captions seen",
                  marker="o", ms=3)


def plot_vtau(rows: list, path: Path) -> str:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    useful = [r for r in rows if r["vocab_size"] > 0]
    if useful:
        taus = [r["tau"] for r in rows]
        left.semilogx(taus, [100 * r["share_kept"] for r in rows], marker="o", ms=3)
        right.loglog([r["tau"] for r in useful], [r["vocab_size"] for r in useful], marker="o", ms=3)
    else:
        _no_data(left)
        _no_data(right)
    left.set(xlabel="V_tau (keep synsets with count >= V_tau)", ylabel="label occurrences kept (%)",
             title="Occurrences kept vs V_tau", ylim=(0, 105))
    right.set(xlabel="V_tau", ylabel="vocabulary size", title="Vocabulary size vs V_tau")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def plot_coverage(sets: list, path: Path) -> str:
    """Grouped bars: share of each target set matched at each similarity threshold alpha (Fig. 2b)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    if sets and any(s["coverage"] for s in sets):
        alphas = [row["alpha"] for row in sets[0]["coverage"]]
        width = 0.8 / len(sets)
        for j, s in enumerate(sets):
            xs = [i + (j - (len(sets) - 1) / 2) * width for i in range(len(alphas))]
            bars = ax.bar(xs, [100 * r["share"] for r in s["coverage"]], width, label=s["name"])
            ax.bar_label(bars, labels=[str(r["matched"]) for r in s["coverage"]], fontsize=7)
        ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
        ax.legend(fontsize=8)
        if not any(r["matched"] for s in sets for r in s["coverage"]):
            ax.text(0.5, 0.5, "no target class matched", ha="center", va="center", transform=ax.transAxes,
                    fontsize=14, color="gray")
    else:
        _no_data(ax)
    ax.set(xlabel="path-similarity threshold alpha", ylabel="target classes matched (%)",
           title="Target labels found in the corpus", ylim=(0, 110))
    return _save(fig, path)


def plot_samples_per_target(name: str, exact: list, loose: list, loose_alpha: float, path: Path) -> str:
    """Samples of the best-matching corpus synset of every matched target, sorted (Fig. 2c)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    if exact or loose:
        if loose:
            ax.semilogy(range(1, len(loose) + 1), loose, label=f"alpha >= {loose_alpha:g}")
        if exact:
            ax.semilogy(range(1, len(exact) + 1), exact, label="exact (alpha = 1)")
        ax.legend(fontsize=8)
    else:
        _no_data(ax)
    ax.set(xlabel="matched target classes (sorted)", ylabel="samples of the matched synset",
           title=f"Samples per matched {name} class")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)
