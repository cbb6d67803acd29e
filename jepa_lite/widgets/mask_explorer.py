"""The mask explorer of notebook 01: sliders over the multi-block geometry, the masks they draw, coverage
maps and statistics; a setting that cannot work is named in the sliders' words (`check_setting`)."""

from __future__ import annotations

import math
import textwrap

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from ..core.mask_strategies import sample_block_masks, sample_random_masks, sample_rasterized_masks
from ..core.masks import _check_int, _check_range, block_size, masks_to_grid, sample_masks
from ..viz import plot_coverage, plot_mask_grid

__all__ = ["check_setting", "mask_explorer_data", "format_stats", "mask_explorer"]


LABELS = dict(
    grid="grid size",
    target_scale="target scale",
    target_aspect="target aspect",
    n_targets="targets M",
    context_scale="context scale",
    strategy="strategy",
)  # the sliders' labels: messages name a setting the way the reader sees it
MIN_CONTEXT = 4  # sample_masks' default: the fewest context patches a draw may leave
# The four strategies of the paper's masking table; only multi-block reads the target and context sliders.
STRATEGIES = {
    "multi-block": "multiblock",
    "rasterized": "rasterized",
    "block": "block",
    "random": "random",
}
OWN_GEOMETRY = {
    "rasterized": "a random quadrant is the context, the other three are the targets",
    "block": "one target block of 60% of the image, the context is the rest",
    "random": "60% of the patches, drawn at random, are the target, the context is the rest",
}


def check_setting(
    grid: int = 7,
    *,
    target_scale: tuple[float, float] = (0.15, 0.2),
    target_aspect: tuple[float, float] = (0.75, 1.5),
    n_targets: int = 4,
    context_scale: tuple[float, float] = (0.85, 1.0),
    min_context: int = MIN_CONTEXT,
) -> tuple[str | None, list[str]]:
    """Check an explorer setting before sampling, in the sliders' words: `(error or None, notes)`.

    Errors are settings no draw can satisfy (a value out of range, a context block smaller than
    `min_context`, a target block that always swallows the context); notes are settings that work but not
    as the slider says (a block too tall or wide for the grid is clipped to it).
    """
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
        return f"{LABELS['grid']} = {grid!r} must be an int >= 2", []
    try:
        ts = _check_range(LABELS["target_scale"], target_scale)
        ta = _check_range(LABELS["target_aspect"], target_aspect, upper=None)
        cs = _check_range(LABELS["context_scale"], context_scale)
        _check_int(LABELS["n_targets"], n_targets, 1)
    except ValueError as err:
        return str(err), []
    H = W = grid
    hc, wc = block_size(cs[1], 1.0, grid)  # the largest context block (aspect 1)
    if hc * wc < min_context:
        patches = f"{hc * wc} patch" + ("es" if hc * wc > 1 else "")
        return (
            f"{LABELS['context_scale']} up to {cs[1]:.2f} gives a context block of at most {hc}x{wc} = "
            f"{patches} on the {H}x{W} grid, fewer than the {min_context} context patches a draw needs: "
            f"raise {LABELS['context_scale']} or {LABELS['grid']}."
        ), []
    # Best case: one target block (the others may overlap it) placed to cut as little as possible out of
    # the largest context block. The cut only grows with the block's h and w, so the smallest h (low scale,
    # low aspect) and smallest w (low scale, high aspect) bound it from below, even if never drawn together:
    # if even that leaves < min_context, no draw can work (an error here is never a false alarm).
    h, w = block_size(ts[0], ta[0], grid)[0], block_size(ts[0], ta[1], grid)[1]
    best = hc * wc - max(0, h + hc - H) * max(0, w + wc - W)
    if best < min_context:
        return (
            f"{LABELS['target_scale']} {ts[0]:.2f}-{ts[1]:.2f} gives target blocks of at least {h}x{w} that "
            f"leave at most {best} of the context block's patches on the {H}x{W} grid, fewer than the "
            f"{min_context} a draw needs: lower {LABELS['target_scale']}, or raise {LABELS['context_scale']} "
            f"or {LABELS['grid']}."
        ), []
    notes = []
    tall = math.sqrt(ts[1] * H * W * ta[1])
    wide = math.sqrt(ts[1] * H * W / ta[0])
    if round(tall) > H or round(wide) > W:
        notes.append(
            f"{LABELS['target_scale']} up to {ts[1]:.2f} with {LABELS['target_aspect']} "
            f"{ta[0]:.2f}-{ta[1]:.2f} asks for blocks up to {round(tall)} rows or {round(wide)} columns, "
            f"more than the {H}x{W} grid has: they are clipped to the grid, so they cover less than the "
            "scale says."
        )
    return None, notes


