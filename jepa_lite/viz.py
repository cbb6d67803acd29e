"""Figures for the notebooks: masks on images, coverage heatmaps, size histograms, patches, positions, curves.

Every function draws with matplotlib and returns the `Figure` (so a notebook ends the line with `;`, and a
test can inspect the axes). Images are expected normalised, `[C, H, W]`; they are rescaled to [0, 1] per
image for display. Masks follow the batch contract of `jepa_lite.masks` (raster patch indices).
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
from torch import Tensor

from .masks import _as_grid, masks_to_grid

CONTEXT_COLOR = (0.12, 0.47, 0.71)  # blue
TARGET_COLORS = [(0.89, 0.10, 0.11), (1.0, 0.50, 0.0), (0.20, 0.63, 0.17), (0.58, 0.40, 0.74),
                 (0.65, 0.34, 0.16), (0.97, 0.51, 0.75), (0.50, 0.50, 0.50), (0.74, 0.74, 0.13)]  # fmt: skip

__all__ = [
    "mask_label_map",
    "image_to_display",
    "plot_mask_overlay",
    "plot_mask_grid",
    "plot_mask_panels",
    "plot_coverage",
    "plot_size_histograms",
    "plot_patches",
    "plot_sincos_positions",
    "plot_curves",
    "plot_experiment_summary",
    "plot_accuracy_vs_compute",
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
    """One image with its context (blue) and target blocks (one colour each): context_idx [Kc], target_idx [M, Kt]."""
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.4))
    _draw_masks(axes[0], image, context_idx, target_idx, grid, title="context (blue) + targets")
    _draw_masks(axes[1], None, context_idx, target_idx, grid, title="on the patch grid")
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
    """The masks of the first n rows of a batch, context_idx [B, Kc], target_idx [B, M, Kt], optionally on images."""
    n = min(n, context_idx.shape[0])
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.1 * ncols, 2.2 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        title = titles[i] if titles is not None else None
        _draw_masks(ax, None if images is None else images[i], context_idx[i], target_idx[i], grid, title)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    _mask_legend(fig, target_idx.shape[1])
    return fig


def _mask_legend(fig: Figure, n_targets: int) -> None:
    """A legend under the panels: context, each target block, and patches that are neither (left as is)."""
    from matplotlib.patches import Patch

    cmap = _label_cmap(n_targets)
    handles = [Patch(facecolor=cmap(1), edgecolor="0.5", label="context")]
    handles += [
        Patch(facecolor=cmap(2 + m), edgecolor="0.5", label=f"target {m + 1}") for m in range(n_targets)
    ]
    handles.append(Patch(facecolor="none", edgecolor="0.5", label="neither (not seen, not predicted)"))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 6),
               fontsize=7, frameon=False)  # fmt: skip


def plot_mask_panels(
    panels: Mapping[str, tuple[Tensor, Tensor]],
    grid,
    *,
    image: Tensor | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Several mask sets side by side, {name: (context_idx [Kc], target_idx [M, Kt])}, e.g. one per strategy."""
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9), squeeze=False)
    for ax, (name, (ctx, tgt)) in zip(axes[0], panels.items()):
        _draw_masks(ax, image, ctx, tgt, grid, title=name)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_coverage(maps: Mapping[str, Tensor], *, title: str | None = None, cmap: str = "viridis") -> Figure:
    """Heatmaps [H, W] side by side with one shared colour scale, e.g. how often each patch is in the context."""
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
    """Histograms of context sizes and target-block sizes (patches, or fractions of the grid if num_patches)."""
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


