"""Figures of masks and patches: masks on images, coverage heatmaps, block-size histograms, the patch grid,
and the sin-cos positions.

Every function draws with matplotlib and returns the `Figure` (so a notebook ends the line with `;`, and a
test can inspect the axes). Images are expected normalised, `[C, H, W]`; they are rescaled to [0, 1] per
image for display. Masks follow the batch contract of `jepa_lite.core.masks` (raster patch indices).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor

from ..core.masks import _as_grid, masks_to_grid

CONTEXT_COLOR = (0.12, 0.47, 0.71)  # blue
TARGET_COLORS = [
    (0.89, 0.10, 0.11),
    (1.0, 0.50, 0.0),
    (0.20, 0.63, 0.17),
    (0.58, 0.40, 0.74),
    (0.65, 0.34, 0.16),
    (0.97, 0.51, 0.75),
    (0.50, 0.50, 0.50),
    (0.74, 0.74, 0.13),
]


def mask_label_map(context_idx: Tensor, target_idx: Tensor, grid) -> np.ndarray:
    """One image's masks as a label map [H, W]: 0 unused, 1 context, 2+m target block m (targets win)."""
    H, W = _as_grid(grid)
    labels = np.zeros((H, W), dtype=np.int64)
    labels[masks_to_grid(context_idx[None], (H, W))[0].numpy()] = 1
    blocks = masks_to_grid(target_idx[None], (H, W))[0].numpy()  # [M, H, W]
    for m, block in enumerate(blocks):
        labels[block] = 2 + m
    return labels


def image_to_display(image: Tensor) -> np.ndarray:
    """Normalised image [C, H, W] -> array [H, W] (grey) or [H, W, 3] in [0, 1] for imshow."""
    x = image.detach().float().cpu()
    x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-8)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def _imshow(ax, image: Tensor | None, shape: tuple[int, int]) -> tuple[float, float]:
    """Draw the image (or a light background) and return the (height, width) extent used."""
    if image is None:
        ax.imshow(np.ones(shape), cmap="gray", vmin=0, vmax=1)
        return shape
    arr = image_to_display(image)
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1)
    return arr.shape[0], arr.shape[1]


def _label_cmap(n_targets: int) -> ListedColormap:
    colors = [(1, 1, 1, 0), (*CONTEXT_COLOR, 0.45)]
    colors += [(*TARGET_COLORS[m % len(TARGET_COLORS)], 0.6) for m in range(n_targets)]
    return ListedColormap(colors)


def _draw_masks(ax, image, context_idx, target_idx, grid, title=None) -> None:
    H, W = _as_grid(grid)
    ih, iw = _imshow(ax, image, (H, W))
    labels = mask_label_map(context_idx, target_idx, (H, W))
    m = target_idx.shape[0]
    extent = (-0.5, iw - 0.5, ih - 0.5, -0.5)
    ax.imshow(labels, cmap=_label_cmap(m), vmin=0, vmax=m + 1, interpolation="nearest", extent=extent)
    ph, pw = ih / H, iw / W
    for r in range(1, H):
        ax.axhline(r * ph - 0.5, color="white", lw=0.3, alpha=0.5)
    for c in range(1, W):
        ax.axvline(c * pw - 0.5, color="white", lw=0.3, alpha=0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def plot_mask_overlay(
    image: Tensor | None, context_idx: Tensor, target_idx: Tensor, grid, *, title: str | None = None
) -> Figure:
    """One image with its context (blue) and target blocks (one colour each):
    context_idx [Kc], target_idx [M, Kt]."""
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.4))
    _draw_masks(axes[0], image, context_idx, target_idx, grid=grid, title="context (blue) + targets")
    _draw_masks(axes[1], None, context_idx, target_idx, grid=grid, title="on the patch grid")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_mask_grid(
    context_idx: Tensor,
    target_idx: Tensor,
    grid,
    *,
    images: Tensor | None = None,
    n: int = 8,
    ncols: int = 4,
    titles: Sequence[str] | None = None,
    suptitle: str | None = None,
) -> Figure:
    """The masks of the first n rows of a batch, context_idx [B, Kc], target_idx [B,
    M, Kt], optionally on images."""
    n = min(n, context_idx.shape[0])
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.1 * ncols, 2.2 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        title = titles[i] if titles is not None else None
        _draw_masks(
            ax, None if images is None else images[i], context_idx[i], target_idx[i], grid=grid, title=title
        )
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    _mask_legend(fig, target_idx.shape[1])
    return fig