def mask_explorer_data(
    grid: int = 7,
    *,
    target_scale: tuple[float, float] = (0.15, 0.2),
    target_aspect: tuple[float, float] = (0.75, 1.5),
    n_targets: int = 4,
    context_scale: tuple[float, float] = (0.85, 1.0),
    batch_size: int = 256,
    seed: int = 0,
    strategy: str = "multiblock",
) -> dict:
    """Sample one batch of masks of `strategy` (default the paper's multi-block) and summarise it.

    Returns a dict with `context_idx [B, Kc]`, `target_idx [B, M, Kt]`, `grid (H, W)` and the statistics
    `context_len` (Kc), `target_len` (Kt), `block_h`/`block_w` (target block size, shared by the batch),
    `context_fraction` (Kc / N), `target_fraction` (patches in any target / N, mean over the batch),
    `coverage` [H, W] (how often each patch is in the context), `target_coverage` [H, W] (how often it is in
    a target), `notes` (list of remarks, see `check_setting`) and `error` (None, or a readable message naming
    the setting when it is invalid, in which case the masks are None). The rasterized, block and random
    strategies have their own geometry (`OWN_GEOMETRY`): the target and context sliders do not apply to them,
    and `block_h`/`block_w` are None for random masks. Never raises for a bad setting: the widget shows it.
    """
    out = dict(grid=(grid, grid) if isinstance(grid, int) else tuple(grid), context_idx=None, target_idx=None)
    kwargs = dict(target_scale=target_scale, target_aspect=target_aspect, n_targets=n_targets)
    strategy = STRATEGIES.get(strategy, strategy)
    out["error"], out["notes"] = _setting_error(
        grid, strategy, batch_size=batch_size, context_scale=context_scale, kwargs=kwargs
    )
    if out["error"]:
        return out
    out["error"], masks = _sample(
        strategy, grid, batch_size=batch_size, context_scale=context_scale, kwargs=kwargs, seed=seed
    )
    if out["error"]:
        return out
    return out | _statistics(*masks, out["grid"])


def _setting_error(
    grid, strategy: str, *, batch_size, context_scale, kwargs: dict
) -> tuple[str | None, list[str]]:
    """(a readable error or None, notes) for a setting, before anything is drawn."""
    if not isinstance(batch_size, int) or batch_size < 1:
        return f"ValueError: batch_size={batch_size!r} must be an int >= 1", []
    if strategy not in STRATEGIES.values():
        return f"{LABELS['strategy']} = {strategy!r} is not one of: {', '.join(STRATEGIES)}", []
    if strategy == "multiblock":
        return check_setting(grid, context_scale=context_scale, **kwargs)
    notes = [
        f"{strategy} masks: {OWN_GEOMETRY[strategy]}; the target and context sliders apply to "
        f"multi-block masks only."
    ]
    return check_setting(grid)[0], notes  # the grid still has to be a grid


