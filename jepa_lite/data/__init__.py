"""Datasets by name: `build_dataset` reads Fashion-MNIST (fashion_mnist.py), ShapesWorld (shapes.py),
CIFAR-10, STL-10 (torchvision) and image folders (image_folders.py); nuisance.py draws label-irrelevant
detail into the background, for the test of representations against pixels.

Every dataset returns `(image float [C, S, S] normalised, int label)`. The two small in-memory datasets
(`FashionMNIST`, `ShapesWorld`) keep their pixels as one uint8 tensor, normalise per item (~20 us), and offer
`tensors()`, the whole set as one float tensor for fast feature extraction. Larger datasets come from
torchvision with the paper's only augmentation, RandomResizedCrop(scale=(0.3, 1.0)).
"""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset, Subset
from torchvision import datasets
from torchvision import transforms as T

from .. import registry
from . import fashion_mnist
from .fashion_mnist import FMNIST_MEAN, FMNIST_STD, FashionMNIST
from .image_folders import _image_folder
from .shapes import SHAPES_MEAN, SHAPES_STD, ShapesWorld

DATASETS = registry.DATASETS


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

_INFO = {  # native image size; num_classes None = read from the folder
    "fmnist": dict(in_chans=1, image_size=28, num_classes=10, mean=(FMNIST_MEAN,), std=(FMNIST_STD,)),
    "shapes": dict(in_chans=3, image_size=32, num_classes=3, mean=SHAPES_MEAN, std=SHAPES_STD),
    "cifar10": dict(in_chans=3, image_size=32, num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD),
    "stl10": dict(in_chans=3, image_size=96, num_classes=10, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "imagefolder": dict(in_chans=3, image_size=224, num_classes=None, mean=IMAGENET_MEAN, std=IMAGENET_STD),
}


def dataset_info(name: str) -> dict:
    """`{in_chans, image_size (native), num_classes, mean, std}` of a dataset name in `DATASETS`."""
    _check_name(name)
    return dict(_INFO[name])


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset name {name!r}; valid names: {', '.join(DATASETS)}")


# ----------------------------------------------------------------------------------------------------------
# build_dataset: one entry point for configs and scripts


def _torchvision_root(root: str | Path | None) -> Path:
    if root is not None:
        return Path(root).expanduser()
    return (
        Path(os.environ[fashion_mnist.ENV_VAR]).expanduser()
        if os.environ.get(fashion_mnist.ENV_VAR)
        else Path(fashion_mnist.CACHE_DIR)
    )


def _image_transform(train: bool, image_size: int, crop_scale, mean, std, native: int):
    """Train: RandomResizedCrop(scale=crop_scale) (the paper's only augmentation);
    eval: resize + centre crop."""
    if train and crop_scale is not None:
        resize = [T.RandomResizedCrop(image_size, scale=tuple(crop_scale))]
    elif native >= 224:  # ImageNet-style eval: resize the short side to S * 256 / 224, then centre crop S
        resize = [T.Resize(int(image_size * 256 / 224)), T.CenterCrop(image_size)]
    else:  # small native images (cifar10, stl10): resize the whole image
        resize = [T.Resize(image_size), T.CenterCrop(image_size)]
    return T.Compose([*resize, T.ToTensor(), T.Normalize(mean, std)])


def build_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    train: bool = True,
    image_size: int | None = None,
    crop_scale: tuple[float, float] | None = (0.3, 1.0),
    download: bool | None = None,
    limit: int | None = None,
) -> Dataset:
    """Dataset by name (see `DATASETS`); every item is `(image float [C, S, S] normalised, int label)`.

    `crop_scale` is the RandomResizedCrop scale of the training split of natural-image sets (cifar10, stl10,
    imagefolder); None turns cropping off. fmnist and shapes are never cropped (a crop would break the
    count/position labels; use the dataset's `transform` for that). ShapesWorld uses seed 0 for train and 1
    for test; `limit` keeps the first N items (ShapesWorld: generates N). `download=None` (the default)
    fetches Fashion-MNIST into the cache when no `root` is given and no local copy is found (a machine
    without internet gets the not-found error at once); True downloads any torchvision set into `root`.
    """
    _check_name(name)
    info = _INFO[name]
    image_size = info["image_size"] if image_size is None else image_size
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size={image_size!r} must be a positive int or None (native size)")
    if crop_scale is not None and not (len(crop_scale) == 2 and 0 < crop_scale[0] <= crop_scale[1] <= 1):
        raise ValueError(f"crop_scale={crop_scale!r} must be (lo, hi) with 0 < lo <= hi <= 1, or None")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r} must be None or an int >= 1")

    if name == "fmnist":
        fetch = (root is None) if download is None else download  # never download into a folder you named
        return FashionMNIST(root, train=train, image_size=image_size, download=fetch, limit=limit)
    download = bool(download)
    if name == "shapes":
        n = limit if limit is not None else (10000 if train else 5000)
        return ShapesWorld(n, image_size=image_size, seed=0 if train else 1)

    transform = _image_transform(
        train, image_size, crop_scale, info["mean"], std=info["std"], native=info["image_size"]
    )
    if name == "imagefolder":
        dataset = _image_folder(root, train, transform)
    else:
        folder = _torchvision_root(root)
        try:
            if name == "cifar10":
                dataset = datasets.CIFAR10(str(folder), train=train, transform=transform, download=download)
            else:  # stl10: the 5,000 labelled training images (the 100k unlabelled split has label -1)
                split = "train" if train else "test"
                dataset = datasets.STL10(str(folder), split=split, transform=transform, download=download)
        except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
            raise FileNotFoundError(
                f"{name} not found under {folder} ({e}); pass root=FOLDER / --data FOLDER, set "
                f"{fashion_mnist.ENV_VAR}, or download=True (needs internet)"
            ) from e
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    return dataset


__all__ = ["DATASETS", "build_dataset", "dataset_info"]
