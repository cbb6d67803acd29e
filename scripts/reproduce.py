#!/usr/bin/env python
"""Run the course's experiment grid (jepa_lite.lab.experiments.GROUPS) and write results/: one JSON per run,
summary.json, summary.md and summary.png. Runs already done are skipped and a killed run resumes from its
last checkpoint, so the grid can be spread over several days.

    python scripts/reproduce.py                          # the grid (hours on 2 CPU cores), all but nuisance
    python scripts/reproduce.py --groups nuisance        # representations vs pixels under irrelevant detail
    python scripts/reproduce.py --groups architectures   # one group
    python scripts/reproduce.py --groups why_mae_leads --shard 1/2  # every other row: one of two processes
    python scripts/reproduce.py --groups why_mae_leads --time-steps # its rows' step costs, side by side
    python scripts/reproduce.py --quick --out /tmp/grid  # tiny budget, every group, a few minutes (CI)
    python scripts/reproduce.py --summary-only           # rebuild the tables and figure from the JSONs
    python scripts/reproduce.py --groups course_checkpoints                      # retrain the shipped ones
    python scripts/reproduce.py --groups course_checkpoints --checkpoints ijepa  # one of them

`course_checkpoints` is not a table of the grid: it retrains jepa_lite/checkpoints/ (lab.pretrained),
probing snapshots at 1/8, 1/4, 1/2 and all of each budget (hours on a CPU, minutes on a GPU), times the three
recipes' steps side by side (step_seconds.json beside the weights) and draws results/accuracy_vs_compute.png
on that one clock.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from jepa_lite.lab import experiments as ex
from jepa_lite.lab import grid, pretrained, retrain, tables

COURSE = "course_checkpoints"  # retrains the shipped checkpoints (jepa_lite.lab.pretrained), not a grid table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--groups",
        default=",".join(ex.DEFAULT_GROUPS),
        help=f"groups to run, a comma-separated subset of {', '.join(ex.GROUPS)} (default: all but "
        f"{', '.join(ex.OPT_IN)}; the summary files always cover every group), or {COURSE}",
    )
    p.add_argument(
        "--checkpoints", default=None, help=f"with {COURSE}: which, comma-separated (default: all)"
    )
    p.add_argument("--out", default="results", help="results folder (default: results)")
    p.add_argument("--quick", action="store_true", help="tiny budget (a few steps, small probes) for CI")
    p.add_argument(
        "--seeds", type=int, default=None, help="cap on seeds per row (default: each row's own; --quick: 2)"
    )
    p.add_argument("--max-runs", type=int, default=None, help="stop after this many new runs (resume later)")
    p.add_argument(
        "--shard",
        default="0/1",
        help="i/n: run only every n-th row of the plan, from the i-th (n processes, one per core, share a "
        "grid)",
    )
    p.add_argument("--summary-only", action="store_true", help="only rebuild summary.json/.md/.png")
    p.add_argument(
        "--time-steps",
        action="store_true",
        help=f"with {COURSE}: re-time the recipes' steps side by side ({pretrained.STEP_SECONDS} beside the "
        "weights, the figure's clock; timed once, when missing, after a retrain); with grid groups: time "
        "each row's step side by side into OUT/GROUP_step_seconds.json",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check: a bad group, checkpoint name or count is one line and exit
    status 2, as argparse does."""
    parser = build_parser()
    args = parser.parse_args(argv)
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    if unknown := [g for g in groups if g not in ex.GROUPS and g != COURSE]:
        parser.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(ex.GROUPS)}, {COURSE}")
    which = [n.strip() for n in (args.checkpoints or "").split(",") if n.strip()]
    if unknown := [n for n in which if n not in pretrained.RECIPES]:
        parser.error(
            f"unknown checkpoint(s) {', '.join(unknown)}; choose from {', '.join(pretrained.RECIPES)}"
        )
    try:
        i, n = (int(v) for v in args.shard.split("/"))
        if not 0 <= i < n:
            raise ValueError
    except ValueError:
        parser.error(f"--shard {args.shard!r} must be i/n with 0 <= i < n, e.g. 0/2 and 1/2")
    args.shard = (i, n)
    for flag in ("seeds", "max_runs"):
        if (value := getattr(args, flag)) is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} {value} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    out = Path(args.out)
    if COURSE in groups:
        groups.remove(COURSE)
        cards = course_checkpoints(args, out)
        if not groups:
            return cards  # only the course checkpoints: their cards
    seeds = args.seeds if args.seeds is not None else (ex.QUICK_SEEDS if args.quick else None)
    if not args.summary_only and not args.time_steps:
        grid.run_grid(
            groups,
            out,
            quick=args.quick,
            seeds=seeds,
            max_runs=args.max_runs,
            shard=args.shard,
            progress=not args.quiet,
        )
    if args.time_steps:
        for g in groups:
            print(f"timing the steps of each row of {g}, one after another", flush=True)
            rows = {row.name: (row.overrides, 0) for row in ex.GROUPS[g]}
            n = dict(steps=12, warmup=4) if args.quick else dict(steps=200, warmup=50)
            seconds = grid.step_seconds_of(rows, base=ex.GRID_BASE, quick=args.quick, **n)
            device = retrain.device_name()
            out.mkdir(parents=True, exist_ok=True)
            grid.write_json(out / f"{g}_step_seconds.json", {"seconds_per_step": seconds, "device": device})
    # The files always cover every group, from all the runs on disk: running one group keeps the others' rows.
    pixels = json.loads((out / "pixels.json").read_text()) if (out / "pixels.json").exists() else None
    runs = grid.load_runs(out / "runs")
    summary = tables.summarize(runs, pixels, list(ex.GROUPS), seeds=seeds)
    cost = tables.grid_cost(runs, seeds=seeds)
    table = tables.summary_markdown(summary) + "\n" + tables.cost_table(cost)
    summary["_meta"] = {"quick": args.quick, "groups_run": [] if args.summary_only else groups}
    summary["_cost"] = cost
    grid.write_json(out / "summary.json", summary)
    mode = "quick mode: a tiny budget, not results" if args.quick else "full mode"
    head = (
        f"Written by `python scripts/reproduce.py` ({mode}); accuracies in %, mean ± std over the seeds done "
        "(done/planned), Fashion-MNIST probes on all 60,000 training / 10,000 test images; rows marked "
        "'not run' are planned; the last table is the time the runs took on their host (raw pixels' "
        "probes not counted). Rebuild with `python scripts/reproduce.py --summary-only`.\n\n"
    )
    (out / "summary.md").write_text(head + table)
    plot_summary({g: r for g, r in summary.items() if not g.startswith("_")}, out / "summary.png")
    plot_why(summary, out / "why_mae_leads.png")
    print(tables.summary_markdown({g: summary[g] for g in groups}))
    return summary


