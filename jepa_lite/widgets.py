"""The interactive mask explorer of notebook 01: sliders over the multi-block mask geometry.

`mask_explorer_data` is the pure function (masks + statistics for one setting, tested directly);
`mask_explorer` wraps it with `ipywidgets.interactive` and draws overlays and statistics. Headless, the
widget renders its default once; set `.value` on a child slider to redraw (that is how the tests drive it).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from .masks import masks_to_grid, sample_masks
from .viz import plot_mask_grid

__all__ = ["mask_explorer_data", "format_stats", "mask_explorer"]


def mask_explorer_data(
    grid: int = 8,
    *,
    target_scale: tuple[float, float] = (0.15, 0.2),
    target_aspect: tuple[float, float] = (0.75, 1.5),
    n_targets: int = 4,
    context_scale: tuple[float, float] = (0.85, 1.0),
    batch_size: int = 256,
    seed: int = 0,
) -> dict:
    """Sample one batch of multi-block masks and summarise it.

    Returns a dict with `context_idx [B, Kc]`, `target_idx [B, M, Kt]`, `grid (H, W)` and the statistics
    `context_len` (Kc), `target_len` (Kt), `block_h`/`block_w` (target block size, shared by the batch),
    `context_fraction` (Kc / N), `target_fraction` (patches in any target / N, mean over the batch),
    `coverage` [H, W] (how often each patch is in the context) and `error` (None, or a readable message
    when the setting is invalid, in which case the masks are None).
    """
    out = dict(grid=(grid, grid) if isinstance(grid, int) else tuple(grid), context_idx=None, target_idx=None)
    try:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be an int >= 1")
        g = torch.Generator().manual_seed(int(seed))
        context_idx, target_idx = sample_masks(
            batch_size,
            grid,
            n_targets=n_targets,
            target_scale=tuple(target_scale),
            target_aspect=tuple(target_aspect),
            context_scale=tuple(context_scale),
            generator=g,
        )
    except (ValueError, RuntimeError) as err:
        out["error"] = f"{type(err).__name__}: {err}"
        return out
    H, W = out["grid"]
    n = H * W
    in_target = masks_to_grid(target_idx, (H, W)).any(dim=1)  # [B, H, W]
    kt = target_idx.shape[-1]
    rows = target_idx[0, 0] // W
    out.update(
        context_idx=context_idx,
        target_idx=target_idx,
        error=None,
        context_len=context_idx.shape[1],
        target_len=kt,
        block_h=int(rows.max() - rows.min() + 1),
        block_w=kt // int(rows.max() - rows.min() + 1),
        context_fraction=context_idx.shape[1] / n,
        target_fraction=float(in_target.float().mean(dim=(1, 2)).mean()),
        coverage=masks_to_grid(context_idx, (H, W)).float().mean(dim=0),
    )
    return out


def format_stats(data: dict) -> str:
    """One readable paragraph of the statistics from `mask_explorer_data` (or its error message)."""
    if data.get("error"):
        return f"Invalid setting, nothing drawn.\n{data['error']}"
    H, W = data["grid"]
    return (
        f"grid {H}x{W} = {H * W} patches | {data['target_idx'].shape[1]} target blocks of "
        f"{data['block_h']}x{data['block_w']} = {data['target_len']} patches | context Kc = "
        f"{data['context_len']} ({data['context_fraction']:.0%} of the grid) | targets cover "
        f"{data['target_fraction']:.0%} of an image on average"
    )


def _draw(data: dict, images: Tensor | None, n_show: int) -> None:
    print(format_stats(data))
    if data.get("error"):
        return
    same_grid = images is not None and images.shape[-1] % data["grid"][1] == 0
    shown = images[:n_show] if same_grid else None
    fig = plot_mask_grid(
        data["context_idx"], data["target_idx"], data["grid"], images=shown, n=n_show, ncols=n_show
    )
    plt.show()
    plt.close(fig)


def mask_explorer(images: Tensor | None = None, *, n_show: int = 4, batch_size: int = 256, seed: int = 0):
    """An `ipywidgets.interactive` over `mask_explorer_data`: sliders for target scale and aspect ranges,
    number of targets, context scale and grid size; overlays on `images` [B, C, H, W] if given.

    The returned widget's `.result` is the latest `mask_explorer_data` dict; its children are the sliders
    (in the order above) and the output area (fixed height).
    """
    import ipywidgets as w

    style = dict(description_width="110px")
    layout = w.Layout(width="460px")
    common = dict(continuous_update=False, style=style, layout=layout)
    sliders = dict(
        target_scale=w.FloatRangeSlider(value=(0.15, 0.2), min=0.02, max=0.6, step=0.01, description="target scale", **common),
        target_aspect=w.FloatRangeSlider(value=(0.75, 1.5), min=0.2, max=4.0, step=0.05, description="target aspect", **common),
        n_targets=w.IntSlider(value=4, min=1, max=8, description="targets M", **common),
        context_scale=w.FloatRangeSlider(value=(0.85, 1.0), min=0.2, max=1.0, step=0.01, description="context scale", **common),
        grid=w.IntSlider(value=8, min=2, max=16, description="grid size", **common),
    )  # fmt: skip

    def update(target_scale, target_aspect, n_targets, context_scale, grid):
        data = mask_explorer_data(
            grid,
            target_scale=target_scale,
            target_aspect=target_aspect,
            n_targets=n_targets,
            context_scale=context_scale,
            batch_size=batch_size,
            seed=seed,
        )
        _draw(data, images, n_show)
        return data

    widget = w.interactive(update, **sliders)
    widget.children[-1].layout.height = "330px"
    return widget


# --- training, EMA and collapse plots (notebooks 03-05) ---

__all__ += ["ema_explorer_data", "format_ema_stats", "ema_explorer"]


def ema_explorer_data(
    momentum: float = 0.9, *, noise: float = 0.5, n_steps: int = 600, jump_at: int = 100, seed: int = 0
) -> dict:
    """The EMA rule on one number: a noisy 'online weight' that jumps from 0 to 1 at `jump_at`, and its EMA.

    Returns `signal`, `clean` and `ema` [T]; `window` = 1 / (1 - m) (the averaging window, inf for m = 1);
    `lag` = steps after the jump until the EMA of the clean signal covers 63% of the jump (None if it never
    does within the run); `noise_left` = std of (EMA - clean) just before the jump, against `noise`.
    """
    import math

    from .viz import ema_trace  # imported here: this block is appended to the mask explorer's module

    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum {momentum} must lie in [0, 1]")
    if noise < 0:
        raise ValueError(f"noise {noise} must be >= 0")
    if not 2 <= jump_at < n_steps:
        raise ValueError(f"jump_at {jump_at} must lie in [2, n_steps={n_steps})")
    g = torch.Generator().manual_seed(int(seed))
    clean = (torch.arange(n_steps) >= jump_at).float()
    signal = clean + noise * torch.randn(n_steps, generator=g)
    ema = ema_trace(signal, momentum)
    follow = ema_trace(clean, momentum)[jump_at:]
    reached = (follow >= 1 - math.exp(-1)).nonzero()
    before = (ema - clean)[jump_at // 2 : jump_at]
    return dict(
        signal=signal,
        clean=clean,
        ema=ema,
        momentum=float(momentum),
        noise=float(noise),
        window=math.inf if momentum == 1.0 else 1.0 / (1.0 - momentum),
        lag=int(reached[0]) + 1 if len(reached) else None,
        noise_left=float(before.std()),
    )


def format_ema_stats(data: dict) -> str:
    """One line on what the momentum does: averaging window, lag behind a jump, noise left."""
    lag = f"{data['lag']} steps" if data["lag"] is not None else "never (within the run)"
    return (
        f"momentum {data['momentum']:.3f}: averaging window 1/(1-m) = {data['window']:.0f} steps | follows "
        f"63% of a jump after {lag} | noise std {data['noise']:.2f} -> {data['noise_left']:.3f}"
    )


def ema_explorer(*, n_steps: int = 600, jump_at: int = 100, seed: int = 0):
    """An `ipywidgets.interactive` over `ema_explorer_data`: sliders for the momentum and the noise; redraws
    the noisy signal and its EMA. `.result` is the latest data dict; children: the two sliders, the output."""
    import ipywidgets as w

    from .viz import plot_ema_trace

    common = dict(
        continuous_update=False, style=dict(description_width="90px"), layout=w.Layout(width="460px")
    )
    sliders = dict(
        momentum=w.FloatSlider(value=0.9, min=0.0, max=0.999, step=0.001, readout_format=".3f", description="momentum m", **common),
        noise=w.FloatSlider(value=0.5, min=0.0, max=2.0, step=0.05, description="noise std", **common),
    )  # fmt: skip

    def update(momentum, noise):
        data = ema_explorer_data(momentum, noise=noise, n_steps=n_steps, jump_at=jump_at, seed=seed)
        print(format_ema_stats(data))
        fig = plot_ema_trace(data["signal"], {f"EMA, m = {momentum:.3f}": data["ema"]}, clean=data["clean"])
        plt.show()
        plt.close(fig)
        return data

    widget = w.interactive(update, **sliders)
    widget.children[-1].layout.height = "360px"
    return widget
