"""Datasets: Fashion-MNIST from IDX files, ShapesWorld (synthetic, with count/position labels), image folders.

Every dataset returns `(image float [C, S, S] normalised, int label)`. The two small in-memory datasets
(`FashionMNIST`, `ShapesWorld`) keep their pixels as one uint8 tensor, normalise per item (~20 us), and offer
`tensors()`, the whole set as one float tensor for fast feature extraction. Larger datasets come from
torchvision with the paper's only augmentation, RandomResizedCrop(scale=(0.3, 1.0)).
"""

from __future__ import annotations

import gzip
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

DATASETS = ("fmnist", "shapes", "cifar10", "stl10", "imagefolder")

# where find_fashion_mnist looks (module attributes, so tests and users can redirect them)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist
CACHE_DIR = Path.home() / ".cache" / "jepa_lite"
ENV_VAR = "JEPA_DATA"

FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
FMNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

SHAPES_CLASSES = ["circle", "square", "triangle"]
SHAPES_MEAN, SHAPES_STD = (0.119, 0.119, 0.119), (0.191, 0.191, 0.191)  # measured on ShapesWorld(10000)

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
# IDX files and where to find Fashion-MNIST

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> Tensor:
    """Read an IDX file (MNIST format; gzipped or raw, detected from its first bytes) into a tensor.

    Fashion-MNIST images come back as uint8 `[N, 28, 28]`, labels as uint8 `[N]`.
    """
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        magic = data[:4].hex() if len(data) >= 4 else repr(data)
        raise ValueError(
            f"{path}: bad IDX magic number 0x{magic}; an IDX file starts with 0x0000TTDD "
            f"(TT = type code, 08 for uint8; DD = number of dimensions). Is this an IDX file?"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{path}: IDX header says shape {dims} ({expected} bytes) but the file has {len(data)}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def _idx_file(folder: Path, name: str) -> Path | None:
    """The raw or gzipped file `name` in `folder`, raw preferred (faster to read); None if neither."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _fmnist_bases(root: str | Path | None) -> list[tuple[Path | None, str]]:
    """(base folder or None if unset, why it is looked at), in search order: root, $JEPA_DATA, Debian, cache."""
    if root is not None:  # an explicit folder is used or rejected, never silently replaced by another copy
        return [(Path(root).expanduser(), "root argument")]
    env = os.environ.get(ENV_VAR)
    bases: list[tuple[Path | None, str]] = []
    bases.append((Path(env).expanduser() if env else None, f"${ENV_VAR}"))
    bases.append((Path(DEBIAN_FASHION_MNIST), "Debian package dataset-fashion-mnist"))
    bases.append((Path(CACHE_DIR), "jepa_lite cache"))
    return bases


def _missing_files(folder: Path) -> list[str]:
    names = [n for pair in FMNIST_FILES.values() for n in pair]
    return [f"{n}[.gz]" for n in names if _idx_file(folder, n) is None]


def _download_fashion_mnist(cache: Path) -> Path:
    """Download Fashion-MNIST with torchvision into `cache/FashionMNIST/raw` (needs internet)."""
    from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

    cache.mkdir(parents=True, exist_ok=True)
    TorchvisionFashionMNIST(str(cache), train=True, download=True)  # fetches all four files
    return cache / "FashionMNIST" / "raw"


def find_fashion_mnist(root: str | Path | None = None, *, download: bool = False) -> Path:
    """Folder holding the four Fashion-MNIST IDX files (raw or .gz).

    A given `root` is the only place looked at (itself, its `fashion-mnist/` and torchvision-style
    `FashionMNIST/raw/` subfolders): a wrong path is an error, not a silent fall-back to another copy. Without
    one, looks in order at `$JEPA_DATA`, `/usr/share/datasets/fashion-mnist` and `~/.cache/jepa_lite`. Then,
    if `download=True`, downloads with torchvision (into `root`, else the cache). Else FileNotFoundError
    listing every place and what was missing there.
    """
    looked = []
    for base, why in _fmnist_bases(root):
        if base is None:
            looked.append(f"  - {why}: not set")
            continue
        for folder in (base, base / "fashion-mnist", base / "FashionMNIST" / "raw"):
            if not folder.is_dir():
                looked.append(f"  - {folder} ({why}): no such folder")
                continue
            missing = _missing_files(folder)
            if not missing:
                return folder
            looked.append(f"  - {folder} ({why}): missing {', '.join(missing)}")
    error = None
    if download:
        try:
            folder = _download_fashion_mnist(Path(root).expanduser() if root is not None else Path(CACHE_DIR))
            if not _missing_files(folder):
                return folder
            error = f"the download into {folder} left {', '.join(_missing_files(folder))} missing"
        except Exception as e:  # no internet, proxy, disk full: report it with the places we looked
            error = f"the torchvision download into {CACHE_DIR} failed: {type(e).__name__}: {e}"
    raise FileNotFoundError(
        "Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
        "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) not found. Looked in:\n"
        + "\n".join(looked)
        + (f"\n{error}" if error else "")
        + (
            "\nFix: point --data / data.root at a folder that holds the four files, or leave it unset to "
            f"search ${ENV_VAR}, the Debian package and the cache."
            if root is not None
            else "\nFix one of: `sudo apt-get install dataset-fashion-mnist`; pass the folder (--data FOLDER or "
            f"root=FOLDER); set {ENV_VAR}=FOLDER; or download=True (needs internet)."
        )
    )


# ----------------------------------------------------------------------------------------------------------
# in-memory datasets


def _normaliser(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[Tensor, Tensor]:
    """(scale, shift) `[C, 1, 1]` with `uint8 * scale + shift == (uint8 / 255 - mean) / std`."""
    mean_t, std_t = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
    return 1.0 / (255.0 * std_t), -mean_t / std_t


class FashionMNIST(Dataset):
    """Fashion-MNIST from IDX files: `(image float [1, S, S] normalised, label int)`.

    All pixels stay in one uint8 tensor `images [N, 28, 28]`; if `image_size` S > 28 the normalised image is
    zero-padded (with the background value) centred to S x S, e.g. 32 for an 8 x 8 grid of 4-px patches.
    `transform`, if given, is applied to the normalised tensor in `__getitem__` (not in `tensors()`).
    """

    def __init__(
        self,
        root: str | Path | None = None,
        train: bool = True,
        image_size: int = 28,
        download: bool = False,
        limit: int | None = None,
        transform: Callable[[Tensor], Tensor] | None = None,
    ):
        if not isinstance(image_size, int) or image_size < 28:
            raise ValueError(
                f"image_size={image_size!r} must be an int >= 28 (images are padded, never resized)"
            )
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit={limit!r} must be None or an int >= 1")
        folder = find_fashion_mnist(root, download=download)
        image_name, label_name = FMNIST_FILES["train" if train else "test"]
        images, targets = read_idx(_idx_file(folder, image_name)), read_idx(_idx_file(folder, label_name))
        if images.ndim != 3 or images.shape[1:] != (28, 28) or targets.shape != images.shape[:1]:
            raise ValueError(
                f"{folder}: unexpected shapes images {list(images.shape)}, labels {list(targets.shape)}"
            )
        if limit is not None:
            images, targets = images[:limit].clone(), targets[:limit].clone()
        self.images: Tensor = images  # uint8 [N, 28, 28]
        self.targets: Tensor = targets.long()  # [N]
        self.classes = list(FMNIST_CLASSES)
        self.root, self.train, self.image_size, self.transform = folder, train, image_size, transform
        self.mean, self.std = (FMNIST_MEAN,), (FMNIST_STD,)
        self._scale, self._shift = _normaliser(self.mean, self.std)
        # top/left padding; the extra pixel of an odd padding goes right/bottom
        self._lo = (image_size - 28) // 2
        self._labels = self.targets.tolist()  # python ints: faster than .item() per sample

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        out = self._shift.expand(1, self.image_size, self.image_size).clone()  # background = normalised 0
        view = out[:, self._lo : self._lo + 28, self._lo : self._lo + 28]
        view.copy_(self.images[i]).mul_(self._scale).add_(self._shift)
        if self.transform is not None:
            out = self.transform(out)
        return out, self._labels[i]

    def tensors(self) -> tuple[Tensor, Tensor]:
        """Whole dataset at once, no transform: images float `[N, 1, S, S]` normalised and padded, labels `[N]`."""
        n, s, lo = len(self), self.image_size, self._lo
        out = self._shift.expand(n, 1, s, s).clone()
        for start in range(0, n, 8192):  # chunks keep the temporary small
            view = out[start : start + 8192, 0, lo : lo + 28, lo : lo + 28]
            view.copy_(self.images[start : start + 8192]).mul_(self._scale[0]).add_(self._shift[0])
        return out, self.targets.clone()


class ShapesWorld(Dataset):
    """Procedural colour images of 1..max_objects shapes (circle, square, triangle) on a dark background.

    `__getitem__` gives `(image float [3, S, S] normalised, label)`, label = the dominant shape class (most
    frequent in the image; ties go to the class of the largest object). Attributes for low-level probes:
    `counts` (long [N], objects drawn, 1..max_objects) and `positions` (long [N], 3 x 3 cell index 0..8, raster
    order, of the largest object's pixel centroid). Objects never overlap, so every label matches the pixels.
    Deterministic given `seed`; images kept as uint8 `images [N, 3, S, S]`.
    """

    def __init__(
        self,
        n: int = 10000,
        image_size: int = 32,
        seed: int = 0,
        max_objects: int = 4,
        transform: Callable[[Tensor], Tensor] | None = None,
    ):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r} must be an int >= 1")
        if not isinstance(image_size, int) or image_size < 32:
            raise ValueError(
                f"image_size={image_size!r} must be an int >= 32 (smaller shapes become ambiguous)"
            )
        if not isinstance(max_objects, int) or not 1 <= max_objects <= 6:
            raise ValueError(f"max_objects={max_objects!r} must be an int in [1, 6]")
        self.image_size, self.seed, self.max_objects = image_size, seed, max_objects
        self.transform = transform
        drawn = render_shapes(n, image_size, seed, max_objects)
        self.images, self.targets, self.counts, self.positions = drawn  # uint8 [N, 3, S, S], long [N] x 3
        self.classes = list(SHAPES_CLASSES)
        self.mean, self.std = SHAPES_MEAN, SHAPES_STD
        self._scale, self._shift = _normaliser(self.mean, self.std)
        self._labels = self.targets.tolist()

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        out = self.images[i].float().mul_(self._scale).add_(self._shift)
        if self.transform is not None:
            out = self.transform(out)
        return out, self._labels[i]

    def tensors(self) -> tuple[Tensor, Tensor]:
        """Whole dataset at once, no transform: images float `[N, 3, S, S]` normalised, labels `[N]`."""
        return self.images.float().mul_(self._scale).add_(self._shift), self.targets.clone()


# circumradius / sqrt(area) of each shape, so that a shape of size s has area s^2 whatever its kind
_CIRCUMRADIUS = torch.tensor([1 / math.sqrt(math.pi), 1 / math.sqrt(2), 1 / math.sqrt(3 * math.sqrt(3) / 4)])


def render_shapes(
    n: int, size: int, seed: int, max_objects: int, tries: int = 64
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Draw `n` ShapesWorld images: (uint8 [n, 3, S, S], dominant class [n], counts [n], positions [n]).

    Each object has a kind, a size s (area s^2, whatever the kind) and a centre; of `tries` draws of (s, centre)
    the first whose circumcircle keeps a 1-px gap to those already placed wins (if none does, the object is
    dropped and not counted), so objects never overlap.
    """
    g = torch.Generator().manual_seed(seed)
    k_max, every = max_objects, torch.arange(n)
    # every random number is drawn up front, in a fixed order: the result depends on the seed only
    want = torch.randint(1, k_max + 1, (n,), generator=g)  # objects asked for
    kind = torch.randint(0, 3, (n, k_max), generator=g)  # 0 circle, 1 square, 2 triangle
    # size = sqrt(area), 5.3 .. 7.7 px at 32 px (a smaller circle can rasterise to a filled square)
    side = size * (0.165 + 0.075 * torch.rand(n, k_max, tries, generator=g))
    radius = (side * _CIRCUMRADIUS[kind].unsqueeze(-1)).unsqueeze(-1)  # circumradius [n, k_max, tries, 1]
    centre = radius + (size - 2 * radius) * torch.rand(n, k_max, tries, 2, generator=g)  # inside the image
    radius = radius.squeeze(-1)
    colour = 0.3 + 0.7 * torch.rand(n, k_max, 3, generator=g)  # bright
    background = 0.12 * torch.rand(n, 1, 3, generator=g)  # dark

    # place objects one slot at a time, vectorised over images and tries
    active = torch.zeros(n, k_max, dtype=torch.bool)
    r_kept, c_kept = torch.zeros(n, k_max), torch.zeros(n, k_max, 2)
    for k in range(k_max):
        dist = (centre[:, k, :, None, :] - c_kept[:, None, :, :]).norm(dim=-1)  # [n, tries, k_max]
        clear = (dist >= radius[:, k, :, None] + r_kept[:, None, :] + 1.0) | ~active[:, None, :]
        ok = clear.all(-1)  # [n, tries]
        first = ok.int().argmax(1)  # first try that fits
        active[:, k] = (k < want) & ok.any(1)
        r_kept[:, k] = torch.where(active[:, k], radius[every, k, first], 0.0)
        c_kept[:, k] = torch.where(active[:, k, None], centre[every, k, first], 0.0)

    # rasterise each drawn object once (only its own kind), into an object-id map [n, S, S] (0 = background)
    img_i, slot = active.nonzero(as_tuple=True)  # [m]
    obj_kind, obj_r, obj_c = kind[img_i, slot], r_kept[img_i, slot], c_kept[img_i, slot]
    pix = torch.arange(size, dtype=torch.float32) + 0.5  # pixel centres
    ids = torch.zeros(n, size, size)  # float: index_add_ of float is the fast path
    areas, centroids = torch.zeros(n, k_max), torch.zeros(n, k_max, 2)
    for start in range(0, len(img_i), 8192):  # chunks bound the [m, S, S] temporaries
        chunk = slice(start, start + 8192)
        im, sl = img_i[chunk], slot[chunk]
        mask = torch.zeros(len(im), size, size)
        for c in range(3):
            sel = (obj_kind[chunk] == c).nonzero().squeeze(1)
            mask[sel] = _shape_mask(c, obj_r[chunk][sel], obj_c[chunk][sel], pix).float()
        per_row, per_col = mask.sum(2), mask.sum(1)  # [m, S] pixel counts
        area = per_row.sum(1)
        areas[im, sl] = area
        centroids[im, sl] = torch.stack([per_row @ pix, per_col @ pix], 1) / area.clamp(min=1)[:, None]
        ids.index_add_(0, im, mask * (sl + 1).view(-1, 1, 1).float())  # objects are disjoint: sum = union
    palette = torch.cat([background, colour], 1)  # [n, 1 + k_max, 3]
    pixels = palette.gather(1, ids.long().view(n, -1, 1).expand(-1, -1, 3))  # [n, S*S, 3]
    images = (pixels * 255).round().to(torch.uint8).transpose(1, 2).reshape(n, 3, size, size).contiguous()

    counts = active.sum(1)
    label = dominant_shape(kind, active, areas)
    largest = torch.where(active, areas, -1.0).argmax(1, keepdim=True)
    cy, cx = centroids.gather(1, largest[..., None].expand(-1, 1, 2)).squeeze(1).unbind(-1)
    positions = _cell(cy, size) * 3 + _cell(cx, size)
    return images, label, counts, positions


def dominant_shape(kind: Tensor, active: Tensor, areas: Tensor, num_classes: int = 3) -> Tensor:
    """Most frequent class among the active objects of each image, ties -> class of the largest tied object.

    kind [n, K] long, active [n, K] bool, areas [n, K] float -> label [n] long (each image needs an object).
    """
    per_class = torch.stack([((kind == c) & active).sum(1) for c in range(num_classes)], 1)  # [n, classes]
    tied = per_class == per_class.max(1, keepdim=True).values  # the most frequent classes
    score = torch.where(tied.gather(1, kind) & active, areas, -1.0)  # areas of the objects in them
    return kind.gather(1, score.argmax(1, keepdim=True)).squeeze(1)


def _cell(coord: Tensor, size: int) -> Tensor:
    """Index 0..2 of the third of [0, size] that holds `coord`."""
    return (coord * 3 / size).long().clamp(0, 2)


def _shape_mask(kind: int, r: Tensor, c: Tensor, pix: Tensor) -> Tensor:
    """Pixel masks `[m, S, S]` of m shapes of one kind, inscribed in circles of radius r [m] at centres c [m, 2]."""
    dy = pix.view(1, -1, 1) - c[:, 0].view(-1, 1, 1)
    dx = pix.view(1, 1, -1) - c[:, 1].view(-1, 1, 1)
    r = r.view(-1, 1, 1)
    if kind == 0:  # circle
        return dy**2 + dx**2 <= r**2
    if kind == 1:  # square, axis-aligned, half-side r / sqrt(2)
        return torch.maximum(dy.abs(), dx.abs()) <= r * 0.70711
    # equilateral triangle pointing up: apex at dy = -r, base at dy = r / 2
    return (dy <= r / 2) & (dx.abs() <= (dy + r) * 0.57735)


# ----------------------------------------------------------------------------------------------------------
# build_dataset: one entry point for configs and scripts


def _torchvision_root(root: str | Path | None) -> Path:
    if root is not None:
        return Path(root).expanduser()
    return Path(os.environ[ENV_VAR]).expanduser() if os.environ.get(ENV_VAR) else Path(CACHE_DIR)


def _image_transform(train: bool, image_size: int, crop_scale, mean, std, native: int):
    """Train: RandomResizedCrop(scale=crop_scale) (the paper's only augmentation); eval: resize + centre crop."""
    from torchvision import transforms as T

    if train and crop_scale is not None:
        resize = [T.RandomResizedCrop(image_size, scale=tuple(crop_scale))]
    elif native >= 224:  # ImageNet-style eval: resize the short side to S * 256 / 224, then centre crop S
        resize = [T.Resize(int(image_size * 256 / 224)), T.CenterCrop(image_size)]
    else:  # small native images (cifar10, stl10): resize the whole image
        resize = [T.Resize(image_size), T.CenterCrop(image_size)]
    return T.Compose([*resize, T.ToTensor(), T.Normalize(mean, std)])


SCAN_LIMIT = 200_000  # image folders up to this size are checked file by file when built (~50 us a file)


def load_rgb(path: str | Path):
    """Open an image file as RGB: grayscale, RGBA, palette (with or without transparency), CMYK and 16-bit
    images are converted; raises (OSError, ValueError, ...) if the file is not a readable image."""
    from PIL import Image

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


class RobustImageFolder(Dataset):
    """torchvision's ImageFolder (wrapped, same `samples`, `targets`, `classes`, `transform`) that converts
    every image to RGB and skips unreadable files instead of crashing a run.

    With `scan=True` it opens every file's header once and drops the unreadable ones with one warning naming
    the count and the first file. A file that still fails to decode when loaded (truncated pixel data) is
    replaced by the next readable image, with a warning naming it. Skipped paths are listed in `skipped`."""

    def __init__(self, root: str | Path, transform: Callable | None = None, scan: bool = True) -> None:
        from torchvision.datasets import ImageFolder

        self.folder = ImageFolder(str(root), transform=transform, loader=load_rgb)
        self.root, self.classes, self.class_to_idx = (
            self.folder.root,
            self.folder.classes,
            self.folder.class_to_idx,
        )
        self.skipped: list[str] = []
        if scan:
            self._scan()

    @property
    def samples(self) -> list[tuple[str, int]]:
        return self.folder.samples

    @property
    def targets(self) -> list[int]:
        return self.folder.targets

    @property
    def transform(self) -> Callable | None:
        return self.folder.transform

    def _scan(self) -> None:
        from PIL import Image

        good, bad = [], []
        for path, label in self.samples:
            try:
                with Image.open(path) as img:  # header only: catches empty, garbage and mislabelled files
                    img.size  # noqa: B018
                good.append((path, label))
            except Exception as err:  # noqa: BLE001 - PIL raises many types for garbage
                bad.append((path, f"{type(err).__name__}: {err}"))
        if not good:
            raise FileNotFoundError(
                f"image folder {self.root}: none of its {len(bad)} image files can be read "
                f"(first: {bad[0][0]}: {bad[0][1]})"
            )
        if bad:
            warnings.warn(
                f"image folder {self.root}: skipped {len(bad)} unreadable image file(s) of {len(self.samples)} "
                f"(first: {bad[0][0]}: {bad[0][1]})",
                stacklevel=4,
            )
            self.skipped = [p for p, _ in bad]
            self.folder.samples = self.folder.imgs = good
            self.folder.targets = [label for _, label in good]

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        n = len(self.folder)
        for k in range(n):
            try:
                return self.folder[(index + k) % n]
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
    from torchvision.datasets.folder import IMG_EXTENSIONS

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
            f"image folder {folder} has no images in class subfolders (expected {folder}/CLASS_NAME/IMAGE with "
            f"extensions {', '.join(IMG_EXTENSIONS)}); found {len(classes)} subfolders"
        )
    return RobustImageFolder(folder, transform=transform, scan=n_images <= SCAN_LIMIT)


def build_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    train: bool = True,
    image_size: int | None = None,
    crop_scale: tuple[float, float] | None = (0.3, 1.0),
    download: bool = False,
    limit: int | None = None,
) -> Dataset:
    """Dataset by name (see `DATASETS`); every item is `(image float [C, S, S] normalised, int label)`.

    `crop_scale` is the RandomResizedCrop scale of the training split of natural-image sets (cifar10, stl10,
    imagefolder); None turns cropping off. fmnist and shapes are never cropped (a crop would break the
    count/position labels; use the dataset's `transform` for that). ShapesWorld uses seed 0 for train and 1 for
    test; `limit` keeps the first N items (ShapesWorld: generates N).
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
        return FashionMNIST(root, train=train, image_size=image_size, download=download, limit=limit)
    if name == "shapes":
        n = limit if limit is not None else (10000 if train else 5000)
        return ShapesWorld(n, image_size=image_size, seed=0 if train else 1)

    transform = _image_transform(train, image_size, crop_scale, info["mean"], info["std"], info["image_size"])
    if name == "imagefolder":
        dataset = _image_folder(root, train, transform)
    else:
        from torchvision import datasets

        folder = _torchvision_root(root)
        try:
            if name == "cifar10":
                dataset = datasets.CIFAR10(str(folder), train=train, transform=transform, download=download)
            else:  # stl10: the 5,000 labelled training images (the 100k unlabelled split has label -1)
                split = "train" if train else "test"
                dataset = datasets.STL10(str(folder), split=split, transform=transform, download=download)
        except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
            raise FileNotFoundError(
                f"{name} not found under {folder} ({e}); pass root=FOLDER / --data FOLDER, set {ENV_VAR}, "
                "or download=True (needs internet)"
            ) from e
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    return dataset


__all__ = [
    "DATASETS",
    "FashionMNIST",
    "RobustImageFolder",
    "ShapesWorld",
    "build_dataset",
    "dataset_info",
    "dominant_shape",
    "find_fashion_mnist",
    "load_rgb",
    "read_idx",
    "render_shapes",
]
