"""Plots of training: loss and schedule curves, images with patches hidden, the energy picture, step costs,
the EMA trace and the collapse lab."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from matplotlib.ticker import FormatStrFormatter
from torch import Tensor

from ..core.ema import ema_trace
from ..core.masks import masks_to_grid
from .masks import image_to_display


def plot_curves(
    history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]],
    keys: Sequence[str] | None = None,
    *,
    x: str | None = "step",
    logy: Sequence[str] = ("loss",),
    title: str | None = None,
) -> Figure:
    """Loss and schedule curves, one small panel per key; `history` is {key:
    values} or a list of row dicts."""
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


METHOD_COLORS = {
    "ijepa": "tab:blue",
    "mae": "tab:orange",
    "invariant": "tab:green",
    "ema": "tab:blue",
    "online_stopgrad": "tab:orange",
    "online": "tab:red",
}


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
                _thumbnails(ax, x_images[: arr.shape[0]], "y", cell, room_pt=0.75 * left * 72)
            else:
                ax.set_ylabel("x_i", fontsize=9)
            if y_images is not None:
                _thumbnails(ax, y_images[: arr.shape[1]], "x", cell, room_pt=0.6 * top * 72)
    cax = fig.add_axes(((width - bar + 0.15) / width, bottom / height, 0.12 / width, side / height))
    fig.colorbar(im, cax=cax, label="energy")
    if title:
        fig.text(0.5, 1 - 0.12 / height, title, ha="center", va="top", fontsize=10)
    return fig


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


def plot_training_curves(
    history: Sequence[Mapping[str, float]],
    keys: Sequence[str] = ("loss", "lr", "wd", "momentum"),
    *,
    smooth: float | None = None,
    title: str | None = None,
) -> Figure:
    """Per-step curves of a run (`TrainResult.history`, a list of row dicts): the loss raw and EMA-smoothed on
    a log scale, then the schedules. `smooth` is the smoothing momentum; None picks
    ~1/40 of the run as window."""
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
                ax.yaxis.set_major_formatter(FormatStrFormatter("%.1e"))
        ax.set_title(CURVE_TITLES.get(key, key), fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
