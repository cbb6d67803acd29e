#!/usr/bin/env python
"""Micro-benchmarks of jepa_lite, one subcommand each; every figure is printed as one line.

    python scripts/benchmark.py masks                       # mask sampling, batch 128 on a 14x14 grid
    python scripts/benchmark.py masks --grid 8 --batch-size 256 --json masks.json

`masks` times `MaskCollator.sample` of every strategy (and the official collator's re-implementation for
comparison) in this process: a few warm-up calls, then `--repeats` timed repeats of a few calls each; the
figure is the median. DataLoader workers run torch with one thread; pass `--threads 1` to match them.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from jepa_lite.masks import make_collator, official_collator_sample  # noqa: E402

STRATEGIES = ["multiblock", "random", "block", "rasterized", "official"]


def time_calls(fn: Callable[[], object], *, repeats: int, warmup: int, min_time: float) -> list[float]:
    """Seconds per call of `fn`, one figure per repeat; each repeat runs enough calls to last `min_time`."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    fn()
    calls = max(1, math.ceil(min_time / max(time.perf_counter() - start, 1e-9)))
    per_call = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        per_call.append((time.perf_counter() - start) / calls)
    return per_call


def report(name: str, per_call: list[float], items: int, unit: str, **fields) -> dict:
    """Print one line `name k=v ...: N unit/s (median of R)` and return the figure as a dict."""
    median = statistics.median(per_call)
    rate = items / median
    params = " ".join(f"{k}={v}" for k, v in fields.items())
    print(f"{name} {params}: {rate:,.0f} {unit}/s (median of {len(per_call)})", flush=True)
    return dict(
        name=name,
        **fields,
        rate=rate,
        unit=f"{unit}/s",
        median_s=median,
        min_s=min(per_call),
        max_s=max(per_call),
        repeats=len(per_call),
    )


def bench_masks(args: argparse.Namespace) -> list[dict]:
    """Samples/s of each masking strategy's `sample` at one batch size and grid."""
    grid = tuple(args.grid) if len(args.grid) == 2 else (args.grid[0], args.grid[0])
    results = []
    for strategy in args.strategies:
        generator = torch.Generator().manual_seed(0)
        if strategy == "official":
            fn = partial(official_collator_sample, args.batch_size, grid, generator=generator)
        else:
            fn = partial(make_collator(strategy, grid, seed=0).sample, args.batch_size, generator)
        per_call = time_calls(fn, repeats=args.repeats, warmup=args.warmup, min_time=args.min_time)
        fields = dict(batch=args.batch_size, grid=f"{grid[0]}x{grid[1]}")
        results.append(report(f"masks {strategy}", per_call, args.batch_size, "samples", **fields))
    return results


def environment() -> dict:
    return dict(
        torch=torch.__version__,
        python=platform.python_version(),
        machine=platform.machine(),
        processor=platform.processor(),
        threads=torch.get_num_threads(),
        time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)  # options every subcommand takes
    common.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    common.add_argument("--threads", type=int, help="torch.set_num_threads before timing (default: torch's)")
    common.add_argument("--repeats", type=int, default=20, help="timed repeats; the median is reported")
    common.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    sub = parser.add_subparsers(dest="command", required=True)

    masks = sub.add_parser("masks", parents=[common], help="mask sampling throughput (samples/s)")
    masks.add_argument("--batch-size", type=int, default=128)
    masks.add_argument("--grid", type=int, nargs="+", default=[14], metavar="N", help="N (square) or H W")
    masks.add_argument("--strategies", nargs="+", default=STRATEGIES, choices=STRATEGIES)
    masks.add_argument("--min-time", type=float, default=0.02, help="seconds per timed repeat (at least)")
    masks.set_defaults(func=bench_masks)

    args = parser.parse_args(argv)
    if getattr(args, "grid", None) is not None and len(args.grid) not in (1, 2):
        parser.error(f"--grid takes N or H W, got {args.grid}")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    results = args.func(args)
    if args.json is not None:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
        payload = dict(command=args.command, config=config, environment=environment(), results=results)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
