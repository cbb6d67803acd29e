"""The I-JEPA architecture as a diagram (the paper's Figure 3), drawn by code so that it matches the package.

    from jepa_lite.diagrams import plot_ijepa_architecture
    plot_ijepa_architecture(image, context_idx, target_idx, grid=7);   # with one real image and its masks

Boxes are the networks of `core.methods.IJEPA` (context encoder, predictor, EMA target encoder); arrows
are the tensors between them, labelled with their shapes for a batch of B images, Kc context patches, M target
blocks of Kt patches each, width D (predictor width Dp).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from torch import Tensor

from .viz.masks import _draw_masks

__all__ = ["plot_ijepa_architecture"]

ENCODER_COLOR = (0.85, 0.91, 0.97)
PREDICTOR_COLOR = (0.99, 0.90, 0.80)
TARGET_COLOR = (0.90, 0.90, 0.90)
LOSS_COLOR = (0.96, 0.84, 0.84)


def _box(ax, xy: tuple[float, float], text: str, color, *, w: float = 0.2, h: float = 0.14) -> None:
    x, y = xy
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.01,rounding_size=0.02",
            facecolor=color,
            edgecolor="0.3",
            lw=1,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=8.5)


def _arrow(ax, start, end, text: str = "", *, style: str = "-", at=None, color="0.2") -> None:
    """An arrow drawn over the boxes, its label centred at `at` (default: just above its middle)."""
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=12,
            lw=1.1,
            ls=style,
            color=color,
            shrinkA=0,
            shrinkB=0,
            zorder=3,
        )
    )
    if text:
        at = at or ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.03)
        ax.text(*at, text, ha="center", va="center", fontsize=7, color="0.25")


def plot_ijepa_architecture(
    image: Tensor | None = None,
    context_idx: Tensor | None = None,
    target_idx: Tensor | None = None,
    grid=None,
    *,
    title: str | None = "I-JEPA: predict the representations of target blocks from one context block",
) -> Figure:
    """The I-JEPA training step as boxes and arrows; with `image` [C, H, W], `context_idx` [Kc] and
    `target_idx` [M, Kt] on `grid`, the input is drawn as that image with its context and target blocks."""
    fig = plt.figure(figsize=(10, 4.2))
    ax = fig.add_axes((0.0, 0.0, 1.0, 0.92 if title else 1.0))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    if image is not None:
        if context_idx is None or target_idx is None or grid is None:
            raise ValueError("pass context_idx, target_idx and grid with image, to draw its masks")
        inset = fig.add_axes((0.005, 0.3, 0.14, 0.34))
        _draw_masks(inset, image, context_idx, target_idx, grid=grid, title="image x")
    else:
        _box(ax, (0.075, 0.5), "image x\n(patches)", "white", w=0.12, h=0.2)

    _draw_ijepa_paths(ax)
    # the loss
    _box(ax, (0.92, 0.5), "loss\nsmooth-L1\n(ŝ_y, s_y)", LOSS_COLOR, w=0.13, h=0.2)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _draw_ijepa_paths(ax) -> None:
    """The two paths of the I-JEPA diagram: context encoder and predictor above, the EMA target encoder
    below, and the EMA link between the encoders."""
    top, bottom = 0.76, 0.24
    # context path: x_c -> context encoder -> s_x -> predictor (+ mask tokens) -> s_hat_y
    _arrow(ax, (0.16, 0.55), (0.25, top), "context block x_c", at=(0.215, top + 0.045))
    _box(ax, (0.35, top), "context encoder\nf_θ (ViT)", ENCODER_COLOR)
    _arrow(ax, (0.45, top), (0.56, top), "s_x  [B, Kc, D]")
    _box(ax, (0.66, top), "predictor g_φ\n(narrow ViT)", PREDICTOR_COLOR)
    ax.text(
        0.66,
        top + 0.13,
        "+ mask tokens: one shared\nvector + target positions",
        ha="center",
        va="bottom",
        fontsize=7,
        color="0.25",
    )
    _arrow(ax, (0.76, top), (0.855, 0.58), "ŝ_y  [B·M, Kt, D]", at=(0.85, top))
    # target path: whole image -> EMA target encoder -> layer norm -> s_y at the target blocks
    _arrow(ax, (0.16, 0.45), (0.25, bottom), "whole image x", at=(0.17, bottom - 0.03))
    _box(ax, (0.35, bottom), "target encoder\nf_θ̄ (EMA of f_θ)", TARGET_COLOR)
    _arrow(
        ax,
        (0.45, bottom),
        (0.855, 0.42),
        "layer norm, keep the M target blocks:  s_y  [B·M, Kt, D]",
        at=(0.66, 0.22),
    )
    ax.text(0.62, 0.37, "stop-gradient", ha="center", fontsize=7.5, color=(0.7, 0.1, 0.1), style="italic")
    # the EMA link between the two encoders
    _arrow(ax, (0.35, top - 0.075), (0.35, bottom + 0.075), "", style="--", color=(0.35, 0.35, 0.7))
    ax.text(
        0.36,
        0.5,
        "θ̄ ← m·θ̄ + (1 − m)·θ\n(no gradient; m: 0.996 → 1)",
        ha="left",
        va="center",
        fontsize=7.5,
        color=(0.25, 0.25, 0.6),
    )
