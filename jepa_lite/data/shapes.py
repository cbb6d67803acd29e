"""ShapesWorld: synthetic images of circles, squares and triangles, rendered from a seed, with the labels the
low-level probes need (the dominant shape, how many shapes, where they are)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .fashion_mnist import _normaliser

SHAPES_CLASSES = ["circle", "square", "triangle"]


SHAPES_MEAN, SHAPES_STD = (0.119, 0.119, 0.119), (0.191, 0.191, 0.191)  # measured on ShapesWorld(10000)


class ShapesWorld(Dataset):
    """Procedural colour images of 1..max_objects shapes (circle, square, triangle) on a dark background.

    `__getitem__` gives `(image float [3, S, S] normalised, label)`, label = the dominant shape class (most
    frequent in the image; ties go to the class of the largest object). Attributes for low-level probes:
    `counts` (long [N], objects drawn, 1..max_objects) and `positions` (long [N], 3 x 3 cell index 0..8,
    raster order, of the largest object's pixel centroid). Objects never overlap, so every label matches the
    pixels. Deterministic given `seed`; images kept as uint8 `images [N, 3, S, S]`.
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

    Each object has a kind, a size s (area s^2, whatever the kind) and a centre; of `tries` draws of (s,
    centre) the first whose circumcircle keeps a 1-px gap to those already placed wins (if none does, the
    object is dropped and not counted), so objects never overlap.
    """
    g = torch.Generator().manual_seed(seed)
    k_max = max_objects
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

    active, r_kept, c_kept = _place(centre, radius, want)
    ids, areas, centroids = _rasterise(kind, active, radii=r_kept, centres=c_kept, size=size)
    palette = torch.cat([background, colour], 1)  # [n, 1 + k_max, 3]
    pixels = palette.gather(1, ids.long().view(n, -1, 1).expand(-1, -1, 3))  # [n, S*S, 3]
    images = (pixels * 255).round().to(torch.uint8).transpose(1, 2).reshape(n, 3, size, size).contiguous()

    counts = active.sum(1)
    label = dominant_shape(kind, active, areas)
    largest = torch.where(active, areas, -1.0).argmax(1, keepdim=True)
    cy, cx = centroids.gather(1, largest[..., None].expand(-1, 1, 2)).squeeze(1).unbind(-1)
    positions = _cell(cy, size) * 3 + _cell(cx, size)
    return images, label, counts, positions


def _place(centre: Tensor, radius: Tensor, want: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Place objects one slot at a time, vectorised over images and tries: for each image and slot the first
    try (centre [n, k_max, tries, 2], radius [n, k_max, tries]) whose circle keeps a 1-px gap to those already
    placed. Returns (placed [n, k_max] bool, their radii [n, k_max], their centres [n, k_max, 2])."""
    n, k_max = radius.shape[:2]
    every = torch.arange(n)
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
    return active, r_kept, c_kept


def _rasterise(kind: Tensor, active: Tensor, *, radii: Tensor, centres: Tensor, size: int):
    """Rasterise each placed object once (only its own kind) into an object-id map [n, S, S] (0 = background,
    slot + 1 elsewhere); also each object's area [n, k_max] and pixel centroid [n, k_max, 2]."""
    n, k_max = active.shape
    img_i, slot = active.nonzero(as_tuple=True)  # [m]
    obj_kind, obj_r, obj_c = kind[img_i, slot], radii[img_i, slot], centres[img_i, slot]
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
    return ids, areas, centroids


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
    """Pixel masks `[m, S, S]` of m shapes of one kind, inscribed in circles of
    radius r [m] at centres c [m, 2]."""
    dy = pix.view(1, -1, 1) - c[:, 0].view(-1, 1, 1)
    dx = pix.view(1, 1, -1) - c[:, 1].view(-1, 1, 1)
    r = r.view(-1, 1, 1)
    if kind == 0:  # circle
        return dy**2 + dx**2 <= r**2
    if kind == 1:  # square, axis-aligned, half-side r / sqrt(2)
        return torch.maximum(dy.abs(), dx.abs()) <= r * 0.70711
    # equilateral triangle pointing up: apex at dy = -r, base at dy = r / 2
    return (dy <= r / 2) & (dx.abs() <= (dy + r) * 0.57735)
