"""The EMA explorer of notebook 04: a target that follows a signal by the EMA rule, with a momentum slider."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from ..core.ema import ema_trace, momentum_at
from ..core.masks import _check_int
from ..viz import plot_ema_trace
from .mask_explorer import _print_wrapped


def ema_explorer_data(
    momentum: float = 0.9, *, noise: float = 0.5, n_steps: int = 600, jump_at: int = 100, seed: int = 0
) -> dict:
    """The EMA rule on one number: a noisy 'online weight' that jumps from 0 to 1 at `jump_at`, and its EMA.

    Returns `signal`, `clean` and `ema` [T]; `window` = 1 / (1 - m) (the averaging window, inf for m = 1);
    `lag` = steps after the jump until the EMA of the clean signal covers 63% of the jump (None if it never
    does within the run); `noise_left` = std of (EMA - clean) just before the jump, against `noise`.
    """

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
        error=None,
    )


def format_ema_stats(data: dict) -> str:
    """One line on what the momentum does: averaging window, lag behind a jump, noise left."""
    follows = (
        f"follows 63% of a jump after {data['lag']} steps"
        if data["lag"] is not None
        else "never follows 63% of a jump within the run"
    )
    return (
        f"momentum {data['momentum']:.4f}: averaging window 1/(1-m) = {data['window']:.0f} steps | "
        f"{follows} | noise std {data['noise']:.2f} -> {data['noise_left']:.3f}"
    )


# The momentum slider's stops: equally spaced in log(1 - m) (four per decade, from m = 0 to 0.9999), plus the
# paper's starting value 0.996 and 1.0 itself, so the paper's range 0.99-1.0 gets as much room as 0-0.99.
MOMENTUM_STOPS = sorted({round(1 - 10 ** (-k / 4), 6) for k in range(17)} | {0.996, 1.0})


def plot_momentum_schedule(momentum: float, n_steps: int, start: float = 0.996) -> Figure:
    """The paper's momentum schedule (`start` -> 1 over `n_steps`) as 1 - m on a log scale, with the
    slider's `momentum` drawn across it: where in a run the schedule passes that momentum."""
    steps = np.arange(n_steps)
    gap = np.array([1 - momentum_at(int(s), n_steps, start, 1.0) for s in steps])
    fig, ax = plt.subplots(figsize=(7.5, 2.2))
    ax.plot(steps[gap > 0], gap[gap > 0], color="black", lw=1.5, label=f"paper's schedule, {start} -> 1")
    if momentum < 1:
        ax.axhline(1 - momentum, color="tab:blue", ls="--", lw=1.2, label=f"slider, m = {momentum:.4f}")
    else:
        ax.text(
            0.5,
            0.9,
            "slider at m = 1: the target never moves",
            transform=ax.transAxes,
            ha="center",
            fontsize=8,
            color="tab:blue",
        )
    ax.set_yscale("log")
    ax.set_ylim(1e-4 / 2, 1.5)
    ax.set_xlabel("step of a run as long as this signal")
    ax.set_ylabel("1 - m (log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def ema_explorer(*, n_steps: int = 600, jump_at: int = 100, seed: int = 0):
    """An `ipywidgets.interactive` over `ema_explorer_data`: a momentum slider whose stops are log-spaced in
    1 - m from 0 to 1.0 (`MOMENTUM_STOPS`, the paper's 0.996 included) and a noise slider; redraws the noisy
    signal and its EMA, then the paper's momentum schedule with the slider's value across it. `.result` is
    the latest data dict; children: the two sliders, the output. A bad value reaching the callback shows a
    message naming it; bad arguments here raise ValueError."""
    import ipywidgets as w

    _check_int("n_steps", n_steps, 3)
    _check_int("jump_at", jump_at, 2, n_steps - 1)
    common = dict(
        continuous_update=False, style=dict(description_width="110px"), layout=w.Layout(width="480px")
    )
    sliders = dict(
        momentum=w.SelectionSlider(
            options=[(f"{m:.4f}", m) for m in MOMENTUM_STOPS], value=0.9, description="momentum m", **common
        ),
        noise=w.FloatSlider(value=0.5, min=0.0, max=2.0, step=0.05, description="noise std", **common),
    )

    def update(momentum, noise):
        try:
            data = ema_explorer_data(
                float(momentum), noise=float(noise), n_steps=n_steps, jump_at=jump_at, seed=seed
            )
        except (TypeError, ValueError) as err:  # only reachable from code: the sliders hold valid values
            _print_wrapped(
                f"Invalid setting, nothing drawn.\nmomentum m = {momentum!r}, noise std = {noise!r}: {err}"
            )
            return dict(momentum=momentum, noise=noise, error=str(err))
        print(format_ema_stats(data))
        for fig in (
            plot_ema_trace(
                data["signal"], {f"EMA, m = {data['momentum']:.4f}": data["ema"]}, clean=data["clean"]
            ),
            plot_momentum_schedule(data["momentum"], n_steps),
        ):
            plt.show()
            plt.close(fig)
        return data

    widget = w.interactive(update, **sliders)
    widget.children[-1].layout.height = "560px"
    return widget
