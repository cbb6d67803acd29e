"""Plots of results: probe accuracies, the experiment grid and one group of it against references, accuracy
against training compute, and accuracy against the strength of label-irrelevant detail."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

PROBE_NAMES = {"linear_probe": "linear probe", "knn": "k-NN", "low_shot": "1% low-shot"}


def plot_probe_bars(
    results: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = ("linear_probe", "knn", "low_shot"),
    *,
    chance: float | None = None,
    title: str | None = None,
    errors: Mapping[str, Mapping[str, float]] | None = None,
) -> Figure:
    """Grouped bars of probe accuracies (%): results = {encoder: {metric: value}}, one group per metric,
    the legend to the right; `errors` (same layout, e.g. std over seeds) draws error bars."""
    names = list(results)
    if not names:
        raise ValueError("results is empty; pass {encoder name: {metric: accuracy}}")
    width = 0.8 / len(names)
    x = np.arange(len(metrics))
    fig, ax = plt.subplots(figsize=(1.9 * len(metrics) + 3.4, 3.2))
    for k, name in enumerate(names):
        vals = [float(results[name].get(m, np.nan)) for m in metrics]
        err = [float(errors.get(name, {}).get(m, 0.0)) for m in metrics] if errors else None
        bars = ax.bar(x + (k - (len(names) - 1) / 2) * width, vals, width, label=name, yerr=err, capsize=2)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in vals], fontsize=7, padding=2)
    if chance is not None:
        ax.axhline(chance, color="black", ls=":", lw=1, label="chance")
    ax.set_xticks(x, [PROBE_NAMES.get(m, m) for m in metrics])
    ax.set_ylabel("accuracy (%)")
    top = max(float(results[n].get(m, 0) or 0) for n in names for m in metrics)
    ax.set_ylim(0, min(100, top * 1.1 + 3))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_experiment_summary(summary: Mapping[str, Sequence[Mapping]], metric: str = "linear_probe") -> Figure:
    """One panel per experiment group: horizontal bars of `metric` (mean, std over seeds as error bars) for
    each row of `summary` (the format of `jepa_lite.lab.tables.summarize`); rows not run are left empty."""
    groups = [g for g, rows in summary.items() if rows]
    if not groups:
        raise ValueError("summary has no groups with rows")
    n_cols = min(4, len(groups))
    n_rows = math.ceil(len(groups) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 2.6 * n_rows), squeeze=False)
    for ax, g in zip(axes.flat, groups, strict=False):
        rows = list(summary[g])[::-1]  # first row on top
        means = [r[metric]["mean"] if metric in r else np.nan for r in rows]
        stds = [r[metric]["std"] if metric in r else 0.0 for r in rows]
        y = np.arange(len(rows))
        ax.barh(y, np.nan_to_num(means), xerr=stds, color="tab:blue", alpha=0.8, capsize=2)
        finite = [m for m in means if not math.isnan(m)]
        lo = max(0.0, min(finite) - 10) if finite else 0.0
        ax.set_xlim(lo, max(finite) + 6 if finite else 100)
        for yi, m, sd in zip(y, means, stds, strict=True):
            ax.text(
                lo if math.isnan(m) else m + sd,
                yi,
                " not run" if math.isnan(m) else f"  {m:.1f}",
                va="center",
                fontsize=7,
                color="0.5" if math.isnan(m) else "black",
            )
        ax.set_yticks(y, [r["name"] for r in rows], fontsize=7)
        ax.set_title(g.replace("_", " "), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    fig.supxlabel(f"{PROBE_NAMES.get(metric, metric)} (%)", fontsize=9)
    fig.tight_layout()
    return fig


def spread_labels(values: Sequence[float], gap: float) -> list[float]:
    """Heights for text labels at `values` (same order), at least `gap` apart: labels that would overlap are
    pushed apart around their mean height; labels already `gap` apart stay where they are."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    heights = [float(values[i]) for i in order]
    for _ in range(len(heights)):  # a recentred cluster may reach the next one: merge them on the next pass
        start = 0
        for i in range(1, len(heights) + 1):  # each run of labels closer than `gap` ...
            if i == len(heights) or heights[i] - heights[i - 1] >= gap * (1 - 1e-9):
                run = heights[start:i]
                first = sum(run) / len(run) - gap * (len(run) - 1) / 2  # ... centred on its mean height
                heights[start:i] = [first + gap * k for k in range(len(run))]
                start = i
    out = [0.0] * len(values)
    for i, h in zip(order, heights, strict=True):
        out[i] = h
    return out


X_LABELS = {"train_minutes": "training time (minutes)", "epochs": "epochs of pretraining"}


