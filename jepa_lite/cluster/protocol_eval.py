"""Evaluate what a job pretrained, by a named protocol (protocols.py), with every process of the job.

    accelerate launch scripts/evaluate.py runs/in1k_vith14 --protocol in1k_linear --data /datasets/imagenet

1. Every process encodes its share of the training and validation images into feature stores inside the run
   folder (`RUN/features/<which>_<size>px_<split>/`, feature_store.py): resumable after a preemption, and
   reused by a later evaluation of the same weights.
2. The main process fits the protocol's probe on the stored features: `sgd` (sgd_probe.py, its learning
   rates and weight decays swept on 10,000 held-out training images, then refit on all of them) or `lbfgs`
   (the course's converged logistic regression, evaluate.linear_probe, for small sets such as 1%).
3. It prints top-1 on the validation images and writes `RUN/eval_<protocol>.json` with the protocol's
   name and version.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ..core.evaluate import PROBE_VERSION, linear_probe, low_shot_indices
from ..data import build_dataset, dataset_info
from ..interop import load_encoder, set_image_size_
from .feature_store import CHUNK, extract_to_store, open_store, sha256
from .protocols import Protocol
from .sgd_probe import sgd_linear_probe

HELD_OUT = 10_000  # training images held out to choose the sgd probe's learning rate and weight decay


def weights_file(path: Path, which: str) -> Path:
    """The file holding the probed weights: a run folder's <which>_encoder.safetensors, or `path` itself."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a file nor a folder")
    name = "target_encoder" if which == "target" else "encoder"
    for candidate in (path / f"{name}.safetensors", path / "model.safetensors"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{path}: no {name}.safetensors (has the run finished and exported its weights?)")


def split_file_indices(dataset, split_file: str | Path) -> list[int]:
    """Indices of an ImageFolder's images whose file names are listed in `split_file` (one per line, as
    SimCLR's and MSN's 1percent.txt: `n01440764_10026.JPEG`)."""
    names = {line.strip() for line in Path(split_file).read_text().splitlines() if line.strip()}
    picked = [i for i, (path, _) in enumerate(dataset.samples) if Path(path).name in names]
    if len(picked) != len(names):
        raise ValueError(
            f"{split_file}: {len(names) - len(picked)} of its {len(names)} images are not in {dataset.root}"
        )
    return picked


def training_images(protocol: Protocol, root, split_file=None) -> tuple[Dataset, str]:
    """The protocol's training images (all, a split file's, or `per_class` of every class) and their name."""
    full = build_dataset(
        protocol.dataset, root=root, train=True, image_size=protocol.image_size, crop_scale=None
    )
    split_file = split_file or protocol.split_file
    if split_file is not None:
        return Subset(full, split_file_indices(full, split_file)), f"train-{Path(split_file).stem}"
    if protocol.per_class is not None:
        picked = low_shot_indices(torch.as_tensor(full.targets), protocol.per_class, seed=0)
        return Subset(full, picked.tolist()), f"train-{protocol.per_class}per-class"
    return full, "train"


def _held_out_sweep(protocol: Protocol, x, y, device, progress: bool) -> tuple[float, float]:
    """(lr, weight decay) of the sgd probe most accurate on HELD_OUT training images (seeded split)."""
    perm = np.random.default_rng(0).permutation(len(x))
    val, fit = np.sort(perm[:HELD_OUT]), np.sort(perm[HELD_OUT:])
    x_fit, y_fit, x_val, y_val = x[fit], y[fit], x[val], y[val]
    scores = []
    for lr, wd in itertools.product(protocol.lr, protocol.weight_decay):
        acc = sgd_linear_probe(
            x_fit, y_fit, x_val, y_val, **_sgd_kwargs(protocol, lr, wd, device, progress=progress)
        )
        scores.append((acc, wd, -lr))
    best = max(scores)
    return -best[2], best[1]


def _sgd_kwargs(protocol: Protocol, lr: float, wd: float, device, progress: bool) -> dict:
    return dict(
        epochs=protocol.epochs,
        batch_size=protocol.batch_size,
        lr=lr,
        weight_decay=wd,
        momentum=protocol.momentum,
        optimizer=protocol.optimizer,
        schedule=protocol.schedule,
        decay_epochs=protocol.decay_epochs or protocol.epochs,
        device=device,
        progress=progress,
    )


def fit_probe(protocol: Protocol, train_store: Path, val_store: Path, device, progress: bool = True) -> dict:
    """Top-1 (%) of the protocol's probe on the validation store, and the values it chose."""
    train_x, train_y, _ = open_store(train_store)
    val_x, val_y, _ = open_store(val_store)
    if protocol.probe == "lbfgs":
        as_tensor = lambda a: torch.from_numpy(np.array(a)).to(device)  # noqa: E731  (the probe runs there)
        top1 = linear_probe(as_tensor(train_x), as_tensor(train_y), as_tensor(val_x), as_tensor(val_y),
                            weight_decay=protocol.weight_decay)  # fmt: skip
        return {"top1": round(top1, 2)}
    if len(protocol.lr) * len(protocol.weight_decay) > 1 and len(train_x) > 2 * HELD_OUT:
        lr, wd = _held_out_sweep(protocol, train_x, train_y, device, progress=progress)
    else:
        lr, wd = protocol.lr[0], protocol.weight_decay[0]
    top1 = sgd_linear_probe(
        train_x, train_y, val_x, val_y, **_sgd_kwargs(protocol, lr, wd, device, progress=progress)
    )
    return {"top1": round(top1, 2), "lr": lr, "weight_decay": wd}


def evaluate_run(path, protocol: Protocol, *, accelerator, root=None, split_file=None, batch_size: int = 256,
                 chunk: int = CHUNK, num_workers: int = 8, progress: bool = True) -> dict | None:  # fmt: skip
    """Extract (every process) and probe (main process) a run folder by `protocol`; the main process
    returns and writes the results, the others return None."""
    path, t0 = Path(path), time.perf_counter()
    weights = weights_file(path, protocol.which)
    encoder = load_encoder(path, protocol.which)
    set_image_size_(encoder, protocol.image_size)
    if dataset_info(protocol.dataset)["in_chans"] != encoder.in_chans:
        raise ValueError(f"dataset {protocol.dataset} and the encoder's {encoder.in_chans} channels differ")
    train_set, train_name = training_images(protocol, root, split_file)
    val_set = build_dataset(protocol.dataset, root=root, train=False, image_size=protocol.image_size)
    out = path if path.is_dir() else path.parent
    request = dict(weights=sha256(weights), dataset=protocol.dataset, root=str(root), which=protocol.which,
                   image_size=protocol.image_size, pooling=protocol.pooling)  # fmt: skip
    work = dict(accelerator=accelerator, batch_size=batch_size, chunk=chunk, num_workers=num_workers)
    stores = {}
    for split, dataset in (("train", train_set), ("val", val_set)):
        name = train_name if split == "train" else "val"
        folder = out / "features" / f"{protocol.which}_{protocol.image_size}px_{name}"
        split_request = {**request, "split": name}
        stores[split] = extract_to_store(
            encoder, dataset, folder, request=split_request, progress=progress, **work
        )
    extract_s = time.perf_counter() - t0
    if not accelerator.is_main_process:
        return None
    results = fit_probe(protocol, stores["train"], stores["val"], accelerator.device, progress=progress)
    results.update(protocol=protocol.name, protocol_version=protocol.version, probe_version=PROBE_VERSION,
                   weights=str(weights), train_images=len(train_set), val_images=len(val_set),
                   processes=accelerator.num_processes, extract_seconds=round(extract_s, 1),
                   seconds=round(time.perf_counter() - t0, 1))  # fmt: skip
    (out / f"eval_{protocol.name}.json").write_text(json.dumps(results, indent=1))
    return results


__all__ = ["evaluate_run", "fit_probe", "split_file_indices", "training_images", "weights_file"]