def plot_curves(
    history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]],
    keys: Sequence[str] | None = None,
    *,
    x: str | None = "step",
    logy: Sequence[str] = ("loss",),
    title: str | None = None,
) -> Figure:
    """Loss and schedule curves, one small panel per key; `history` is {key: values} or a list of row dicts."""
    if not isinstance(history, Mapping):
        rows = list(history)
        names = list(dict.fromkeys(k for row in rows for k in row))
        history = {k: [row.get(k, float("nan")) for row in rows] for k in names}
    if keys is None:
        keys = [k for k in history if k != x]
    if not keys:
        raise ValueError(f"no curves to plot: history has keys {list(history)}")
    steps = history[x] if x in history else range(len(history[keys[0]]))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.7), squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = np.asarray(history[key], dtype=float)
        ax.plot(list(steps)[: len(values)], values, lw=1.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel(x or "index")
        if key in logy and np.all(values[np.isfinite(values)] > 0):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- training, EMA and collapse plots (notebooks 03-05) ---

__all__ += [
    "plot_nuisance",
    "hide_patches",
    "plot_image_rows",
    "plot_energy",
    "markdown_table",
    "plot_step_costs",
    "ema_trace",
    "plot_ema_trace",
    "plot_collapse_lab",
    "plot_training_curves",
    "plot_probe_bars",
]

METHOD_COLORS = {"ijepa": "tab:blue", "mae": "tab:orange", "invariant": "tab:green", "ema": "tab:blue",
                 "online_stopgrad": "tab:orange", "online": "tab:red"}  # fmt: skip


def hide_patches(images: Tensor, keep_idx: Tensor, patch_size: int, fill: float | None = None) -> Tensor:
    """Images [B, C, H, W] with every patch not listed in keep_idx [B, K] set to `fill` (default: a mid grey
    halfway between the batch's min and max, so hidden patches differ from a visible dark background)."""
    b, c, h, w = images.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"image size {h}x{w} must be divisible by patch_size={patch_size}")
    gh, gw = h // patch_size, w // patch_size
    keep = masks_to_grid(keep_idx, (gh, gw))  # [B, gh, gw]
    pixel_keep = keep.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2)[:, None]
    value = (images.min() + images.max()) / 2 if fill is None else torch.as_tensor(fill, dtype=images.dtype)
    return torch.where(pixel_keep.to(images.device), images, value)


