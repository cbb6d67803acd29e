"""Fashion-MNIST from its IDX files: where to find them (Debian's `dataset-fashion-mnist`, $JEPA_DATA, a
cache) and an in-memory dataset that keeps the 70,000 images as one uint8 tensor and normalises per item."""

from __future__ import annotations

import gzip
import math
import os
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

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
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


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
    """(base folder or None if unset, why it is looked at), in search order:
    root, $JEPA_DATA, Debian, cache."""
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


DOWNLOAD_TIMEOUT = 30  # seconds a connection may stay silent before the download gives up


def _download_fashion_mnist(cache: Path) -> Path:
    """Download Fashion-MNIST with torchvision into `cache/FashionMNIST/raw` (needs internet): four files,
    about 30 MB, each checked against torchvision's MD5 sum, with a progress bar."""
    from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

    print(f"Fashion-MNIST not found locally: downloading it into {cache} (about 30 MB)", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)  # a firewall that drops packets fails instead of hanging
    try:
        TorchvisionFashionMNIST(str(cache), train=True, download=True)  # fetches all four files
    finally:
        socket.setdefaulttimeout(previous)
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
            where = Path(root).expanduser() if root is not None else Path(CACHE_DIR)
            error = f"the download into {where} failed (is the internet reachable?): {type(e).__name__}: {e}"
    raise FileNotFoundError(
        "Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
        "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) not found. Looked in:\n"
        + "\n".join(looked)
        + (f"\n{error}" if error else "")
        + (
            "\nFix: point --data / data.root at a folder that holds the four files, or leave it unset to "
            f"search ${ENV_VAR}, the Debian package and the cache."
            if root is not None
            else "\nFix one of: `sudo apt-get install dataset-fashion-mnist`; pass the folder (--data FOLDER "
            f"or root=FOLDER); set {ENV_VAR}=FOLDER; or download=True (needs internet)."
        )
    )


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
        """Whole dataset at once, no transform: images float `[N, 1, S, S]`
        normalised and padded, labels `[N]`."""
        n, s, lo = len(self), self.image_size, self._lo
        out = self._shift.expand(n, 1, s, s).clone()
        for start in range(0, n, 8192):  # chunks keep the temporary small
            view = out[start : start + 8192, 0, lo : lo + 28, lo : lo + 28]
            view.copy_(self.images[start : start + 8192]).mul_(self._scale[0]).add_(self._shift[0])
        return out, self.targets.clone()
