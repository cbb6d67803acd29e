"""Every bad input gives, within seconds, one clear error: its type, and a message naming the parameter or
file and what is valid. One row per input; the table grows with every bug report."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from jepa_lite.core.batches import split_global_batch
from jepa_lite.core.build import build_method, total_steps_of
from jepa_lite.core.collate import make_collator
from jepa_lite.core.config import Config, apply_overrides, check_config, load_config
from jepa_lite.core.masks import sample_masks
from jepa_lite.core.models import Predictor, ViTEncoder
from jepa_lite.data import build_dataset, fashion_mnist
from jepa_lite.data.fashion_mnist import read_idx

GRID = (4, 4)


def cfg(*overrides: str) -> Config:
    """The default config with overrides, checked as scripts/pretrain.py and train() check it."""
    return check_config(apply_overrides(Config(), list(overrides)))


def _build(*overrides: str):
    c = apply_overrides(Config(), list(overrides))
    return build_method(c, in_chans=1)


def _folder(tmp: Path, files: dict[str, bytes | None]) -> Path:
    """An image folder root/cls/NAME with the given bytes (None: a valid 8x8 PNG)."""
    root = tmp / "images"
    (root / "cls").mkdir(parents=True)
    for name, content in files.items():
        if content is None:
            Image.new("RGB", (8, 8), (10, 20, 30)).save(root / "cls" / name)
        else:
            (root / "cls" / name).write_bytes(content)
    return root


def _idx(tmp: Path, payload: bytes) -> Path:
    path = tmp / "train-images-idx3-ubyte"
    path.write_bytes(payload)
    return path


CASES = {
    # mask geometry ------------------------------------------------------------------------------------------
    "target scale above 1": (lambda t: sample_masks(2, GRID, target_scale=(0.9, 1.2)), ValueError,
                             r"target_scale=\(0\.9, 1\.2\) must be a \(min, max\) pair with 0 < min <= max <= 1"),
    "target scale zero": (lambda t: sample_masks(2, GRID, target_scale=(0.0, 0.2)), ValueError, r"target_scale=\(0\.0, 0\.2\)"),
    "context scale min > max": (lambda t: sample_masks(2, GRID, context_scale=(1.0, 0.85)), ValueError,
                                r"context_scale=\(1\.0, 0\.85\) must be .* 0 < min <= max"),
    "negative aspect": (lambda t: sample_masks(2, GRID, target_aspect=(-1, 2)), ValueError, r"target_aspect=\(-1, 2\)"),
    "zero targets": (lambda t: sample_masks(2, GRID, n_targets=0), ValueError, r"n_targets=0 must be an int >= 1"),
    "more targets than fit": (lambda t: sample_masks(8, GRID, n_targets=40, target_scale=(0.5, 0.6), min_context=4),
                              RuntimeError, r"could not draw a context of at least min_context=4 .* lower min_context, n_targets"),
    "min_context above the grid": (lambda t: sample_masks(2, GRID, min_context=17), ValueError, r"min_context=17 must be an int in \[1, 16\]"),
    "min_context above the context block": (lambda t: sample_masks(2, GRID, context_scale=(0.2, 0.3), min_context=10),
                                            ValueError, r"min_context=10 exceeds the largest possible context block"),
    "grid too small": (lambda t: sample_masks(2, 1), ValueError, r"grid=\(1, 1\) must be .* each >= 2"),
    "zero batch for masks": (lambda t: sample_masks(0, GRID), ValueError, r"batch_size=0 must be an int >= 1"),
    "unknown mask strategy": (lambda t: make_collator("spiral", GRID), ValueError, r"strategy='spiral' is not one of"),
    "random ratio 1": (lambda t: make_collator("random", GRID, target_ratio=1.0), ValueError, r"target_ratio=1\.0 must lie in \(0, 1\)"),
    # config ------------------------------------------------------------------------------------------------
    "unknown config key": (lambda t: cfg("optim.learning_rate=1e-3"), ValueError,
                           r"unknown config key 'optim\.learning_rate'; valid keys: .*, lr,"),
    "unknown section": (lambda t: cfg("optimizer.lr=1e-3"), ValueError, r"unknown config key 'optimizer\.lr'"),
    "wrong type": (lambda t: cfg("optim.lr=fast"), ValueError, r"config key 'optim\.lr' expects float, got 'fast'"),
    "override without =": (lambda t: cfg("optim.lr"), ValueError, r"override 'optim\.lr' must look like section\.key=value"),
    "section set to a value": (lambda t: cfg("optim=3"), ValueError, r"config key 'optim' is a section"),
    "null seed": (lambda t: cfg("seed=null"), ValueError, r"config key 'seed' cannot be null"),
    "unknown config name": (lambda t: load_config("imagenet_giant"), ValueError, r"config 'imagenet_giant' not found.*fmnist_vit_tiny"),
    "unknown method": (lambda t: cfg("method.name=simclr"), ValueError, r"method\.name='simclr' is not one of ijepa, mae, invariant"),
    "unknown loss": (lambda t: cfg("method.loss=l3"), ValueError, r"method\.loss='l3' is not one of smooth_l1, l2"),
    "unknown dataset in config": (lambda t: cfg("data.name=mnist"), ValueError, r"data\.name='mnist' is not one of fmnist"),
    "unknown precision": (lambda t: cfg("mixed_precision=fp8"), ValueError, r"mixed_precision='fp8' is not one of auto"),
    "zero global batch": (lambda t: cfg("optim.global_batch=0"), ValueError, r"optim\.global_batch=0 must lie in \[1, inf\)"),
    "negative global batch": (lambda t: cfg("optim.global_batch=-16"), ValueError, r"optim\.global_batch=-16 must lie in \[1, inf\)"),
    "zero device batch": (lambda t: cfg("optim.max_device_batch=0"), ValueError, r"optim\.max_device_batch=0"),
    "zero epochs": (lambda t: cfg("optim.epochs=0"), ValueError, r"optim\.epochs=0\.0 must lie in \(0, inf\)"),
    "negative lr": (lambda t: cfg("optim.lr=-1e-3"), ValueError, r"optim\.lr=-0\.001 must lie in \(0, inf\)"),
    "ema above 1": (lambda t: cfg("optim.ema=[0.996,1.1]"), ValueError, r"optim\.ema=\[0\.996, 1\.1\] must be a \(min, max\) pair"),
    "crop scale min > max": (lambda t: cfg("data.crop_scale=[0.9,0.3]"), ValueError, r"data\.crop_scale=\[0\.9, 0\.3\]"),
    "mask scale above 1 in config": (lambda t: cfg("mask.target_scale=[0.5,1.5]"), ValueError, r"mask\.target_scale=\[0\.5, 1\.5\]"),
    "negative workers": (lambda t: cfg("data.num_workers=-1"), ValueError, r"data\.num_workers=-1 must lie in \[0, inf\)"),
    "image size not divisible by patch": (lambda t: cfg("data.image_size=30"), ValueError,
                                          r"data\.image_size=30 must be divisible by model\.patch_size=4"),
    "heads do not divide width": (lambda t: cfg("model.num_heads=5"), ValueError,
                                  r"model\.embed_dim=192 must be divisible by model\.num_heads=5"),
    # models and the batch contract -------------------------------------------------------------------------
    "encoder image not divisible": (lambda t: ViTEncoder(img_size=30, patch_size=4, embed_dim=32, depth=1, num_heads=2),
                                    ValueError, r"img_size 30 must be divisible by patch_size 4"),
    "timm image not divisible": (lambda t: ViTEncoder("vit_tiny_patch16_224", img_size=40), ValueError,
                                 r"img_size 40 must be divisible by the patch size 16 of 'vit_tiny_patch16_224'"),
    "unknown timm model": (lambda t: ViTEncoder("vit_gigantic_patch3"), ValueError, r"unknown timm model name 'vit_gigantic_patch3'"),
    "predictor heads": (lambda t: Predictor((4, 4), 32, predictor_dim=30, depth=1, num_heads=4), ValueError,
                        r"predictor_dim 30 must be divisible by predictor heads 4"),
    "unknown method at build": (lambda t: _build("method.name=byol"), ValueError, r"method 'byol' is not one of"),
    "global batch not divisible by world": (lambda t: split_global_batch(10, 4), ValueError,
                                            r"optim\.global_batch 10 is not divisible by the world size 4"),
    "dataset smaller than the batch": (lambda t: total_steps_of(cfg(), 100), ValueError,
                                       r"dataset of 100 images is smaller than optim\.global_batch 256"),
    # data ----------------------------------------------------------------------------------------------------
    "unknown dataset": (lambda t: build_dataset("mnist"), ValueError, r"unknown dataset name 'mnist'; valid names: fmnist"),
    "missing image folder": (lambda t: build_dataset("imagefolder", root=t / "nope"), FileNotFoundError,
                             r"image folder .*nope does not exist"),
    "image folder without root": (lambda t: build_dataset("imagefolder"), ValueError, r"root=None: dataset 'imagefolder' needs root"),
    "empty image folder": (lambda t: build_dataset("imagefolder", root=_folder(t, {})), FileNotFoundError,
                           r"image folder .*images has no images in class subfolders"),
    "only corrupt images": (lambda t: build_dataset("imagefolder", root=_folder(t, {"a.png": b"", "b.jpg": b"<html>"})),
                            FileNotFoundError, r"none of its 2 image files can be read \(first: .*a\.png"),
    "missing fashion-mnist": (lambda t: fashion_mnist.find_fashion_mnist(t / "nowhere"), FileNotFoundError,
                              r"Fashion-MNIST IDX files .* not found\. Looked in:"),
    "corrupt idx file": (lambda t: read_idx(_idx(t, b"GIF89a" + bytes(20))), ValueError, r"train-images-idx3-ubyte: bad IDX magic"),
    "truncated idx file": (lambda t: read_idx(_idx(t, bytes([0, 0, 8, 3, 0, 0, 0, 9, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2]))),
                           ValueError, r"IDX header says shape \[9, 28, 28\]"),
    "reversed crop scale": (lambda t: build_dataset("shapes", crop_scale=(0.8, 0.3)), ValueError, r"crop_scale=\(0\.8, 0\.3\)"),
    "zero limit": (lambda t: build_dataset("shapes", limit=0), ValueError, r"limit=0 must be None or an int >= 1"),
    "shapes too small": (lambda t: build_dataset("shapes", image_size=16, limit=4), ValueError, r"image_size=16 must be an int >= 32"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_clear_error_within_seconds(tmp_path: Path, monkeypatch, case: str) -> None:
    monkeypatch.delenv("JEPA_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    monkeypatch.setattr(fashion_mnist, "CACHE_DIR", tmp_path / "cache")
    call, error, message = CASES[case]
    t0 = time.perf_counter()
    with pytest.raises(error, match=message):
        call(tmp_path)
    assert time.perf_counter() - t0 < 5, "errors must come early, not after a long computation"


def test_each_case_expects_its_own_message():
    """No two cases accept the same message: each names what is wrong in its own input (a copied case, or a
    pattern loose enough to match any error, would fail here)."""
    patterns = [message for _, _, message in CASES.values()]
    assert len(set(patterns)) == len(patterns)
    assert all(len(p) >= 12 for p in patterns)


def test_nan_in_the_data_stops_at_the_first_step_and_says_so() -> None:
    from jepa_lite.core.train import train

    class NaNImages(torch.utils.data.Dataset):
        def __len__(self):
            return 32

        def __getitem__(self, i):
            return torch.full((1, 16, 16), float("nan")), 0

    c = apply_overrides(Config(), ["data.image_size=16", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
                                   "model.predictor_dim=16", "model.predictor_depth=1", "model.predictor_heads=2",
                                   "optim.global_batch=16", "mask.min_context=1"])  # fmt: skip
    t0 = time.perf_counter()
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 0 \(the batch holds NaN/inf pixels\)"):
        train(c, dataset=NaNImages(), progress=False)
    assert time.perf_counter() - t0 < 30
