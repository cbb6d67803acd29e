#!/usr/bin/env python
"""Probe a frozen encoder: linear probe, k-NN, low-shot linear probe and RankMe on average-pooled features.

    python scripts/evaluate.py runs/fmnist_vit_tiny                      # a jepa_lite run (its dataset, size)
    python scripts/evaluate.py runs/fmnist_vit_tiny --which context --test-limit 2000
    python scripts/evaluate.py IN1K-vit.h.14-300e.pth.tar --dataset imagefolder --data /data/in1k_subset \\
        --image-size 224 --train-limit 10000 --test-limit 2000 --json vith14.json
    python scripts/evaluate.py ./ijepa_vith14_1k --dataset cifar10 --data ~/data --image-size 224

With --protocol, the paper's evaluation at ImageNet scale, run by every process of the job (features
extracted once into RUN/features/, resumable; the probe fit on the main process; RUN/eval_PROTOCOL.json):

    accelerate launch scripts/evaluate.py runs/in1k_vith14 --protocol in1k_linear --data /datasets/imagenet
    accelerate launch scripts/evaluate.py runs/in1k_vith14 --protocol in1k_1pct --data /datasets/imagenet \
        --split-file 1percent.txt
    sbatch scripts/slurm/evaluate.sbatch runs/in1k_vith14 in1k_linear /datasets/imagenet

PATH is a jepa_lite run folder (config.json + target_encoder/encoder .safetensors), an official I-JEPA
`.pth.tar` or a Hugging Face IJepaModel directory (see jepa_lite/interop.py). When --image-size differs from
the encoder's, its 2-D positional grid is interpolated; grey images are repeated to 3 channels for RGB
encoders.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from jepa_lite.cluster.protocols import list_protocols, load_protocol
from jepa_lite.core.evaluate import PROBE_VERSION, evaluate_features, low_shot_indices
from jepa_lite.core.features import extract_features
from jepa_lite.core.models import count_parameters
from jepa_lite.data import DATASETS, build_dataset, dataset_info
from jepa_lite.interop import load_encoder, set_image_size_

METRICS = ("linear_probe", "knn", "low_shot", "rankme")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="run folder, official .pth.tar, or Hugging Face IJepaModel directory")
    p.add_argument(
        "--protocol", default=None, help=f"evaluation protocol: one of {list_protocols()} or a YAML file"
    )
    p.add_argument(
        "--split-file", default=None, help="with --protocol: image file names of the training subset"
    )
    p.add_argument(
        "--chunk", type=int, default=4096, help="with --protocol: images per unit of work and of resumption"
    )
    p.add_argument(
        "--num-workers", type=int, default=8, help="with --protocol: data-loading workers per process"
    )
    p.add_argument("--which", choices=["target", "context"], default="target", help="encoder to probe")
    p.add_argument(
        "--dataset", choices=DATASETS, default=None, help="default: the run's dataset, else fmnist"
    )
    p.add_argument("--data", default=None, help="dataset folder (root)")
    p.add_argument("--image-size", type=int, default=None, help="default: the run's, else the encoder's")
    p.add_argument(
        "--train-limit", type=int, default=None, help="use N training images (image folders: N/classes each)"
    )
    p.add_argument(
        "--test-limit", type=int, default=None, help="use N test images (image folders: N/classes each)"
    )
    p.add_argument("--per-class", type=int, default=60, help="labels per class of the low-shot probe")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--num-heads", type=int, default=None, help="heads of an official checkpoint (if unusual)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in ("train_limit", "test_limit", "per_class", "batch_size", "image_size", "num_heads", "chunk"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} {value} must be at least 1")
    return args


class RepeatChannels(nn.Module):
    """Feed grey images [B, 1, H, W] to an RGB encoder by repeating the channel."""

    def __init__(self, encoder: nn.Module, in_chans: int) -> None:
        super().__init__()
        self.encoder, self.in_chans = encoder, in_chans

    def forward(self, images: Tensor) -> Tensor:
        return self.encoder(images.expand(-1, self.in_chans, -1, -1))


def balanced_subset(dataset: Dataset, limit: int, *, seed: int = 0) -> Subset:
    """About `limit` items, the same number from every class (at least one each), drawn with `seed`.

    For image folders: ImageFolder lists its images class by class, so its first N images (what
    `build_dataset(limit=N)` keeps) would cover only the first few classes."""
    labels = torch.as_tensor(dataset.targets)
    classes, counts = labels.unique(return_counts=True)
    per_class = min(max(1, limit // len(classes)), int(counts.min()))
    return Subset(dataset, low_shot_indices(labels, per_class, seed=seed).tolist())


def _subset(name: str, limit: int | None, *, train: bool, **kw) -> Dataset:
    if name != "imagefolder" or limit is None:
        return build_dataset(name, train=train, limit=limit, **kw)
    return balanced_subset(build_dataset(name, train=train, **kw), limit)


def _run_config(path: Path) -> dict:
    cfg_file = path / "config.json"
    if path.is_dir() and cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
        if "model_type" not in cfg:  # a jepa_lite run, not a Hugging Face directory
            return cfg
    return {}


def _inputs(args: argparse.Namespace) -> tuple:
    """The encoder (wrapped for grey images if need be), dataset name, image size, train and test sets."""
    path = Path(args.path)
    run_data = _run_config(path).get("data", {})
    name = args.dataset or run_data.get("name", "fmnist")
    root = args.data if args.data is not None else run_data.get("root")
    encoder = load_encoder(path, args.which, num_heads=args.num_heads)
    native = encoder.grid[0] * encoder.patch_size
    size = args.image_size or run_data.get("image_size") or native
    if encoder.grid[0] != encoder.grid[1] and size != native:
        raise ValueError(f"--image-size {size}: encoder grid {encoder.grid} is not square")
    set_image_size_(encoder, size)
    in_chans = dataset_info(name)["in_chans"]
    model: nn.Module = encoder
    if in_chans != encoder.in_chans:
        if in_chans != 1:
            raise ValueError(f"dataset {name} has {in_chans} channels, the encoder takes {encoder.in_chans}")
        model = RepeatChannels(encoder, encoder.in_chans)
    kw = dict(root=root, image_size=size)
    train_set = _subset(name, args.train_limit, train=True, crop_scale=None, **kw)
    test_set = _subset(name, args.test_limit, train=False, **kw)
    return model, encoder, name, size, train_set, test_set


def run_protocol(args: argparse.Namespace) -> dict | None:
    """--protocol: extract with every process (accelerate), probe on the main one; see protocol_eval.py."""
    from accelerate import Accelerator

    from jepa_lite.cluster.protocol_eval import evaluate_run, weights_file

    try:
        protocol = load_protocol(args.protocol)
        weights_file(
            Path(args.path), protocol.which
        )  # a bad path or a run without weights: one line, at once
    except (ValueError, FileNotFoundError) as e:
        build_parser().error(str(e))
    # without CUDA a multi-process launch must ask for CPU, or each process would work alone (as in build.py)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    )
    kw = dict(
        batch_size=args.batch_size, chunk=args.chunk, num_workers=args.num_workers, progress=not args.quiet
    )
    try:
        results = evaluate_run(args.path, protocol, accelerator=accelerator, root=args.data,
                               split_file=args.split_file, **kw)  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        build_parser().error(str(e))
    if results is not None:
        print(f"{protocol.name} (version {protocol.version}): top-1 {results['top1']:.2f}% on "
              f"{results['val_images']} validation images ({results['processes']} process(es), "
              f"{results['seconds']:.0f} s)")  # fmt: skip
        print(f"wrote {Path(results['weights']).parent / f'eval_{protocol.name}.json'}")
    return results


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.protocol is not None:
        return run_protocol(args)
    try:  # a wrong path, size or dataset is one line naming it and exit status 2, as argparse does
        model, encoder, name, size, train_set, test_set = _inputs(args)
    except (ValueError, FileNotFoundError) as e:
        build_parser().error(str(e))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    print(
        f"{args.path} ({args.which} encoder, {count_parameters(encoder) / 1e6:.1f}M params, grid "
        f"{encoder.grid}) on {name} at {size} px, {device}"
    )

    t0 = time.perf_counter()
    feats = dict(batch_size=args.batch_size, device=device, progress=not args.quiet)
    train_x, train_y = extract_features(model, train_set, **feats)
    test_x, test_y = extract_features(model, test_set, **feats)
    smallest = int(train_y.unique(return_counts=True)[1].min())
    per_class = min(args.per_class, smallest)
    if per_class < args.per_class:
        print(f"low-shot: only {smallest} training images in the rarest class, using {per_class} per class")
    results = evaluate_features(train_x, train_y, test_x, test_y, per_class=per_class, device=device)
    results = {k: round(float(v), 3) for k, v in results.items()}
    results.update(
        path=str(args.path),
        which=args.which,
        dataset=name,
        image_size=size,
        train_images=len(train_y),
        test_images=len(test_y),
        per_class=per_class,
        probe_version=PROBE_VERSION,
        seconds=round(time.perf_counter() - t0, 1),
    )
    print("".join(f"{k:>14}" for k in METRICS))
    print("".join(f"{results[k]:>14.2f}" for k in METRICS))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