def _sample(
    strategy: str, grid, *, batch_size: int, context_scale, kwargs: dict, seed
) -> tuple[str | None, tuple]:
    """(None, (context_idx, target_idx)) of one seeded batch, or (a readable error, ()) when drawing fails."""
    g = torch.Generator().manual_seed(int(seed))
    try:
        if strategy == "multiblock":
            masks = sample_masks(
                batch_size,
                grid,
                context_scale=tuple(context_scale),
                min_context=MIN_CONTEXT,
                generator=g,
                **kwargs,
            )
        else:
            sample = {
                "rasterized": sample_rasterized_masks,
                "block": sample_block_masks,
                "random": sample_random_masks,
            }[strategy]
            masks = sample(batch_size, grid, generator=g)
    except ValueError as err:  # check_setting should have caught it; still a message, not a traceback
        return f"ValueError: {err}", ()
    except RuntimeError as err:  # the draws failed by chance: too many or too large targets
        lo, hi = kwargs["target_scale"]
        return (
            f"{LABELS['n_targets']} = {kwargs['n_targets']} target blocks with {LABELS['target_scale']} "
            f"{lo:.2f}-{hi:.2f} keep covering the context block: some draws leave "
            f"fewer than {MIN_CONTEXT} context patches. Lower {LABELS['n_targets']} or "
            f"{LABELS['target_scale']}, or raise {LABELS['context_scale']}.\n({type(err).__name__}: {err})"
        ), ()
    return None, masks


def _statistics(context_idx: Tensor, target_idx: Tensor, grid: tuple[int, int]) -> dict:
    """The masks and what `mask_explorer_data` reports of them (sizes, fractions, coverage maps)."""
    H, W = grid
    n = H * W
    in_target = masks_to_grid(target_idx, (H, W)).any(dim=1)  # [B, H, W]
    kt = target_idx.shape[-1]
    rows, cols = target_idx[0, 0] // W, target_idx[0, 0] % W
    h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    is_block = h * w == kt  # random masks are not a block: no block size to report
    return dict(
        context_idx=context_idx,
        target_idx=target_idx,
        context_len=context_idx.shape[1],
        target_len=kt,
        block_h=h if is_block else None,
        block_w=w if is_block else None,
        context_fraction=context_idx.shape[1] / n,
        target_fraction=float(in_target.float().mean(dim=(1, 2)).mean()),
        coverage=masks_to_grid(context_idx, (H, W)).float().mean(dim=0),
        target_coverage=in_target.float().mean(dim=0),
    )


def format_stats(data: dict) -> str:
    """The statistics from `mask_explorer_data` in two readable lines (or its error message), notes last."""
    if data.get("error"):
        return f"Invalid setting, nothing drawn.\n{data['error']}"
    H, W = data["grid"]
    shape = f"{data['block_h']}x{data['block_w']} = " if data.get("block_h") else ""
    m = data["target_idx"].shape[1]
    text = (
        f"grid {H}x{W} = {H * W} patches | {m} target block{'s' if m > 1 else ''} of "
        f"{shape}{data['target_len']} patches\ncontext Kc = "
        f"{data['context_len']} ({data['context_fraction']:.0%} of the grid) | targets cover "
        f"{data['target_fraction']:.0%} of an image on average"
    )
    return "\n".join([text, *(f"Note: {n}" for n in data.get("notes", []))])


def _print_wrapped(text: str, width: int = 100) -> None:
    """Print with lines wrapped at spaces: the output area would otherwise break words at its edge."""
    print("\n".join(textwrap.fill(line, width) for line in text.splitlines()))


