#!/usr/bin/env python
"""Train the blue-box decoder on the shipped I-JEPA checkpoint, and measure what
the predictor's sketches hold.

    python scripts/train_decoder.py            # ~20 CPU min: checkpoints/ijepa_decoder.*, results/blue_box.*
    python scripts/train_decoder.py --quick    # a few steps, into --out (checks the script)

Two decoders are trained the same way (`jepa_lite.lab.decoder.fit_decoder`, same steps and seed): one on the
shipped `ijepa` checkpoint's frozen target encoder, and one on the *same network at initialisation*, the
control that shows what I-JEPA training put into the representations. Then, on a fixed set of test images,
each box is filled from the predictor, from the true target representation (ceiling) and from a shuffled
context (floor) (`lab.blue_box.fill_in_scores`), judged by pixel error inside the box and by a linear
probe of the trained target encoder fit on clean training images. Each evaluation is repeated over a few
mask-and-sample seeds so the spread is on record. Writes the decoder (safetensors, float32) and its card,
results/blue_box.json and the figure results/blue_box.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import Subset

from jepa_lite.core.build import build_method
from jepa_lite.core.config import config_from_dict
from jepa_lite.data import build_dataset
from jepa_lite.lab import blue_box, pretrained
from jepa_lite.lab.decoder import BlockDecoder, fit_decoder

ROOT = Path(__file__).resolve().parents[1]
COMMAND = blue_box.DECODER_COMMAND
CHECK = {"images": 200, "seed": 0}  # the quick reproduction a test runs on the shipped decoder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10_000, help="decoder training steps (default 10,000)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--beta", type=float, default=0.05, help="weight of the KL term (default 0.05)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-images", type=int, default=1000, help="test images scored (default 1000)")
    p.add_argument("--eval-seeds", type=int, default=3, help="mask-and-sample seeds per score (default 3)")
    p.add_argument("--probe-images", type=int, default=10_000, help="training images for the judge probe")
    p.add_argument("--out", default=None, help="folder for weights and results (default: the package's)")
    p.add_argument("--quick", action="store_true", help="a few steps and images (checks the script)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.test_images, args.eval_seeds, args.probe_images = 20, 100, 2, 1000
    if args.quick and args.out is None:
        p.error("--quick writes to --out (never over the shipped decoder)")
    return args


def make_decoder(method) -> BlockDecoder:
    enc = method.target_encoder
    return BlockDecoder(enc.grid, enc.embed_dim, enc.patch_size, in_chans=enc.in_chans)


def scores_over_seeds(decoder, method, images, labels, classify, seeds: int, sources) -> dict:
    runs = [
        blue_box.fill_in_scores(
            decoder, method, images, labels, classify=classify, seed=1000 * s, sources=sources
        )
        for s in range(seeds)
    ]
    out = {}
    for source in sources:
        out[source] = {}
        for metric in ("box_mse", "class_acc"):
            vals = [r[source][metric] for r in runs]
            out[source][metric] = {
                "mean": statistics.fmean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            }
    return out


def fit_decoders(args: argparse.Namespace, methods: dict, train_set) -> tuple[dict, dict, dict]:
    """One decoder per I-JEPA of `methods` ({"trained": ..., "random init": ...}): decoders, logs, minutes."""
    decoders, fit_logs, minutes = {}, {}, {}
    for name, method in methods.items():
        print(
            f"training the decoder on the {name} I-JEPA ({args.steps} steps of {args.batch_size} blocks)",
            flush=True,
        )
        t0 = time.perf_counter()
        decoders[name] = make_decoder(method)
        torch.manual_seed(args.seed)
        fit = dict(
            steps=args.steps,
            batch_size=args.batch_size,
            beta=args.beta,
            seed=args.seed,
            progress=not args.quiet,
        )
        fit_logs[name] = fit_decoder(decoders[name], method, train_set, **fit)
        minutes[name] = (time.perf_counter() - t0) / 60
    return decoders, fit_logs, minutes


def score(args: argparse.Namespace, decoders: dict, methods: dict, train_set, test_set) -> dict:
    """The judge (a linear probe of the trained target encoder), its accuracy on clean test images, the fills'
    scores over seeds for each decoder, and the fixed check recorded on the decoder's card."""
    print(
        "fitting the judge (a linear probe of the trained target encoder) and scoring the fills", flush=True
    )
    trained = methods["trained"]
    probe_set = Subset(train_set, range(args.probe_images))
    classify = blue_box.linear_judge(trained.target_encoder, probe_set, progress=not args.quiet)
    n = min(args.test_images, len(test_set))
    images = torch.stack([test_set[i][0] for i in range(n)])
    labels = torch.tensor([int(test_set[i][1]) for i in range(n)])
    with torch.no_grad():
        clean_acc = 100.0 * (classify(images) == labels).float().mean().item()
    sources = {"trained": blue_box.SOURCES, "random init": ("predictor", "target")}
    scores = {
        name: scores_over_seeds(
            decoders[name],
            methods[name],
            images,
            labels,
            classify=classify,
            seeds=args.eval_seeds,
            sources=sources[name],
        )
        for name in methods
    }
    first = slice(0, CHECK["images"])
    check = blue_box.fill_in_scores(
        decoders["trained"], trained, images[first], labels[first], classify=classify, seed=CHECK["seed"]
    )
    return dict(images=images, clean_acc=clean_acc, scores=scores, check=check)