def plot_accuracy_vs_compute(
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    metrics: Sequence[str] = ("linear_probe", "knn"),
    *,
    baselines: Mapping[str, Mapping[str, float]] | None = None,
    title: str | None = None,
    x: str = "train_minutes",
) -> Figure:
    """Probe accuracy against training minutes: one line per entry of `curves` ({label: [{"train_minutes": t,
    metric: accuracy, ...}, ...]}, e.g. the snapshots of a course checkpoint's card), and a dashed horizontal
    line per entry of `baselines` ({label: {metric: accuracy}}, e.g. the random-init encoder). The
    course-scale version of the paper's Figure 1 (linear evaluation against pretraining GPU hours). `x` names
    the key of the horizontal axis: "train_minutes" or "epochs"."""
    if not curves:
        raise ValueError("curves is empty; pass {label: [{'train_minutes': t, metric: accuracy}, ...]}")
    if x not in X_LABELS:
        raise ValueError(f"x {x!r} is not one of {', '.join(X_LABELS)}")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        ends = []  # (x, y, colour) of each curve's last point, labelled with its value below
        for label, points in curves.items():
            xs = [p[x] for p in points]
            y = [p[metric] for p in points]
            (line,) = ax.plot(
                xs, y, marker="o" if len(xs) > 1 else "*", ms=5 if len(xs) > 1 else 11, label=label
            )
            ends.append((xs[-1], y[-1], line.get_color()))
        for k, (label, values) in enumerate((baselines or {}).items()):
            ax.axhline(values[metric], ls="--", lw=1, color=f"{0.25 + 0.25 * k:.2f}", label=label)
        low, high = ax.get_ylim()
        heights = spread_labels([y for _, y, _ in ends], gap=0.05 * (high - low))  # close values stay legible
        for (end_x, y, colour), height in zip(ends, heights, strict=True):
            ax.annotate(
                f"{y:.1f}",
                (end_x, y),
                xytext=(5, height),
                textcoords=("offset points", "data"),
                va="center",
                fontsize=7,
                color=colour,
            )
        ax.set_xlabel(X_LABELS[x])
        ax.set_ylabel(f"{PROBE_NAMES.get(metric, metric)} (%)")
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_nuisance(rows: Sequence[Mapping], metrics: Sequence[str] = ("linear_probe", "knn")) -> Figure:
    """Accuracy against the strength of label-irrelevant detail: one panel per metric and kind of detail
    ("noise", "stripes"), one line per method, error bars the std over seeds. `rows` are the `nuisance` group
    of results/summary.json, named "METHOD, clean" or "METHOD, KIND STRENGTH"; the clean row is strength 0
    of both kinds. Rows not run yet are left out (a method with none is not drawn)."""
    points: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for row in rows:
        method, setting = row["name"].rsplit(", ", 1)
        if not row.get("n"):
            continue
        kinds = ("noise", "stripes") if setting == "clean" else (setting.split()[0],)
        strength = 0.0 if setting == "clean" else float(setting.split()[1])
        for kind in kinds:
            for metric in metrics:
                stats = row[metric]
                points.setdefault((method, kind, metric), []).append((strength, stats["mean"], stats["std"]))
    if not points:
        raise ValueError("no nuisance row has been run yet: `python scripts/reproduce.py --groups nuisance`")
    methods = list(dict.fromkeys(m for m, _, _ in points))
    fig, axes = plt.subplots(len(metrics), 2, figsize=(8.4, 3.0 * len(metrics)), squeeze=False)
    for r, metric in enumerate(metrics):
        for c, kind in enumerate(("noise", "stripes")):
            ax = axes[r, c]
            for k, method in enumerate(methods):
                pts = sorted(points.get((method, kind, metric), []))
                if pts:
                    x, y, e = zip(*pts, strict=True)
                    ax.errorbar(x, y, yerr=e, marker="o", ms=4, capsize=2, color=f"C{k}", label=method)
            ax.set_title(
                f"{kind}: {'unpredictable' if kind == 'noise' else 'predictable'} detail", fontsize=9
            )
            ax.set_xlabel("strength (peak grey level of the detail, 0 = clean)", fontsize=8)
            ax.set_ylabel(f"{PROBE_NAMES.get(metric, metric)} (%)", fontsize=8)
            ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


VERDICT_COLORS = {"supported": "tab:green", "rejected": "tab:red", "within noise": "0.6"}


