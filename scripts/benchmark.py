#!/usr/bin/env python
"""Micro-benchmarks of jepa_lite, one subcommand each; every figure is printed as one line.

    python scripts/benchmark.py masks                       # mask sampling, batch 128 on a 14x14 grid
    python scripts/benchmark.py masks --grid 8 --batch-size 256 --json masks.json
    python scripts/benchmark.py step --model tiny --batch 256 --steps 10     # train step on this device
    python scripts/benchmark.py step --model vit_huge_patch14_224 --batch 128 --precision bf16 --compile
    python scripts/benchmark.py context --json results/context_cost.json    # notebook 02's measurement

`masks` times `MaskCollator.sample` of every strategy (and the official collator's re-implementation for
comparison) in this process: a few warm-up calls, then `--repeats` timed repeats of a few calls each; the
figure is the median. DataLoader workers run torch with one thread; pass `--threads 1` to match them.

`step` builds the method of a packaged config with `core.build.build_method` and times full optimizer
steps (forward, backward, fused AdamW on CUDA, EMA update) on synthetic images with real multi-block masks on
the present device (CUDA if available): images/s and step time (medians), peak CUDA memory, and MFU from the
analytic FLOPs of `jepa_lite.core.flops` at the Kc/Kt actually drawn (real tokens: padding is not model work).
`--fill fixed` gives every step the same shapes (`mask.context_fill=fixed`), so `--compile` compiles once.
`--reference` also times, in the same process, a plain ViT of the same size training on whole images
(forward, backward and the same optimizer; no masks, no predictor, no EMA) and reports the I-JEPA step's MFU
as a ratio of it: near 1, the I-JEPA-specific code wastes little of the device.

    python scripts/benchmark.py step --model vit_huge_patch14 --batch 128 --fill fixed --compile --reference
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from jepa_lite.core.collate import Batch, make_collator
from jepa_lite.core.mask_strategies import official_collator_sample

STRATEGIES = ["multiblock", "random", "block", "rasterized", "official"]
# `step --model` -> the packaged config whose method is timed.
STEP_MODELS = {
    # the 4-deep Fashion-MNIST ViT of the experiment grid (the CPU figures of docs/scaling.md)
    "tiny": "fmnist_grid",
    "course": "fmnist_vit_tiny",  # the course's default run: the same ViT 2 deep
    "vit_base_patch16_224": "in1k_vitb16_ep600",
    "vit_large_patch16_224": "in1k_vitl16_ep600",
    "vit_huge_patch14_224": "in1k_vith14_ep300",
}


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


def _step_parts(args: argparse.Namespace):
    """(config, device, method, collator, optimizer, images) of the model `args.model`, ready to step."""
    from jepa_lite.core.build import build_collator, build_method
    from jepa_lite.core.config import load_config
    from jepa_lite.core.schedules import param_groups

    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        raise ValueError(f"--batch {args.batch} and --steps {args.steps} must be >= 1, --warmup >= 0")
    cfg = load_config(STEP_MODELS[args.model], [f"compile={args.compile}", f"mask.context_fill={args.fill}"])
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.precision == "bf16" and device.type == "cpu":
        print("note: bf16 autocast on CPU is slow and not what a GPU run measures", flush=True)
    torch.manual_seed(0)
    method = build_method(cfg).to(device)
    collator = build_collator(cfg, method.eval_encoder.grid)
    optimizer = torch.optim.AdamW(param_groups(method), lr=1e-4, fused=device.type == "cuda")
    if args.compile:  # as jepa_lite.core.train does: one static compile for fixed shapes, else dynamic
        method.compile(dynamic=args.fill != "fixed")
    method.train()
    size, in_chans = cfg.data.image_size, method.eval_encoder.in_chans
    images = torch.randn(args.batch, in_chans, size, size, device=device)
    return cfg, device, method, collator, optimizer, images


def _time_steps(args: argparse.Namespace, device, method, collator, optimizer, images) -> dict:
    """Warm-up then timed optimizer steps on fresh masks: {times, kc, kt, kc_shape, n_targets}."""
    from jepa_lite.core.models import attention_kernels

    cuda = device.type == "cuda"
    gen = torch.Generator().manual_seed(0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    out = dict(times=[], kc=0.0, kt=0.0, kc_shape=0.0, n_targets=0)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    def next_batch() -> Batch:
        ctx, tgt = collator.sample(args.batch, gen)  # on the host, as in the DataLoader workers: not timed
        batch = Batch.from_masks(images, ctx, tgt, always_valid=collator.fixed_shapes)  # -1 padding -> valid
        return batch.to(device, non_blocking=True)

    def one_step(batch: Batch) -> None:
        with autocast, contextlib.nullcontext() if args.cudnn_attention else attention_kernels(device):
            loss, _ = method(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        method.update_target(0.996)

    for i in range(args.warmup + args.steps):
        batch = next_batch()
        sync()
        start = time.perf_counter()
        one_step(batch)
        sync()
        if i >= args.warmup:
            out["times"].append(time.perf_counter() - start)
            out["kc"] += _real_tokens(batch.context_idx, batch.context_valid) / args.steps
            out["kt"] += _real_tokens(batch.target_idx, batch.target_valid) / args.steps
            out["kc_shape"] += batch.context_idx.shape[1] / args.steps
            out["n_targets"] = batch.target_idx.shape[1]
    if args.profile:
        profile_steps(one_step, next_batch, args.profile, cuda)
    return out


def _print_step(head: str, t: dict, median: float, flops: float, util, peak, batch: int) -> None:
    rate = batch / median
    print(f"{head}: {rate:,.1f} images/s (median of {len(t['times'])})", flush=True)
    print(f"{head}: {median * 1e3:,.1f} ms per step (median of {len(t['times'])})", flush=True)
    print(f"{head}: peak memory " + (f"{peak / 2**30:.2f} GiB" if peak is not None else "n/a (not CUDA)"))
    mfu_text = f"{100 * util:.1f}%" if util is not None else "n/a (no bf16 peak for this device)"
    print(
        f"{head}: MFU {mfu_text} ({flops / median / 1e12:.3f} model TFLOP/s, "
        f"{flops / batch / 1e9:.2f} GFLOPs per image, Kc {t['kc']:.1f} of {t['kc_shape']:.0f} slots, "
        f"Kt {t['kt']:.1f})",
        flush=True,
    )


def bench_step(args: argparse.Namespace) -> list[dict]:
    """Images/s, median step time, peak CUDA memory and MFU of I-JEPA training steps of one model."""
    from jepa_lite.core.flops import ijepa_step_flops, mfu

    cfg, device, method, collator, optimizer, images = _step_parts(args)
    t = _time_steps(args, device, method, collator, optimizer=optimizer, images=images)
    cuda = device.type == "cuda"
    median = statistics.median(t["times"])
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    flops = ijepa_step_flops(cfg, kc=t["kc"], kt=t["kt"], n_targets=t["n_targets"]).total * args.batch
    util = mfu(flops / median, name)
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    fields = dict(model=args.model, batch=args.batch, precision=args.precision, compile=args.compile,
                  fill=args.fill, cudnn_attention=args.cudnn_attention, device=name)  # fmt: skip
    head = f"step {args.model} " + " ".join(f"{k}={v}" for k, v in fields.items() if k != "model")
    _print_step(head, t, median, flops, util=util, peak=peak, batch=args.batch)
    row = dict(
        name=f"step {args.model}", **fields, images_per_s=args.batch / median, median_step_s=median,
        min_step_s=min(t["times"]), max_step_s=max(t["times"]), steps=len(t["times"]), warmup=args.warmup,
        peak_memory_bytes=peak, flops_per_step=flops, model_flops_per_s=flops / median, mfu=util,
        context_tokens=t["kc"], context_slots=t["kc_shape"], target_tokens=t["kt"],
        config=STEP_MODELS[args.model],
    )  # fmt: skip
    if args.reference:
        in_chans = method.eval_encoder.in_chans
        del method, optimizer, collator  # free the I-JEPA step's memory first
        ref = bench_reference(cfg, args, device, in_chans)
        ratio = flops / median / ref["model_flops_per_s"]
        print(f"{head}: I-JEPA step at {ratio:.2f}x the plain ViT's model FLOP/s", flush=True)
        row.update(reference=ref, mfu_ratio_to_reference=ratio)
    return [row]


def _real_tokens(idx: torch.Tensor, valid: torch.Tensor | None) -> float:
    """Mean number of real (unpadded) tokens per row of idx [..., K]."""
    return float(idx.shape[-1]) if valid is None else float(valid.float().sum(-1).mean())


def bench_reference(cfg, args: argparse.Namespace, device: torch.device, in_chans: int) -> dict:
    """The yardstick of `step --reference`: the config's encoder as a plain ViT classifier (mean-pooled
    tokens,
    a linear head) training on whole images with the same batch, precision, optimizer and compile setting."""
    from jepa_lite.core.build import build_encoder
    from jepa_lite.core.flops import mfu, plain_vit_step_flops
    from jepa_lite.core.models import attention_kernels

    torch.manual_seed(0)
    encoder = build_encoder(cfg, in_chans)
    model = torch.nn.ModuleDict(dict(encoder=encoder, head=torch.nn.Linear(encoder.embed_dim, 1000))).to(
        device
    )
    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return model["head"](model["encoder"](x).mean(dim=1))

    if args.compile:
        forward = torch.compile(forward)
    size = cfg.data.image_size
    images = torch.randn(args.batch, in_chans, size, size, device=device)
    labels = torch.randint(0, 1000, (args.batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    times = []
    for i in range(args.warmup + args.steps):
        sync()
        start = time.perf_counter()
        with autocast, attention_kernels(device):
            loss = torch.nn.functional.cross_entropy(forward(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    flops = plain_vit_step_flops(cfg, classes=1000) * args.batch
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    util = mfu(flops / median, name)
    mfu_text = f"MFU {100 * util:.1f}%" if util is not None else "MFU n/a"
    print(
        f"reference plain ViT ({args.model}, batch {args.batch}): {args.batch / median:,.1f} images/s, "
        f"{median * 1e3:,.1f} ms per step, {mfu_text} ({flops / median / 1e12:.3f} model TFLOP/s)",
        flush=True,
    )
    return dict(
        images_per_s=args.batch / median,
        median_step_s=median,
        steps=len(times),
        flops_per_step=flops,
        model_flops_per_s=flops / median,
        mfu=util,
    )


def profile_steps(one_step: Callable, next_batch: Callable, steps: int, cuda: bool, rows: int = 25) -> None:
    """Run `steps` more steps under torch.profiler and print the ops that took
    the most device (or CPU) time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            one_step(next_batch())
        if cuda:
            torch.cuda.synchronize()
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(f"profile of {steps} steps, top {rows} ops by {sort}:")
    print(prof.key_averages().table(sort_by=sort, row_limit=rows, max_name_column_width=60), flush=True)


