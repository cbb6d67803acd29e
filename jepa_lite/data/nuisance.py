"""Detail that has nothing to do with the label, added to Fashion-MNIST at a controllable strength.

The I-JEPA paper argues that predicting pixels wastes capacity on unpredictable, irrelevant detail, and that
predicting representations lets the model ignore it. Clean Fashion-MNIST has almost no such detail (a centred
garment on black), so the claim needs data that has some. Two kinds, both drawn only in the background so the
garment, and with it the label, is untouched:

* ``"noise"``: every background pixel gets an independent random grey level. No context can predict it.
* ``"stripes"``: each image gets a stripe pattern of its own random angle, period and phase. It is just as
  irrelevant to the label, but any few visible patches predict the rest of it.

    from jepa_lite.data.nuisance import with_nuisance
    train = with_nuisance(build_dataset("fmnist", train=True), "noise", 0.5, seed=0)

`strength` is the pattern's peak grey level as a fraction of white (0 gives back the clean images, exactly).
Everything is seeded per image, so a dataset and its probes see the same detail on every epoch and run.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor

from ..registry import NUISANCE_KINDS

__all__ = ["KINDS", "BACKGROUND", "nuisance_pattern", "background_mask", "add_nuisance", "with_nuisance"]

KINDS = NUISANCE_KINDS
BACKGROUND = 10  # uint8 grey level at or below which a Fashion-MNIST pixel counts as background
STRIPE_PERIODS = (3.0, 8.0)  # px: from fine stripes to a few bands across a 28-px image


def _check(kind: str, strength: float) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {', '.join(KINDS)}")
    if not isinstance(strength, (int, float)) or isinstance(strength, bool) or not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength={strength!r} must be a number in [0, 1] (0: clean images)")


def nuisance_pattern(n: int, size: int, kind: str, generator: torch.Generator) -> Tensor:
    """`n` patterns [n, size, size] with values in [0, 1]: i.i.d. noise, or one random stripe pattern each."""
    _check(kind, 1.0)
    if kind == "noise":
        return torch.rand(n, size, size, generator=generator)
    angle = math.pi * torch.rand(n, 1, 1, generator=generator)
    lo, hi = STRIPE_PERIODS
    period = lo + (hi - lo) * torch.rand(n, 1, 1, generator=generator)
    phase = 2 * math.pi * torch.rand(n, 1, 1, generator=generator)
    y, x = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    wave = (x * torch.cos(angle) + y * torch.sin(angle)) * (2 * math.pi / period) + phase
    return 0.5 + 0.5 * torch.cos(wave)


def background_mask(images: Tensor) -> Tensor:
    """bool [N, H, W]: the dark pixels (<= `BACKGROUND`) connected to the image border through dark pixels,
    i.e. the background around the garment, not the dark parts inside it (a flood fill from the border)."""
    dark = images <= BACKGROUND
    reached = torch.zeros_like(dark)
    for edge in (reached[:, 0], reached[:, -1], reached[:, :, 0], reached[:, :, -1]):
        edge.fill_(True)
    reached &= dark
    while True:  # grow through dark 4-neighbours until nothing changes (about H rounds)
        grown = reached.clone()
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown[:, :, 1:] |= reached[:, :, :-1]
        grown[:, :, :-1] |= reached[:, :, 1:]
        grown &= dark
        if torch.equal(grown, reached):
            return reached
        reached = grown


def add_nuisance(images: Tensor, kind: str, strength: float, seed: int = 0) -> Tensor:
    """uint8 images [N, H, W] with the background (`background_mask`) replaced by `strength` x the pattern of
    `kind`; image i's pattern depends only on (seed, i). The garment, dark parts included, is kept exactly."""
    _check(kind, strength)
    if images.dtype != torch.uint8 or images.ndim != 3:
        raise ValueError(f"images must be uint8 [N, H, W], got {images.dtype} {list(images.shape)}")
    if strength == 0:
        return images.clone()
    n, h, w = images.shape
    g = torch.Generator().manual_seed(int(seed))
    pattern = nuisance_pattern(n, max(h, w), kind, g)[:, :h, :w]
    level = (255 * strength * pattern).round().to(torch.uint8)
    return torch.where(background_mask(images), level, images)


def with_nuisance(dataset, kind: str, strength: float, seed: int = 0):
    """A copy of a Fashion-MNIST dataset (anything with uint8 `images` [N, 28, 28]) whose images carry the
    nuisance; labels, size and normalisation are unchanged, so training and probes read it as before.
    Use a different `seed` for the training and the test split."""
    if not hasattr(dataset, "images") or not isinstance(dataset.images, Tensor):
        raise ValueError(f"{type(dataset).__name__} has no uint8 `images` tensor to add detail to")
    out = copy.copy(dataset)  # shallow: the labels and settings are shared, the images are new
    out.images = add_nuisance(dataset.images, kind, strength, seed)
    return out