def _mask_legend(fig: Figure, n_targets: int) -> None:
    """A legend under the panels: context, each target block, and patches that are neither (left as is)."""
    cmap = _label_cmap(n_targets)
    handles = [Patch(facecolor=cmap(1), edgecolor="0.5", label="context")]
    handles += [
        Patch(facecolor=cmap(2 + m), edgecolor="0.5", label=f"target {m + 1}") for m in range(n_targets)
    ]
    handles.append(Patch(facecolor="none", edgecolor="0.5", label="neither (not seen, not predicted)"))
    fig.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(len(handles), 6),
        fontsize=7,
        frameon=False,
    )


def plot_mask_panels(
    panels: Mapping[str, tuple[Tensor, Tensor]],
    grid,
    *,
    image: Tensor | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Several mask sets side by side, {name: (context_idx [Kc], target_idx [M,
    Kt])}, e.g. one per strategy."""
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9), squeeze=False)
    for ax, (name, (ctx, tgt)) in zip(axes[0], panels.items()):
        _draw_masks(ax, image, ctx, tgt, grid=grid, title=name)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_coverage(maps: Mapping[str, Tensor], *, title: str | None = None, cmap: str = "viridis") -> Figure:
    """Heatmaps [H, W] side by side with one shared colour scale, e.g. how often
    each patch is in the context."""
    arrays = {k: torch.as_tensor(v).float().cpu().numpy() for k, v in maps.items()}
    vmin = min(float(a.min()) for a in arrays.values())
    vmax = max(float(a.max()) for a in arrays.values())
    fig, axes = plt.subplots(1, len(arrays), figsize=(3.3 * len(arrays) + 0.8, 3.3), squeeze=False)
    im = None
    for ax, (name, arr) in zip(axes[0], arrays.items()):
        im = ax.imshow(arr, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.85)
    if title:
        fig.suptitle(title)
    return fig


def plot_size_histograms(
    context_sizes: Tensor | Sequence[float],
    target_sizes: Tensor | Sequence[float],
    *,
    num_patches: int | None = None,
    title: str | None = None,
) -> Figure:
    """Histograms of context sizes and target-block sizes (patches, or fractions
    of the grid if num_patches)."""
    c = np.asarray(torch.as_tensor(context_sizes).float().cpu())
    t = np.asarray(torch.as_tensor(target_sizes).float().cpu())
    unit = "patches"
    if num_patches:
        c, t, unit = c / num_patches, t / num_patches, "fraction of the grid"
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.8))
    for ax, values, name, color in (
        (axes[0], c, "context", CONTEXT_COLOR),
        (axes[1], t, "target block", TARGET_COLORS[0]),
    ):
        sizes, counts = np.unique(values, return_counts=True)
        if len(sizes) <= 30:  # few distinct sizes (block sizes are whole patches): one bar per size
            width = 0.8 * (np.diff(sizes).min() if len(sizes) > 1 else 1.0)
            ax.bar(sizes, counts, width=width, color=color, alpha=0.8)
        else:
            ax.hist(values, bins=30, color=color, alpha=0.8)
        ax.axvline(values.mean(), color="black", ls="--", lw=1, label=f"mean {values.mean():.3g}")
        ax.set_xlabel(f"{name} size ({unit})")
        ax.set_ylabel("count")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_patches(image: Tensor, patch_size: int, *, max_tokens: int | None = None) -> Figure:
    """An image [C, H, W] with its patch grid, and the same patches laid out as a sequence of tokens."""
    c, h, w = image.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"image size {h}x{w} must be divisible by patch_size={patch_size}")
    gh, gw = h // patch_size, w // patch_size
    arr = image_to_display(image)
    n = gh * gw if max_tokens is None else min(max_tokens, gh * gw)
    fig = plt.figure(figsize=(10, 3.6))
    ax = fig.add_axes([0.02, 0.1, 0.3, 0.8])
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1)
    for k in range(1, gh):
        ax.axhline(k * patch_size - 0.5, color="red", lw=0.8)
    for k in range(1, gw):
        ax.axvline(k * patch_size - 0.5, color="red", lw=0.8)
    for r in range(gh):
        for col in range(gw):
            ax.text(
                col * patch_size + 0.2,
                r * patch_size + 1.2,
                str(r * gw + col),
                color="yellow",
                fontsize=5,
                path_effects=[patheffects.withStroke(linewidth=1.5, foreground="black")],  # readable on white
            )
    ax.set_title(f"{h}x{w} image, {gh}x{gw} grid of {patch_size}-px patches", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    # tokens: patches in raster order, wrapped into rows of gw
    per_row = 2 * gw
    rows = math.ceil(n / per_row)
    sub = fig.add_gridspec(
        rows, per_row, left=0.36, right=0.99, top=0.85, bottom=0.1, wspace=0.15, hspace=0.3
    )
    for i in range(n):
        r, col = divmod(i, gw)
        tile = arr[r * patch_size : (r + 1) * patch_size, col * patch_size : (col + 1) * patch_size]
        tax = fig.add_subplot(sub[i // per_row, i % per_row])
        tax.imshow(tile, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1)
        tax.set_xticks([])
        tax.set_yticks([])
        if i % per_row == 0:
            tax.set_ylabel(str(i), fontsize=6, rotation=0, labelpad=8)
    fig.text(
        0.67,
        0.92,
        f"the same image as a sequence of {gh * gw} tokens (raster order)",
        ha="center",
        fontsize=9,
    )
    return fig


def plot_sincos_positions(pos_embed: Tensor, grid, *, channels: Sequence[int] | None = None) -> Figure:
    """Fixed 2-D sin-cos positions [N, D]: a few channels as maps over the grid, the full [N, D] matrix,
    and the cosine similarity of three positions to every other one."""
    H, W = _as_grid(grid)
    pe = torch.as_tensor(pos_embed).float().cpu()
    if pe.ndim == 3:
        pe = pe[0]
    n, d = pe.shape
    if n != H * W:
        raise ValueError(f"pos_embed has {n} positions, grid {H}x{W} needs {H * W}")
    if channels is None:  # [row sin | row cos | col sin | col cos]: the two highest frequencies of the sines
        q = d // 4
        channels = [0, 2, q, 2 * q, 2 * q + 2, 3 * q]
    ncols = max(len(channels), 5)
    fig = plt.figure(figsize=(1.7 * ncols, 4.6))
    gs = fig.add_gridspec(2, ncols, height_ratios=(1, 1.3))
    for i, ch in enumerate(channels):
        ax = fig.add_subplot(gs[0, i])
        ax.imshow(pe[:, ch].view(H, W).numpy(), cmap="RdBu", vmin=-1, vmax=1)
        part = ("row sin", "row cos", "col sin", "col cos")[min(ch // max(d // 4, 1), 3)]
        ax.set_title(f"ch {ch} ({part})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(gs[1, : ncols - 3])
    ax.imshow(pe.numpy(), aspect="auto", cmap="RdBu", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xlabel("channel (row half | column half)", fontsize=8)
    ax.set_ylabel("position", fontsize=8)
    normed = torch.nn.functional.normalize(pe, dim=1)
    for j, p in enumerate([0, (H // 2) * W + W // 2, H * W - 1]):
        ax = fig.add_subplot(gs[1, ncols - 3 + j])
        ax.imshow((normed @ normed[p]).view(H, W).numpy(), cmap="magma")
        ax.plot(p % W, p // W, "c+", ms=8)
        ax.set_title(f"cos sim. to patch {p}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
