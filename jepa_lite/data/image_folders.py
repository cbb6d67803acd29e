"""Image folders (ImageNet's layout, or one subfolder per class) that convert every image to RGB and skip
unreadable files instead of crashing a long run."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

SCAN_LIMIT = 200_000  # image folders up to this size are checked file by file when built (~50 us a file)


def load_rgb(path: str | Path):
    """Open an image file as RGB: grayscale, RGBA, palette (with or without transparency), CMYK and 16-bit
    images are converted; raises (OSError, ValueError, ...) if the file is not a readable image."""
    with open(path, "rb") as f:
        img = Image.open(f)
        img.load()
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit grayscale: map 0..65535 to 0..255, not clip
        arr = np.asarray(img, dtype=np.float64)
        scale = 1 / 257 if arr.size and arr.max() > 255 else 1.0  # 8-bit values stored wide stay as they are
        img = Image.fromarray(np.round(arr * scale).clip(0, 255).astype(np.uint8))
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # PIL's recommended path for palette transparency
    return img.convert("RGB")


class RobustImageFolder(ImageFolder):
    """torchvision's ImageFolder that converts every image to RGB and skips unreadable files instead of
    crashing a run.

    With `scan=True` its `is_valid_file` opens every file's header once, and the unreadable ones are left out
    with one warning naming the count and the first file. A file that still fails to decode when loaded
    (truncated pixel data) is replaced by the next readable image, with a warning naming it. Skipped paths
    are listed in `skipped`."""

    def __init__(self, root: str | Path, transform: Callable | None = None, scan: bool = True) -> None:
        bad: list[tuple[str, str]] = []

        def readable(path: str) -> bool:
            if not has_file_allowed_extension(path, IMG_EXTENSIONS):
                return False
            if not scan:
                return True
            try:
                with Image.open(path) as img:  # header only: catches empty, garbage and mislabelled files
                    img.size  # noqa: B018
                return True
            except Exception as err:  # noqa: BLE001 - PIL raises many types for garbage
                bad.append((path, f"{type(err).__name__}: {err}"))
                return False

        super().__init__(
            str(root), transform=transform, loader=load_rgb, is_valid_file=readable, allow_empty=True
        )
        self.skipped = [p for p, _ in bad]
        if not self.samples:
            first = f" (first: {bad[0][0]}: {bad[0][1]})" if bad else ""
            raise FileNotFoundError(
                f"image folder {self.root}: none of its {len(bad)} image files can be read{first}"
            )
        if bad:
            warnings.warn(
                f"image folder {self.root}: skipped {len(bad)} unreadable image file(s) of "
                f"{len(bad) + len(self.samples)} (first: {bad[0][0]}: {bad[0][1]})",
                stacklevel=4,
            )

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        n = len(self.samples)
        for k in range(n):
            try:
                return super().__getitem__((index + k) % n)
            except Exception as err:  # noqa: BLE001 - a truncated or corrupt file: use the next image
                path = self.samples[(index + k) % n][0]
                if path not in self.skipped:
                    self.skipped.append(path)
                    warnings.warn(
                        f"skipping unreadable image file {path} ({type(err).__name__}: {err}); "
                        f"{len(self.skipped)} skipped so far in this process",
                        stacklevel=2,
                    )
        raise FileNotFoundError(f"image folder {self.root}: no image file can be read")


def _image_folder(root: str | Path | None, train: bool, transform):
    if root is None:
        raise ValueError("root=None: dataset 'imagefolder' needs root, a folder with one subfolder per class")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist (or is not a folder)")
    split = root / ("train" if train else "val")
    # ImageNet layout root/{train,val}/CLASS/*.JPEG, or simply root/CLASS/*
    folder = split if split.is_dir() else root
    classes = [d for d in sorted(folder.iterdir()) if d.is_dir()]
    n_images = sum(f.suffix.lower() in IMG_EXTENSIONS for d in classes for f in d.rglob("*"))
    if not n_images:
        raise FileNotFoundError(
            f"image folder {folder} has no images in class subfolders (expected {folder}/CLASS_NAME/IMAGE "
            f"with extensions {', '.join(IMG_EXTENSIONS)}); found {len(classes)} subfolders"
        )
    return RobustImageFolder(folder, transform=transform, scan=n_images <= SCAN_LIMIT)
