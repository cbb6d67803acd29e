#!/usr/bin/env python
"""Throughput of the distributed feature extraction (`evaluate.py --protocol`): one process against two.

    python scripts/bench_extract.py --json results/extract_throughput.json
    python scripts/bench_extract.py --model vit_base_patch16_224 --images 128

Writes a fake ImageNet folder of JPEGs (train/ and val/, 8 classes, 320x256 px: decoding and resizing are
part of the work, as on ImageNet), a run folder holding a random ViT of `--model`, and runs
`scripts/evaluate.py RUN --protocol` with a one-epoch probe under `torch.distributed.run`, first with one
process using every thread, then with two processes of half the threads each. The figure is the
extraction's images/s (all images over the extraction's wall time, the probe excluded), in total and per
process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_small_patch16_224", help="a timm ViT name (224 px)")
    p.add_argument("--images", type=int, default=768, help="images in all, half train and half val")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def fake_imagenet(root: Path, n: int) -> None:
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for i in range(n):
        folder = root / ("train" if i % 2 == 0 else "val") / f"n{i % 8:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (torch.rand(256, 320, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"img_{i}.JPEG", quality=90)


def run_folder(path: Path, model: str) -> None:
    from jepa_lite.core.build import build_encoder
    from jepa_lite.core.config import config_to_dict, load_config
    from jepa_lite.core.weights import export_weights

    cfg = load_config("in1k_vitb16_ep600", [f"model.name={model}"])
    path.mkdir(parents=True)
    export_weights(build_encoder(cfg, in_chans=3), path / "target_encoder.safetensors")
    (path / "config.json").write_text(json.dumps(config_to_dict(cfg)))


def extract(tmp: Path, procs: int, threads: int, batch_size: int) -> dict:
    run = tmp / f"run{procs}"
    protocol = yaml.safe_load((ROOT / "jepa_lite/configs/eval/in1k_linear.yaml").read_text())
    protocol.update(name="bench", epochs=1, batch_size=64, lr=[0.1], weight_decay=[0.0])
    (tmp / "bench.yaml").write_text(yaml.safe_dump(protocol))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.pop("WORLD_SIZE", None)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
    cmd = [*launcher, str(ROOT / "scripts/evaluate.py"), str(run), "--protocol", str(tmp / "bench.yaml"),
           "--data", str(tmp / "imagenet"), "--batch-size", str(batch_size), "--chunk", str(batch_size),
           "--num-workers", "0", "--quiet"]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    result = json.loads((run / "eval_bench.json").read_text())
    images = result["train_images"] + result["val_images"]
    per_s = images / result["extract_seconds"]
    return {"processes": procs, "threads_each": threads, "images": images,
            "images_per_s": round(per_s, 2), "images_per_s_per_process": round(per_s / procs, 2)}  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fake_imagenet(tmp / "imagenet", args.images)
        for procs in (1, 2):
            run_folder(tmp / f"run{procs}", args.model)
            rows.append({"model": args.model, **extract(tmp, procs, max(1, cores // procs), args.batch_size)})
            print(json.dumps(rows[-1]))
    if args.json:
        Path(args.json).write_text(json.dumps({"cores": cores, "rows": rows}, indent=1))
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
