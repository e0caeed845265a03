"""Fixed + per-sample fits of measured step parts (``benchmarks/train_step.py --split``); no torch needed."""

from __future__ import annotations

PARTS = ("image", "text", "loss", "other")  # "other": optimizer, clipping, zero-grad = step - the three parts


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ys on xs."""
    n = len(xs)
    if n < 2 or len(set(xs)) < 2:
        raise ValueError("a linear fit needs at least two distinct x values")
    mx, my = sum(xs) / n, sum(ys) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def part_times(row: dict) -> dict[str, float]:
    """The row's four parts in seconds; "other" is what the whole step spends beyond the measured parts."""
    parts = {p: row["parts_s"].get(p, 0.0) for p in PARTS[:3]}
    parts["other"] = row["step_s"] - sum(parts.values())
    return parts


def fit_method(rows: list[dict]) -> dict:
    """{part: {fixed_s, per_sample_s}, memory: {fixed_mb, per_sample_mb}} from one method's rows."""
    xs = [r["batch"] for r in rows]
    out = {}
    for part in PARTS:
        a, b = linear_fit(xs, [part_times(r)[part] for r in rows])
        out[part] = {"fixed_s": a, "per_sample_s": b}
    a, b = linear_fit(xs, [r["peak_mem_mb"] for r in rows])
    out["memory"] = {"fixed_mb": a, "per_sample_mb": b}
    return out


def predict_step(fit: dict, batch: float) -> float:
    """Step seconds at ``batch``: the sum of every part's fixed + per-sample term."""
    return sum(fit[p]["fixed_s"] + fit[p]["per_sample_s"] * batch for p in PARTS)


def fit_split(rows: list[dict], fit_batches: list[int], held_out: int) -> dict:
    """Per method: the fit on ``fit_batches`` and the held-out batch's measured vs predicted step time."""
    fits, checks = {}, {}
    good = [r for r in rows if "error" not in r]
    for method in dict.fromkeys(r["method"] for r in good):
        mine = [r for r in good if r["method"] == method]
        fits[method] = fit_method([r for r in mine if r["batch"] in fit_batches])
        test = next((r for r in mine if r["batch"] == held_out), None)
        if test is not None:
            pred = predict_step(fits[method], held_out)
            checks[method] = {"batch": held_out, "measured_s": test["step_s"], "predicted_s": round(pred, 4),
                              "error": round(pred / test["step_s"] - 1, 4)}
    return {"fit": fits, "held_out": checks}