def save_decoder(
    args: argparse.Namespace, out: Path, decoder, fit_log: list[dict], minutes: float, check
) -> Path:
    """The trained decoder's weights and card (command, settings, final losses, the fixed check)."""
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{blue_box.DECODER}.safetensors"
    save_file({k: v.contiguous() for k, v in decoder.state_dict().items()}, str(weights))
    tail = {k: statistics.fmean(r[k] for r in fit_log[-100:]) for k in ("recon", "kl")}
    info = {
        "name": blue_box.DECODER,
        "about": "the blue-box decoder: a conditional VAE from a block's pooled I-JEPA representation to "
        "pixels",
        "encoder": "ijepa",
        "command": COMMAND,
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "beta": args.beta,
        "decoder": blue_box.decoder_arch(decoder),
        "train_minutes": round(minutes, 2),
        "final_recon": tail["recon"],
        "final_kl": tail["kl"],
        "check": {**CHECK, "scores": check},
        "quick": args.quick,
    }
    (out / f"{blue_box.DECODER}.json").write_text(json.dumps(info, indent=1))
    return weights


def report(summary: dict, weights: Path, results_dir: Path) -> None:
    print(f"judge on clean test images: {summary['judge_on_clean_images']:.1f}%")
    for enc_name, rows in summary["scores"].items():
        for source, row in rows.items():
            print(
                f"{enc_name:>11} / {source:<16} box MSE {row['box_mse']['mean']:.3f} ± "
                f"{row['box_mse']['std']:.3f}   judge {row['class_acc']['mean']:.1f} ± "
                f"{row['class_acc']['std']:.1f}%"
            )
    print(
        f"wrote {weights}, {results_dir / 'blue_box.json'} and blue_box.png "
        f"({summary['wall_minutes']:.1f} min in all)"
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    torch.manual_seed(args.seed)
    out = Path(args.out) if args.out else pretrained.WEIGHTS_DIR
    results_dir = Path(args.out) if args.out else ROOT / "results"
    cfg = config_from_dict(pretrained.card("ijepa")["config"])
    trained = pretrained.load("ijepa", part="method")
    torch.manual_seed(cfg.seed)  # the same network at initialisation, as train() builds it
    methods = {"trained": trained, "random init": build_method(cfg).eval().requires_grad_(False)}
    train_set = build_dataset("fmnist", train=True, image_size=cfg.data.image_size)
    test_set = build_dataset("fmnist", train=False, image_size=cfg.data.image_size)

    decoders, fit_logs, minutes = fit_decoders(args, methods, train_set)
    scored = score(args, decoders, methods, train_set, test_set=test_set)
    weights = save_decoder(
        args, out, decoders["trained"], fit_logs["trained"], minutes=minutes["trained"], check=scored["check"]
    )
    summary = {
        "command": COMMAND + (" --quick" if args.quick else ""),
        "test_images": len(scored["images"]),
        "eval_seeds": args.eval_seeds,
        "judge_on_clean_images": scored["clean_acc"],
        "scores": scored["scores"],
        "decoder_minutes": {k: round(v, 2) for k, v in minutes.items()},
        "final_kl": {k: statistics.fmean(r["kl"] for r in v[-100:]) for k, v in fit_logs.items()},
        "final_recon": {k: statistics.fmean(r["recon"] for r in v[-100:]) for k, v in fit_logs.items()},
        "wall_minutes": round((time.perf_counter() - t_start) / 60, 2),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "blue_box.json").write_text(json.dumps(summary, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    fig = blue_box.plot_blue_boxes(decoders["trained"], trained, scored["images"][:6], seed=0)
    fig.savefig(results_dir / "blue_box.png", dpi=120, bbox_inches="tight")
    report(summary, weights, results_dir)
    return summary


if __name__ == "__main__":
    main()