def bench_context(args: argparse.Namespace) -> list[dict]:
    """Notebook 02's measurement: one forward of a ViT-Small-width encoder (384 wide, 6 deep, 16x16 grid of
    4-px patches, batch 16) on K of its 256 patch tokens, for K from an eighth to all;
    median ms over `--repeats`."""
    from jepa_lite.core.models import ViTEncoder

    torch.manual_seed(0)
    encoder = ViTEncoder(img_size=64, patch_size=4, in_chans=3, embed_dim=384, depth=6, num_heads=6).eval()
    images = torch.randn(16, 3, 64, 64)
    n = encoder.num_patches
    rows = []
    with torch.inference_mode():
        for k in (n // 8, n // 4, n // 2, 3 * n // 4, n):
            keep = torch.sort(torch.rand(images.shape[0], n).argsort(dim=1)[:, :k], dim=1).values
            run = partial(encoder, images, keep)
            ms = 1000 * _median_seconds(run, args.warmup, args.repeats)
            rows.append({"tokens": k, "of": n, "ms_per_forward": round(ms, 1)})
            print(
                f"K = {k:3d} of {n} tokens: {ms:7.1f} ms per forward (median of {args.repeats})", flush=True
            )
    return rows


def _median_seconds(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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

    context = sub.add_parser("context", parents=[common], help="encoder forward time against kept tokens")
    context.set_defaults(func=bench_context, repeats=7, warmup=2)

    step = sub.add_parser("step", parents=[common], help="training-step throughput, memory and MFU")
    step.add_argument("--model", default="tiny", choices=[*sorted(STEP_MODELS), "vit_huge_patch14"])
    step.add_argument("--batch", type=int, default=128, help="images per step on this device")
    step.add_argument(
        "--precision",
        default=None,
        choices=["bf16", "no"],
        help="autocast dtype (default: bf16 on CUDA, no on CPU)",
    )
    step.add_argument("--compile", action="store_true", help="torch.compile the method first")
    step.add_argument("--steps", type=int, default=10, help="timed optimizer steps; the median is reported")
    step.add_argument(
        "--cudnn-attention",
        action="store_true",
        help="let PyTorch pick cuDNN's attention (its default on Hopper), which jepa_lite.core.train avoids",
    )
    step.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="after timing, profile N more steps and print the top ops",
    )
    step.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    step.add_argument(
        "--fill",
        default="subsample",
        choices=["subsample", "pad", "fixed"],
        help="mask.context_fill: fixed gives every step the same shapes (default: subsample)",
    )
    step.add_argument(
        "--reference",
        action="store_true",
        help="also time a plain ViT of the same size and report the MFU ratio",
    )
    step.set_defaults(func=bench_step, warmup=2)

    args = parser.parse_args(argv)
    if args.command == "step" and args.model == "vit_huge_patch14":
        args.model = "vit_huge_patch14_224"
    if args.command == "step" and args.precision is None:
        args.precision = "bf16" if torch.cuda.is_available() else "no"
    if getattr(args, "grid", None) is not None and len(args.grid) not in (1, 2):
        parser.error(f"--grid takes N or H W, got {args.grid}")
    for flag in ("batch", "batch_size", "steps", "repeats", "threads", "profile", "warmup", "min_time"):
        value, least = getattr(args, flag, None), 0 if flag in ("profile", "warmup") else 1
        if flag == "min_time" and value is not None and value <= 0:
            parser.error(f"--min-time {value} must be positive")
        elif flag != "min_time" and value is not None and value < least:
            parser.error(f"--{flag.replace('_', '-')} {value} must be at least {least}")
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