def _draw(data: dict, images: Tensor | None, n_show: int) -> None:
    _print_wrapped(format_stats(data))
    if data.get("error"):
        return
    H, W = data["grid"]
    shown = None
    if images is not None:
        if images.shape[-2] % H == 0 and images.shape[-1] % W == 0:
            shown = images[:n_show]
        else:
            _print_wrapped(
                f"Note: images of {images.shape[-2]}x{images.shape[-1]} px do not split into a {H}x{W} grid "
                f"of patches, so the masks are drawn without them."
            )
    fig = plot_mask_grid(
        data["context_idx"], data["target_idx"], data["grid"], images=shown, n=n_show, ncols=n_show
    )
    plt.show()
    plt.close(fig)
    n = len(data["context_idx"])
    fig = plot_coverage(
        {"in the context": data["coverage"], "in a target": data["target_coverage"]},
        title=f"how often each patch is context or target, over the {n} masks of this batch",
    )
    fig.set_size_inches(6.4, 2.9)
    plt.show()
    plt.close(fig)


def mask_explorer(images: Tensor | None = None, *, n_show: int = 4, batch_size: int = 256, seed: int = 0):
    """An `ipywidgets.interactive` over `mask_explorer_data`: sliders for target scale and aspect ranges,
    number of targets, context scale and grid size, a strategy dropdown, the draw number and a Resample
    button; draws the masks (over `images` [B, C, H, W] if given) and the coverage heatmaps of the batch.

    The returned widget's `.result` is the latest `mask_explorer_data` dict; its children are the five
    sliders (in the order above), the strategy dropdown, the draw number, the Resample button (which
    increments the draw number) and the output area (fixed height). A setting no draw can satisfy shows a
    message naming the slider instead of a figure; bad arguments to this function raise ValueError at once.
    """
    import ipywidgets as w

    _check_int("batch_size", batch_size, 1)
    _check_int("n_show", n_show, 1, 16)
    _check_int("seed", seed, 0)
    if images is not None and (not isinstance(images, Tensor) or images.ndim != 4 or len(images) < n_show):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images {shape} must be a tensor [B, C, H, W] with B >= n_show={n_show}")
    controls = _controls(w, seed)

    def update(
        target_scale, target_aspect, n_targets, context_scale, grid, strategy="multi-block", draw=seed
    ):
        data = mask_explorer_data(
            grid,
            target_scale=target_scale,
            target_aspect=target_aspect,
            n_targets=n_targets,
            context_scale=context_scale,
            batch_size=batch_size,
            seed=draw,
            strategy=strategy,
        )
        _draw(data, images, n_show)
        return data

    widget = w.interactive(update, **controls)
    resample = w.Button(description="Resample", tooltip="draw a new batch of masks with the same setting")

    def on_resample(_button) -> None:
        controls["draw"].value += 1

    resample.on_click(on_resample)
    widget.children = (*widget.children[:-1], resample, widget.children[-1])
    widget.children[-1].layout.height = "660px"
    return widget


def _controls(w, seed: int) -> dict:
    """The explorer's sliders, dropdown and draw number, keyed by `mask_explorer_data`'s argument names."""
    style = dict(description_width="110px")
    layout = w.Layout(width="460px")
    common = dict(continuous_update=False, style=style, layout=layout)
    controls = dict(
        target_scale=w.FloatRangeSlider(
            value=(0.15, 0.2), min=0.02, max=0.6, step=0.01, description=LABELS["target_scale"], **common
        ),
        target_aspect=w.FloatRangeSlider(
            value=(0.75, 1.5), min=0.2, max=4.0, step=0.05, description=LABELS["target_aspect"], **common
        ),
        n_targets=w.IntSlider(value=4, min=1, max=8, description=LABELS["n_targets"], **common),
        context_scale=w.FloatRangeSlider(
            value=(0.85, 1.0), min=0.2, max=1.0, step=0.01, description=LABELS["context_scale"], **common
        ),
        grid=w.IntSlider(value=7, min=2, max=16, description=LABELS["grid"], **common),
        strategy=w.Dropdown(
            options=list(STRATEGIES), value="multi-block", description=LABELS["strategy"], style=style
        ),
        draw=w.BoundedIntText(
            value=seed, min=0, max=10**9, description="draw #", style=style, layout=w.Layout(width="200px")
        ),
    )
    return controls