def plot_image_rows(rows: Mapping[str, Tensor], *, n: int = 6, title: str | None = None) -> Figure:
    """Rows of images side by side, {row name: images [B, C, H, W]}: e.g. originals and two augmented views.
    Each row is scaled to [0, 1] with its own min and max, so brightness changes within a row stay visible."""
    if not rows:
        raise ValueError("rows is empty; pass {name: images [B, C, H, W]}")
    n = min([n, *(len(v) for v in rows.values())])
    fig, axes = plt.subplots(len(rows), n, figsize=(1.35 * n + 0.9, 1.45 * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        x = images[:n].detach().float().cpu()
        x = ((x - x.min()) / (x.max() - x.min()).clamp_min(1e-8)).clamp(0, 1)
        for i in range(n):
            ax = axes[r, i]
            arr = x[i, 0].numpy() if x.shape[1] == 1 else x[i].permute(1, 2, 0).numpy()
            ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(pad=0.3, w_pad=0.2, h_pad=0.3, rect=(0, 0, 1, 0.93 if title else 1))
    return fig


def _thumbnails(ax, images: Tensor, axis: str, cell_pt: float, room_pt: float) -> None:
    """Draw images [N, C, H, W] next to the rows (axis 'y') or above the columns (axis 'x') of a heatmap
    whose cells are `cell_pt` points wide, using at most `room_pt` points across the heatmap's edge."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    for i, image in enumerate(images):
        arr = image_to_display(image)
        h, w = arr.shape[:2]
        if axis == "y":  # one thumbnail left of each row
            zoom = min(0.92 * cell_pt / h, room_pt / w)
            xy, xycoords, offset = (0, i), ("axes fraction", "data"), (-(zoom * w / 2 + 3), 0)
        else:  # one thumbnail above each column
            zoom = min(0.92 * cell_pt / w, room_pt / h)
            xy, xycoords, offset = (i, 1), ("data", "axes fraction"), (0, zoom * h / 2 + 3)
        box = OffsetImage(arr, zoom=zoom, cmap="gray" if arr.ndim == 2 else None)
        ab = AnnotationBbox(
            box, xy, xycoords=xycoords, xybox=offset, boxcoords="offset points", frameon=False
        )
        ax.add_artist(ab)


def plot_energy(
    matrices: Mapping[str, Tensor],
    *,
    x_images: Tensor | None = None,
    y_images: Tensor | None = None,
    title: str | None = None,
) -> Figure:
    """Energy matrices E[i, j] = E(x_i, y_j) side by side on one colour scale (low = compatible), with the
    x inputs drawn along the rows and the y inputs along the columns of the first panel if given."""
    arrays = {k: torch.as_tensor(v).detach().float().cpu().numpy() for k, v in matrices.items()}
    if not arrays or any(a.ndim != 2 for a in arrays.values()):
        raise ValueError("matrices must be a non-empty mapping of 2-D energy matrices [N, N]")
    vmax = max(max(float(a.max()) for a in arrays.values()), 1e-8)
    k = len(arrays)
    side, left, gap, top, bottom, bar = 2.6, 0.9, 0.45, 0.95, 0.45, 0.9  # inches
    width = left + k * side + (k - 1) * gap + bar
    height = bottom + side + top
    fig = plt.figure(figsize=(width, height))
    im = None
    for j, (name, arr) in enumerate(arrays.items()):
        ax = fig.add_axes(((left + j * (side + gap)) / width, bottom / height, side / width, side / height))
        im = ax.imshow(arr, cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest", aspect="auto")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(name, fontsize=9)
        if j == 0:
            cell = side * 72 / max(arr.shape)
            if x_images is not None:
                _thumbnails(ax, x_images[: arr.shape[0]], "y", cell, 0.75 * left * 72)
            else:
                ax.set_ylabel("x_i", fontsize=9)
            if y_images is not None:
                _thumbnails(ax, y_images[: arr.shape[1]], "x", cell, 0.6 * top * 72)
    cax = fig.add_axes(((width - bar + 0.15) / width, bottom / height, 0.12 / width, side / height))
    fig.colorbar(im, cax=cax, label="energy")
    if title:
        fig.text(0.5, 1 - 0.12 / height, title, ha="center", va="top", fontsize=10)
    return fig


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None, *, digits: int = 3) -> str:
    """A Markdown table of row dicts (floats to `digits` significant digits, bools as yes/no), for
    `IPython.display.Markdown`: it renders in Jupyter and on code hosts alike."""
    rows = list(rows)
    if not rows:
        raise ValueError("rows is empty; nothing to tabulate")
    columns = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))

    def cell(v) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:.{digits}g}" if abs(v) < 10**digits else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def plot_step_costs(
    costs: Mapping[str, float], *, unit: str = "ms per step", title: str | None = None
) -> Figure:
    """Horizontal bars of a cost per method ({name: value}), labelled with the values."""
    names, values = list(costs), [float(v) for v in costs.values()]
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(names) + 1.0))
    colors = [METHOD_COLORS.get(n.lower().replace("-", ""), "tab:gray") for n in names]
    bars = ax.barh(names, values, color=colors)
    ax.bar_label(bars, labels=[f"{v:.0f}" for v in values], padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_xlim(0, max(values) * 1.18 if values and max(values) > 0 else 1)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def ema_trace(values: Tensor | Sequence[float], momentum: float | Sequence[float]) -> Tensor:
    """Exponential moving average of a sequence [T]: e_0 = x_0, e_t = m_t * e_{t-1} + (1 - m_t) * x_t,
    the rule of the target encoder applied to numbers; `momentum` is a float or a per-step schedule [T]."""
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    m = torch.as_tensor(momentum, dtype=torch.float64).flatten()
    if m.numel() == 1:
        m = m.expand(len(x))
    if len(m) != len(x):
        raise ValueError(f"momentum schedule has {len(m)} values but the sequence has {len(x)}")
    if len(m) and not bool(((m >= 0) & (m <= 1)).all()):
        raise ValueError(f"momentum must lie in [0, 1], got values in [{m.min():.3g}, {m.max():.3g}]")
    out = torch.empty_like(x)
    e = x[0] if len(x) else None
    for t in range(len(x)):
        e = m[t] * e + (1 - m[t]) * x[t]
        out[t] = e
    return out.float()


def plot_ema_trace(
    signal: Tensor, traces: Mapping[str, Tensor], *, clean: Tensor | None = None, title: str | None = None
) -> Figure:
    """A noisy signal [T] (grey), its clean version if given (dashed) and EMA traces {label: [T]} over it."""
    fig, ax = plt.subplots(figsize=(7.5, 3.0))
    steps = np.arange(len(signal))
    ax.plot(steps, np.asarray(signal, dtype=float), color="0.75", lw=0.8, label="online weight (noisy)")
    if clean is not None:
        ax.plot(steps, np.asarray(clean, dtype=float), color="black", lw=1, ls="--", label="trend")
    for k, (label, trace) in enumerate(traces.items()):
        # tab10 colours: no trace can be mistaken for the black dashed trend
        ax.plot(steps, np.asarray(trace, dtype=float), lw=1.8, color=plt.cm.tab10(k % 10), label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


COLLAPSE_TITLES = {"loss": "training loss", "rankme": "RankMe (effective rank)", "feature_std": "feature std"}


def plot_collapse_lab(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    keys: Sequence[str] = ("loss", "rankme", "feature_std"),
    *,
    logy: Sequence[str] = ("loss", "feature_std"),
    styles: Mapping[str, dict] | None = None,
    title: str | None = None,
) -> Figure:
    """One panel per metric, one line per run: curves = {run: {"step": [...], metric: [...]}}, one legend
    below. `styles` gives extra matplotlib kwargs per run (e.g. a dashed line for a secondary encoder)."""
    if not curves:
        raise ValueError("curves is empty; pass {run name: {'step': [...], metric: [...]}}")
    styles = styles or {}
    fig, axes = plt.subplots(1, len(keys), figsize=(3.7 * len(keys), 3.3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for run, c in curves.items():
            if key not in c:
                continue
            style = dict(color=METHOD_COLORS.get(run.split(" ")[0], None), lw=1.6) | dict(styles.get(run, {}))
            ax.plot(c["step"][: len(c[key])], c[key], label=run, **style)
        ax.set_title(COLLAPSE_TITLES.get(key, key), fontsize=10)
        ax.set_xlabel("step")
        if key in logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


CURVE_TITLES = {"loss": "loss", "lr": "learning rate", "wd": "weight decay", "momentum": "EMA momentum"}
PROBE_NAMES = {"linear_probe": "linear probe", "knn": "k-NN", "low_shot": "1% low-shot"}


def plot_training_curves(
    history: Sequence[Mapping[str, float]],
    keys: Sequence[str] = ("loss", "lr", "wd", "momentum"),
    *,
    smooth: float | None = None,
    title: str | None = None,
) -> Figure:
    """Per-step curves of a run (`TrainResult.history`, a list of row dicts): the loss raw and EMA-smoothed on a
    log scale, then the schedules. `smooth` is the smoothing momentum; None picks ~1/40 of the run as window."""
    rows = list(history)
    if not rows:
        raise ValueError("history is empty; train for at least one step")
    if smooth is None:
        smooth = 1.0 - 1.0 / max(1.0, len(rows) / 40)
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 2.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = np.asarray([r[key] for r in rows], dtype=float)
        if key == "loss":
            ax.plot(steps, values, color="0.7" if smooth > 0 else "tab:blue", lw=0.8, label="per step")
            if smooth > 0:
                ax.plot(steps, ema_trace(values, smooth).numpy(), color="tab:blue", lw=1.6, label="smoothed")
                ax.legend(fontsize=8)
            ax.set_yscale("log")
        else:
            ax.plot(steps, values, color="tab:blue", lw=1.6)
            if 0 < np.abs(values).max() < 1e-2:  # small values (lr): 5.0e-04 on the ticks, no offset text
                from matplotlib.ticker import FormatStrFormatter

                ax.yaxis.set_major_formatter(FormatStrFormatter("%.1e"))
        ax.set_title(CURVE_TITLES.get(key, key), fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_probe_bars(
    results: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = ("linear_probe", "knn", "low_shot"),
    *,
    chance: float | None = None,
    title: str | None = None,
    errors: Mapping[str, Mapping[str, float]] | None = None,
) -> Figure:
    """Grouped bars of probe accuracies (%): results = {encoder: {metric: value}}, one group per metric,
    the legend to the right; `errors` (same layout, e.g. std over seeds) draws error bars."""
    names = list(results)
    if not names:
        raise ValueError("results is empty; pass {encoder name: {metric: accuracy}}")
    width = 0.8 / len(names)
    x = np.arange(len(metrics))
    fig, ax = plt.subplots(figsize=(1.9 * len(metrics) + 3.4, 3.2))
    for k, name in enumerate(names):
        vals = [float(results[name].get(m, np.nan)) for m in metrics]
        err = [float(errors.get(name, {}).get(m, 0.0)) for m in metrics] if errors else None
        bars = ax.bar(x + (k - (len(names) - 1) / 2) * width, vals, width, label=name, yerr=err, capsize=2)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in vals], fontsize=7, padding=2)
    if chance is not None:
        ax.axhline(chance, color="black", ls=":", lw=1, label="chance")
    ax.set_xticks(x, [PROBE_NAMES.get(m, m) for m in metrics])
    ax.set_ylabel("accuracy (%)")
    top = max(float(results[n].get(m, 0) or 0) for n in names for m in metrics)
    ax.set_ylim(0, min(100, top * 1.1 + 3))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_experiment_summary(summary: Mapping[str, Sequence[Mapping]], metric: str = "linear_probe") -> Figure:
    """One panel per experiment group: horizontal bars of `metric` (mean, std over seeds as error bars) for
    each row of `summary` (the format of `jepa_lite.experiments.summarize`); rows not run are left empty."""
    groups = [g for g, rows in summary.items() if rows]
    if not groups:
        raise ValueError("summary has no groups with rows")
    n_cols = min(4, len(groups))
    n_rows = math.ceil(len(groups) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 2.6 * n_rows), squeeze=False)
    for ax, g in zip(axes.flat, groups, strict=False):
        rows = list(summary[g])[::-1]  # first row on top
        means = [r[metric]["mean"] if metric in r else np.nan for r in rows]
        stds = [r[metric]["std"] if metric in r else 0.0 for r in rows]
        y = np.arange(len(rows))
        ax.barh(y, np.nan_to_num(means), xerr=stds, color="tab:blue", alpha=0.8, capsize=2)
        finite = [m for m in means if not math.isnan(m)]
        lo = max(0.0, min(finite) - 10) if finite else 0.0
        ax.set_xlim(lo, max(finite) + 6 if finite else 100)
        for yi, m, sd in zip(y, means, stds, strict=True):
            ax.text(lo if math.isnan(m) else m + sd, yi, " not run" if math.isnan(m) else f"  {m:.1f}",
                    va="center", fontsize=7, color="0.5" if math.isnan(m) else "black")  # fmt: skip
        ax.set_yticks(y, [r["name"] for r in rows], fontsize=7)
        ax.set_title(g.replace("_", " "), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    fig.supxlabel(f"{PROBE_NAMES.get(metric, metric)} (%)", fontsize=9)
    fig.tight_layout()
    return fig


METHOD_NAMES = {"ijepa": "I-JEPA", "mae": "MAE", "invariant": "Invariant (InfoNCE)"}


def plot_accuracy_vs_compute(
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    metrics: Sequence[str] = ("linear_probe", "knn"),
    *,
    baselines: Mapping[str, Mapping[str, float]] | None = None,
    title: str | None = None,
) -> Figure:
    """Probe accuracy against training minutes: one line per entry of `curves` ({label: [{"train_minutes": t,
    metric: accuracy, ...}, ...]}, e.g. the snapshots of a course checkpoint's card), and a dashed horizontal
    line per entry of `baselines` ({label: {metric: accuracy}}, e.g. the random-init encoder). The
    course-scale version of the paper's Figure 1 (linear evaluation against pretraining GPU hours)."""
    if not curves:
        raise ValueError("curves is empty; pass {label: [{'train_minutes': t, metric: accuracy}, ...]}")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for label, points in curves.items():
            x = [p["train_minutes"] for p in points]
            y = [p[metric] for p in points]
            ax.plot(x, y, marker="o" if len(x) > 1 else "*", ms=5 if len(x) > 1 else 11, label=label)
            ax.annotate(
                f"{y[-1]:.1f}", (x[-1], y[-1]), textcoords="offset points", xytext=(4, -3), fontsize=7
            )
        for k, (label, values) in enumerate((baselines or {}).items()):
            ax.axhline(values[metric], ls="--", lw=1, color=f"{0.25 + 0.25 * k:.2f}", label=label)
        ax.set_xlabel("training time (minutes)")
        ax.set_ylabel(f"{PROBE_NAMES.get(metric, metric)} (%)")
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_nuisance(rows: Sequence[Mapping], metrics: Sequence[str] = ("linear_probe", "knn")) -> Figure:
    """Accuracy against the strength of label-irrelevant detail: one panel per metric and kind of detail
    ("noise", "stripes"), one line per method, error bars the std over seeds. `rows` are the `nuisance` group
    of results/summary.json, named "METHOD, clean" or "METHOD, KIND STRENGTH"; the clean row is strength 0
    of both kinds. Rows not run yet are left out (a method with none is not drawn)."""
    points: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for row in rows:
        method, setting = row["name"].rsplit(", ", 1)
        if not row.get("n"):
            continue
        kinds = ("noise", "stripes") if setting == "clean" else (setting.split()[0],)
        strength = 0.0 if setting == "clean" else float(setting.split()[1])
        for kind in kinds:
            for metric in metrics:
                stats = row[metric]
                points.setdefault((method, kind, metric), []).append((strength, stats["mean"], stats["std"]))
    if not points:
        raise ValueError("no nuisance row has been run yet: `python scripts/reproduce.py --groups nuisance`")
    methods = list(dict.fromkeys(m for m, _, _ in points))
    fig, axes = plt.subplots(len(metrics), 2, figsize=(8.4, 3.0 * len(metrics)), squeeze=False)
    for r, metric in enumerate(metrics):
        for c, kind in enumerate(("noise", "stripes")):
            ax = axes[r, c]
            for k, method in enumerate(methods):
                pts = sorted(points.get((method, kind, metric), []))
                if pts:
                    x, y, e = zip(*pts, strict=True)
                    ax.errorbar(x, y, yerr=e, marker="o", ms=4, capsize=2, color=f"C{k}", label=method)
            ax.set_title(
                f"{kind}: {'unpredictable' if kind == 'noise' else 'predictable'} detail", fontsize=9
            )
            ax.set_xlabel("strength (peak grey level of the detail, 0 = clean)", fontsize=8)
            ax.set_ylabel(f"{PROBE_NAMES.get(metric, metric)} (%)", fontsize=8)
            ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig
