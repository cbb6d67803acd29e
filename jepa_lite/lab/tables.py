"""Tables: the experiment grid's runs averaged over seeds (`summarize`), its cost, and Markdown for both
summaries and any list of row dicts."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence

from .experiments import GROUPS, METRICS, STALE_MARK, STALE_NOTE, is_current, planned_runs, run_key


def _stats(values: list[float]) -> dict[str, float]:
    mean = statistics.fmean(values)
    return {"mean": mean, "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarize(
    runs: dict[str, dict], pixels: dict | None, groups: Iterable[str] = GROUPS, *, seeds: int | None = None
) -> dict:
    """results/summary.json: group -> rows of {name, n (seeds done), seeds (planned, capped at `seeds`),
    metric: {mean, std}}.

    A row whose runs are not all done reports the seeds it has (`n` < `seeds`), and none if it has none. The
    architectures group also gets the random-init rows (init of every default I-JEPA seed) and raw pixels."""
    summary: dict[str, list[dict]] = {}
    for g in groups:
        rows = []
        for row in GROUPS[g]:
            n = min(row.seeds, seeds) if seeds else row.seeds
            done = [runs[k] for k in (run_key(row.overrides, s) for s in range(n)) if k in runs]
            rows.append(_row(row.name, done, n))
        if g == "architectures":
            n = min(3, seeds) if seeds else 3
            inits = [
                dict(runs[k]["init"], probe_version=runs[k].get("probe_version", 1))
                for k in (run_key((), s) for s in range(n))
                if "init" in runs.get(k, {})
            ]
            rows.append(_row("random init", inits, n))
            rows.append(_row("raw pixels", [pixels] if pixels else [], 1))
        summary[g] = rows
    return summary


def _row(name: str, done: list[dict], seeds: int) -> dict:
    current = [d for d in done if is_current(d)]
    done = current or done  # never average over two probe protocols: re-run seeds replace the old ones
    row = {"name": name, "n": len(done), "seeds": seeds}
    if not current and done:
        row["stale"] = len(done)  # all probed by an older protocol: flagged in the tables until re-run
    for m in METRICS:
        vals = [d[m] for d in done if m in d and math.isfinite(d[m])]
        if vals:
            row[m] = _stats(vals)
    if done and "train_seconds" in done[0]:
        row["train_minutes"] = round(statistics.fmean(d["train_seconds"] for d in done) / 60, 1)
    return row


def grid_cost(runs: dict[str, dict], groups: Iterable[str] = GROUPS, *, seeds: int | None = None) -> dict:
    """Minutes of training and of probes that the finished runs of each group took on their host, and of the
    whole grid with every shared run counted once ("all"): what a fresh `scripts/reproduce.py` would spend."""
    groups = list(groups)
    cost = {}
    for g in [*groups, "all"]:
        keys = [run_key(o, s) for o, s in planned_runs(groups if g == "all" else [g], seeds=seeds)]
        done = [runs[k] for k in keys if k in runs]
        cost[g] = {
            "runs": len(done),
            "planned": len(keys),
            "train_minutes": round(sum(d.get("train_seconds") or 0 for d in done) / 60, 1),
            "probe_minutes": round(sum(d.get("eval_seconds") or 0 for d in done) / 60, 1),
        }
    return cost


def cost_table(cost: dict) -> str:
    """`grid_cost` as Markdown: runs done/planned, training and probe minutes per
    group, then the whole grid."""
    lines = ["### cost", "", "| group | runs | train min | probe min |", "|---|---|---|---|"]
    for g, c in cost.items():
        name = "all groups, each run once" if g == "all" else g
        lines.append(
            f"| {name} | {c['runs']}/{c['planned']} | {c['train_minutes']:.0f} | {c['probe_minutes']:.0f} |"
        )
    return "\n".join([*lines, ""])


def summary_markdown(summary: dict) -> str:
    """The summary as Markdown: one table per group, `mean ± std` (over seeds) per metric."""
    heads = {
        "linear_probe": "linear probe",
        "knn": "k-NN",
        "low_shot": "1% low-shot",
        "rankme": "RankMe",
        "count": "count (Shapes)",
        "position": "position (Shapes)",
    }
    lines = []
    for g, rows in summary.items():
        lines += [
            f"### {g}",
            "",
            "| row | seeds | " + " | ".join(heads[m] for m in METRICS) + " | train min |",
            "|---|---|" + "---|" * (len(METRICS) + 1),
        ]
        for r in rows:
            cells = [_cell(r.get(m), m) for m in METRICS]
            seeds = f"{r['n']}/{r['seeds']}"
            name = f"{r['name']} {STALE_MARK}" if r.get("stale") else r["name"]
            lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + f" | {r.get('train_minutes', '')} |")
        lines.append("")
    if any(r.get("stale") for rows in summary.values() for r in rows):
        lines += [f"{STALE_MARK} {STALE_NOTE}", ""]
    return "\n".join(lines)


def _cell(stat: dict | None, metric: str) -> str:
    if stat is None:
        return "not run"
    digits = 2 if metric == "rankme" else 1
    if stat["std"] == 0:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None, *, digits: int = 3) -> str:
    """A Markdown table of row dicts (floats to `digits` significant digits, bools as yes/no), for
    `IPython.display.Markdown`: it renders in Jupyter and on code hosts alike."""
    rows = list(rows)
    if not rows:
        raise ValueError("rows is empty; nothing to tabulate")
    columns = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))

    def cell(v) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:.{digits}g}" if abs(v) < 10**digits else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
