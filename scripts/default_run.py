#!/usr/bin/env python
"""The course's default run (`python scripts/pretrain.py`, config fmnist_vit_tiny) over several seeds: what a
learner's run learns against its own random initialisation, and how long the whole run takes.

    python scripts/default_run.py                 # seeds 0, 1, 2 (each: training and probes, 6-11 CPU min)
    python scripts/default_run.py --summary-only  # rebuild results/default_run.md from the JSONs

Each seed is exactly `python scripts/pretrain.py seed=N` (run in its own process, so its wall time is what a
learner sees); results/default_run/seedN.json keeps its results.json, and results/default_run.md the table.
A seed whose JSON exists is not run again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("linear_probe", "knn", "low_shot", "rankme")
NAMES = {"linear_probe": "linear probe", "knn": "k-NN", "low_shot": "1% low-shot", "rankme": "RankMe"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    p.add_argument("--out", default=str(ROOT / "results"), help="results folder (default: results)")
    p.add_argument("--summary-only", action="store_true", help="only rebuild default_run.md")
    return p.parse_args(argv)


def run_seed(seed: int, dest: Path) -> dict:
    """`scripts/pretrain.py seed=N` in a fresh process and a temporary runs folder; keep its results.json."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "scripts" / "pretrain.py"), "--quiet", "--out", tmp, f"seed={seed}"]
        print(" ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)
        result = json.loads((Path(tmp) / "fmnist_vit_tiny" / "results.json").read_text())
        result["command"] = f"python scripts/pretrain.py seed={seed}"
        tmp_json = dest.with_suffix(".tmp")
        tmp_json.write_text(json.dumps(result, indent=1))
        shutil.move(tmp_json, dest)
    return result


def _cell(values: list[float], digits: int = 1) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(runs: list[dict]) -> str:
    """Markdown: trained, init and their difference (mean ± std over seeds), then the minutes of each run."""
    lines = ["| encoder | " + " | ".join(NAMES[m] for m in METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    lines.append(
        "| trained target encoder | " + " | ".join(_cell([r[m] for r in runs]) for m in METRICS) + " |"
    )
    lines.append(
        "| same ViT at initialisation | "
        + " | ".join(_cell([r["init"][m] for r in runs]) for m in METRICS)
        + " |"
    )
    gains = [_cell([r[m] - r["init"][m] for r in runs]) for m in METRICS[:3]]
    lines.append("| **gain (trained - init)** | " + " | ".join(f"**{g}**" for g in gains) + " | |")
    lines += [
        "",
        "| seed | steps | training min | probes min | wall min in all | gain: linear / k-NN / low-shot |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        gain = " / ".join(f"{r[m] - r['init'][m]:+.1f}" for m in METRICS[:3])
        mark = " *" if "note" in r else ""
        lines.append(
            f"| {r['seed']}{mark} | {r['steps']} | {r['train_seconds'] / 60:.1f} | "
            f"{r['eval_seconds'] / 60:.1f} | {r['wall_seconds'] / 60:.1f} | {gain} |"
        )
    notes = [f"\\* seed {r['seed']}: {r['note']}." for r in runs if "note" in r]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    folder = Path(args.out) / "default_run"
    folder.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in range(args.seeds):
        dest = folder / f"seed{seed}.json"
        if dest.exists():
            runs.append(json.loads(dest.read_text()))
        elif not args.summary_only:
            runs.append(run_seed(seed, dest))
    for r, seed in zip(runs, range(args.seeds), strict=False):
        r.setdefault("seed", seed)
    if not runs:
        raise SystemExit(f"no seed results in {folder}; run without --summary-only")
    head = (
        "Written by `python scripts/default_run.py`: the course's default run (`python scripts/pretrain.py "
        f"seed=N`, config `fmnist_vit_tiny`) for {len(runs)} seed(s), each in its own process on a 2-core "
        "CPU. "
        "Accuracies in % on all 60,000 training / 10,000 test images of Fashion-MNIST; mean ± std over "
        "seeds. The initialisation row is the same network before training, probed the same way.\n\n"
    )
    text = head + table(runs)
    (Path(args.out) / "default_run.md").write_text(text)
    print(text)
    return runs


if __name__ == "__main__":
    main()