def course_checkpoints(args: argparse.Namespace, out: Path) -> dict:
    """Retrain the course checkpoints (quick: into OUT/checkpoints) and draw accuracy against compute."""
    import matplotlib

    matplotlib.use("Agg")
    from jepa_lite.viz import plot_accuracy_vs_compute

    which = [n.strip() for n in args.checkpoints.split(",") if n.strip()] if args.checkpoints else None
    weights = out / "checkpoints" if args.quick else None
    if not args.summary_only:  # --summary-only: redraw the figure from the cards already written
        retrain.retrain(
            which,
            out_dir=weights,
            work_dir=out / ".work" / "course_checkpoints",
            quick=args.quick,
            progress=not args.quiet,
        )
    cards = {n: pretrained.card(n, weights) for n in pretrained.available(weights)}
    out.mkdir(parents=True, exist_ok=True)
    timing = (weights or pretrained.WEIGHTS_DIR) / pretrained.STEP_SECONDS
    recorded = json.loads(timing.read_text()) if timing.is_file() else None
    # timed once per device (a CPU with any thread count is one device): a retrain on another device (a GPU)
    # re-times every recipe there; a recipe new on this device is timed beside I-JEPA and put on its clock
    here = retrain.device_name().split(",")[0]
    same_device = recorded is not None and recorded["device"].split(",")[0] == here
    budget = dict(steps=12 if args.quick else 400, warmup=4 if args.quick else 50, quick=args.quick)
    if args.time_steps or (not args.summary_only and not same_device):
        print("timing the steps of each course recipe, one after another", flush=True)
        seconds = retrain.step_seconds(**budget)
        grid.write_json(timing, {"seconds_per_step": seconds, "device": retrain.device_name()})
    elif not args.summary_only and (new := [n for n in cards if n not in recorded["seconds_per_step"]]):
        print(f"timing {', '.join(new)} side by side with ijepa, on the recorded clock", flush=True)
        grid.write_json(timing, retrain.extend_step_seconds(recorded, new, **budget))
    curves, title = pretrained.compute_curves(weights)
    if not curves:
        print("no course checkpoint is present yet: nothing to draw", flush=True)
        return cards
    fig = plot_accuracy_vs_compute(curves, title=title, baselines=compute_baselines(out))
    fig.savefig(out / "accuracy_vs_compute.png", dpi=120, bbox_inches="tight")
    for name, info in cards.items():
        p = info["probes"]
        print(
            f"{name:>10}: linear probe {p['linear_probe']:.1f}, k-NN {p['knn']:.1f}, low-shot "
            f"{p['low_shot']:.1f} after {curves[pretrained.label(name)][-1]['train_minutes']:.0f} min "
            f"of training ({info['dtype']})"
        )
    return cards


def compute_baselines(out: Path) -> dict[str, dict[str, float]]:
    """The dashed lines of the accuracy-against-compute figure, where their results exist in `out`: the
    default run's encoder at initialisation (mean over its seeds) and standardised raw pixels."""
    lines = {}
    inits = [json.loads(p.read_text())["init"] for p in sorted((out / "default_run").glob("seed*.json"))]
    if inits:
        lines["same ViT at initialisation"] = {m: statistics.fmean(i[m] for i in inits) for m in inits[0]}
    if (out / "pixels.json").is_file():
        lines["raw pixels"] = json.loads((out / "pixels.json").read_text())
    return lines


def plot_summary(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from jepa_lite.viz import plot_experiment_summary

    plot_experiment_summary(summary).savefig(path, dpi=120, bbox_inches="tight")


def plot_why(summary: dict, path: Path) -> None:
    """The figure of notebook 06's section 2 (`lab.gap`), once the rows that split the gap have run."""
    import matplotlib

    matplotlib.use("Agg")
    from jepa_lite.lab import gap
    from jepa_lite.viz import plot_gap

    if gap.split_rows(summary):
        plot_gap(gap.split_rows(summary), gap.verdicts(summary)).savefig(path, dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    from jepa_lite.cluster.preempt import REQUEUE_STATUS, Preempted

    try:
        main()
    except Preempted as e:  # the run wrote a checkpoint; the same command resumes it
        print(e, file=sys.stderr, flush=True)
        sys.exit(REQUEUE_STATUS)