def plot_gap(
    bars: Mapping[str, Mapping[str, tuple[float, float]]],
    effects: Sequence[Mapping],
    metrics: Sequence[str] = ("linear_probe", "knn"),
) -> Figure:
    """Why one method leads another (notebook 06). Left: probe accuracy of the rows that split the gap, as
    `bars` = {row name: {metric: (mean, std)}} (I-JEPA, MAE at its steps, MAE at its CPU time). Right: each
    candidate cause's effect (`lab.gap.verdicts`: dicts with cause, metric, effect, noise, verdict) as a
    horizontal bar with its noise band, coloured by verdict."""
    if not bars:
        raise ValueError("bars is empty: no row of the decomposition has run yet")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 3.6), gridspec_kw={"width_ratios": [1, 1.5]})
    names = list(bars)
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        x = np.arange(len(metrics)) + (k - (len(names) - 1) / 2) * width
        means = [bars[name][m][0] for m in metrics]
        stds = [bars[name][m][1] for m in metrics]
        drawn = left.bar(x, means, width, yerr=stds, capsize=3, label=name)
        colour = drawn.patches[0].get_facecolor()
        for xi, mean in zip(x, means, strict=True):
            left.annotate(f"{mean:.1f}", (xi, mean), xytext=(0, 3), textcoords="offset points", ha="center",
                          va="bottom", fontsize=7, color=colour)  # fmt: skip
    lows = [bars[n][m][0] for n in names for m in metrics]
    left.set_ylim(min(lows) - 4, max(lows) + 4)
    left.set_xticks(np.arange(len(metrics)), [PROBE_NAMES.get(m, m) for m in metrics])
    left.set_ylabel("accuracy (%)")
    left.set_title("the gap, split: per step, then per unit of CPU time", fontsize=9)
    left.legend(fontsize=7, frameon=False, loc="upper left", ncol=len(names) if len(names) < 3 else 1)
    causes = list(dict.fromkeys(e["cause"] for e in effects))
    height = 0.8 / len(metrics)
    hatches = ["", "//", "..", "xx"]
    for k, metric in enumerate(metrics):
        for j, cause in enumerate(causes):
            hit = [e for e in effects if e["cause"] == cause and e["metric"] == metric]
            if not hit:
                continue
            e = hit[0]
            y = j + (k - (len(metrics) - 1) / 2) * height
            right.barh(y, e["effect"], height, xerr=e["noise"], capsize=3, hatch=hatches[k % len(hatches)],
                       color=VERDICT_COLORS[e["verdict"]], edgecolor="black", linewidth=0.5)  # fmt: skip
    right.axvline(0, color="black", lw=0.8)
    right.set_yticks(np.arange(len(causes)), [f"{c}" for c in causes], fontsize=8)
    right.invert_yaxis()
    right.set_xlabel("effect of the ablation (points; bar: twice the standard error)")
    right.set_title("each candidate cause, one ablation", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in VERDICT_COLORS.values()]
    handles += [
        plt.Rectangle((0, 0), 1, 1, fc="white", ec="black", hatch=hatches[k]) for k in range(len(metrics))
    ]
    labels = [*VERDICT_COLORS, *(PROBE_NAMES.get(m, m) for m in metrics)]
    right.legend(handles, labels, fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    right.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def plot_screen(
    rows: Sequence[Mapping],
    metrics: Sequence[str] = ("linear_probe", "knn"),
    *,
    references: Mapping[str, Mapping[str, float]] | None = None,
    highlight: str = "MAE",
    title: str | None = None,
) -> Figure:
    """One panel per metric: a horizontal bar per row of a grid group (`tables.summarize` format: mean and
    std over seeds, the first row on top), rows whose name starts with `highlight` in another colour, and a
    dashed vertical line per entry of `references` ({label: {metric: accuracy}}, e.g. raw pixels)."""
    rows = [r for r in rows if all(m in r for m in metrics)]
    if not rows:
        raise ValueError("rows is empty; pass the rows of a summary group that have been run")
    y = np.arange(len(rows))[::-1]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 + 2.8 * len(metrics), 0.42 * len(rows) + 1.2),
                             sharey=True, squeeze=False)  # fmt: skip
    for ax, metric in zip(axes[0], metrics):
        means = np.array([r[metric]["mean"] for r in rows])
        colors = ["tab:orange" if r["name"].startswith(highlight) else "tab:blue" for r in rows]
        ax.barh(y, means, xerr=[r[metric]["std"] for r in rows], color=colors, alpha=0.85, capsize=2)
        for yi, m, r in zip(y, means, rows):
            ax.text(m + r[metric]["std"], yi, f" {m:.1f}", va="center", fontsize=7)
        for k, (label, values) in enumerate((references or {}).items()):
            ax.axvline(
                values[metric], ls="--", lw=1, color=f"C{k + 2}", label=f"{label} {values[metric]:.1f}"
            )
        lo = min([*means, *(v[metric] for v in (references or {}).values())])
        ax.set_xlim(lo - 4, max([*means, *(v[metric] for v in (references or {}).values())]) + 2)
        ax.set_title(PROBE_NAMES.get(metric, metric), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        if references:
            ax.legend(fontsize=7, frameon=False, loc="lower right")
    axes[0, 0].set_yticks(y, [f"{r['name']} ({r['n']})" for r in rows], fontsize=7)
    fig.supxlabel("accuracy (%), mean over seeds (their number in brackets), bars: std", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
