"""Mask sampling for I-JEPA: the paper's multi-block masks and the tools to lay them out on the patch grid.

The ablation strategies live in mask_strategies.py, the collators that attach masks to a batch in collate.py.

A mask is a set of patch indices in raster order of the patch grid: patch p of an (H, W) grid sits at row
p // W, column p % W. Every sampler returns `context_idx [B, Kc]` (sorted ascending) and
`target_idx [B, M, Kt]` (M target blocks, each sorted ascending), so a batch stacks into plain tensors.

Multi-block (Assran et al. 2023, section 3): M=4 target blocks of scale 0.15-0.2 and aspect ratio 0.75-1.5,
one context block of scale 0.85-1.0 (aspect 1) from which every target patch is removed. The block *size*
is shared by the batch, the *positions* are drawn per image. Unlike the official collator, positions are
uniform over every valid top-left (last row and column included), scale and aspect are independent draws,
and contexts are equalised by uniform random subsampling rather than raster truncation.

Equalising throws context away: on a 7x7 grid about a third of it. `context_fill="pad"` keeps every context
patch instead: each row holds its own context, padded to the longest in the batch with -1, and
`Batch.context_valid` tells the encoder and predictor which tokens to ignore (a key-padding attention mask).

Both change Kc (and Kt, the target block size) from step to step, and every new shape is new work for a
compiler and for attention kernels. `context_fill="fixed"` gives every step the same shapes: contexts are
padded to a length fixed by the mask geometry (`fixed_lengths`: a high quantile of the context count, so
few images lose a patch), and target blocks to the largest block the target scale and aspect allow, with
`Batch.target_valid` marking the padded targets, which the loss ignores.
"""

from __future__ import annotations

import functools
import math
import numbers

import torch
from torch import Tensor

from .. import registry

Grid = int | tuple[int, int]
CONTEXT_FILLS = registry.CONTEXT_FILLS  # how contexts of different sizes share a batch (sample_masks)
FIXED_QUANTILE = 0.95  # context="fixed": the share of contexts that fit the fixed length whole
MAX_RESAMPLES = 20  # redraws of block positions for images whose context is too small, before giving up


# ----------------------------------------------------------------------------------------------------------
# validation helpers


def _as_grid(grid: Grid) -> tuple[int, int]:
    """Normalise `grid` (int or (H, W)) to a pair of ints, each >= 2."""
    if isinstance(grid, int) and not isinstance(grid, bool):
        grid = (grid, grid)
    if (
        not isinstance(grid, (tuple, list))
        or len(grid) != 2
        or not all(isinstance(g, int) and not isinstance(g, bool) for g in grid)
        or min(grid) < 2
    ):
        raise ValueError(f"grid={grid!r} must be an int or an (H, W) pair of ints, each >= 2")
    return int(grid[0]), int(grid[1])


def _check_range(name: str, value, *, upper: float | None = 1.0) -> tuple[float, float]:
    """Check that `value` is a (min, max) pair with 0 < min <= max (<= upper); return it as floats."""
    bound = "" if upper is None else f" <= {upper:g}"
    msg = f"{name}={value!r} must be a (min, max) pair with 0 < min <= max{bound}"
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(msg) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi and (upper is None or hi <= upper)):
        raise ValueError(msg)
    return lo, hi


def _check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    """Check that `value` is an int in [lo, hi]; return it as a Python int."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < lo or (hi is not None and value > hi):
        valid = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name}={value!r} must be an int {valid}")
    return int(value)


def _uniform(u: float, lo: float, hi: float) -> float:
    return lo + u * (hi - lo)


def block_size(scale: float, aspect: float, grid: Grid) -> tuple[int, int]:
    """Block (h, w) covering `scale` of the grid with h / w = `aspect`, rounded and clamped to [1,H]x[1,W]."""
    H, W = _as_grid(grid)
    area = scale * H * W
    h = min(max(round(math.sqrt(area * aspect)), 1), H)
    w = min(max(round(math.sqrt(area / aspect)), 1), W)
    return h, w


# ----------------------------------------------------------------------------------------------------------
# vectorised building blocks


def _row_bits(top: Tensor, left: Tensor, sizes: Tensor, H: int, W: int) -> Tensor:
    """Blocks as bit masks [..., H, n_words] (int64): bit j of word k of row r is column k*word+j.

    Unions and differences of blocks become cheap bitwise ops on [B, H] words instead of [B, M, H, W]
    boolean grids; words are at most 62 bits, so wide grids use several. `sizes` [..., 2] holds (h, w).
    """
    n_words = -(-W // 62)
    word = -(-W // n_words)
    starts = torch.arange(n_words) * word  # [n_words]
    lo = (left[..., None] - starts).clamp(0, word)  # [..., n_words]
    hi = (left[..., None] + sizes[..., 1, None] - starts).clamp(0, word)
    cols = (1 << hi) - (1 << lo)  # bits lo..hi-1 set
    rows = torch.arange(H)
    in_rows = (rows >= top[..., None]) & (rows < (top + sizes[..., 0])[..., None])  # [..., H]
    return torch.where(in_rows[..., None], cols[..., None, :], 0)


def _unpack_bits(bits: Tensor, W: int) -> Tensor:
    """Bit masks [..., H, n_words] -> boolean grid [..., H, W]."""
    n_words = bits.shape[-1]
    word = -(-W // n_words)
    grid = (bits[..., None] & (1 << torch.arange(word))) != 0  # [..., H, n_words, word]
    return grid.flatten(-2)[..., :W]


def _block_indices(top: Tensor, left: Tensor, h: int, w: int, W: int) -> Tensor:
    """Sorted raster indices [..., h*w] of the h x w block at (top, left)."""
    offsets = (torch.arange(h)[:, None] * W + torch.arange(w)[None, :]).flatten()
    return (top * W + left)[..., None] + offsets


def _positions(n: int, ranges: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform ints in [0, ranges) for n rows: [n, *ranges.shape] (one rand call, floor, clamp)."""
    u = torch.rand(n, *ranges.shape, generator=generator, dtype=torch.float64)
    return torch.minimum((u * ranges).long(), ranges - 1)


def pad_sorted(mask: Tensor) -> Tensor:
    """Every True position of each row of `mask` [B, N], sorted, padded with -1 to
    the longest row: [B, Kmax]."""
    n = mask.shape[-1]
    position = torch.arange(n, device=mask.device).expand_as(mask)
    keys = torch.where(mask, position, position + n)  # True positions first, in order
    kmax = int(mask.sum(dim=-1).max())
    idx = keys.argsort(dim=-1)[:, :kmax]
    return torch.where(mask.gather(-1, idx), idx, -1)


def fit_sorted(mask: Tensor, length: int, generator: torch.Generator | None = None) -> Tensor:
    """Exactly `length` entries per row of `mask` [B, N]: rows with more True positions keep a uniform random
    `length` of them, rows with fewer keep all and end in -1 padding. Sorted, [B, length]."""
    n = mask.shape[-1]
    if not 1 <= length <= n:
        raise ValueError(f"length={length} must lie in [1, {n}] (the number of patches)")
    keys = torch.rand(mask.shape, generator=generator) + mask  # True in [1, 2): chosen first
    idx = keys.topk(length, dim=-1, sorted=False).indices
    real = mask.gather(-1, idx)
    order = torch.where(real, idx, idx + n).argsort(dim=-1)  # real positions first, ascending
    idx, real = idx.gather(-1, order), real.gather(-1, order)
    return torch.where(real, idx, -1)


def pad_targets(target_idx: Tensor, length: int) -> Tensor:
    """Pad target blocks [B, M, Kt] with -1 to [B, M, length]."""
    kt = target_idx.shape[-1]
    if kt > length:
        raise ValueError(f"a target block of {kt} patches does not fit target_length={length}")
    return torch.cat([target_idx, target_idx.new_full((*target_idx.shape[:-1], length - kt), -1)], dim=-1)


def subsample_sorted(mask: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Pick k True positions per row of `mask` [B, N] uniformly at random; return them sorted, [B, k].

    Every row must hold at least k True values. Random keys in [1, 2) for True and [0, 1) for False, top-k.
    """
    keys = torch.rand(mask.shape, generator=generator) + mask
    return keys.topk(k, dim=-1, sorted=False).indices.sort(dim=-1).values


# ----------------------------------------------------------------------------------------------------------
# multi-block masks (the paper's strategy)


# The paper's multi-block geometry (section 3), the defaults of every multi-block sampler below.
MULTIBLOCK = dict(
    n_targets=4,
    target_scale=(0.15, 0.2),
    target_aspect=(0.75, 1.5),
    context_scale=(0.85, 1.0),
    context_aspect=(1.0, 1.0),
    min_context=4,
)


def _check_geometry(geometry: dict) -> dict:
    """`MULTIBLOCK` updated by `geometry`, with ranges as tuples (hashable, for `fixed_lengths`' cache)."""
    unknown = sorted(set(geometry) - set(MULTIBLOCK))
    if unknown:
        raise TypeError(f"unknown mask geometry {', '.join(unknown)}; valid keys: {', '.join(MULTIBLOCK)}")
    merged = {**MULTIBLOCK, **geometry}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()}


def sample_multiblock_grids(
    batch_size: int,
    grid: Grid,
    *,
    n_targets: int = 4,
    target_scale: tuple[float, float] = (0.15, 0.2),
    target_aspect: tuple[float, float] = (0.75, 1.5),
    context_scale: tuple[float, float] = (0.85, 1.0),
    context_aspect: tuple[float, float] = (1.0, 1.0),
    min_context: int = 4,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Multi-block geometry before equalising: context grid [B, H, W] bool and target_idx [B, M, Kt].

    The context grid is the context block minus every target patch; its count differs between images,
    and `sample_masks` subsamples every row to the batch minimum. Exposed for notebooks and tests.
    """
    _check_int("batch_size", batch_size, 1)
    H, W = _as_grid(grid)
    _check_int("n_targets", n_targets, 1)
    ts = _check_range("target_scale", target_scale)
    ta = _check_range("target_aspect", target_aspect, upper=None)
    cs = _check_range("context_scale", context_scale)
    ca = _check_range("context_aspect", context_aspect, upper=None)
    _check_min_context(min_context, cs, ca, (H, W))

    # Block sizes, shared by the batch; scale and aspect are independent draws.
    u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
    h, w = block_size(_uniform(u[0], *ts), _uniform(u[1], *ta), (H, W))
    hc, wc = block_size(_uniform(u[2], *cs), _uniform(u[3], *ca), (H, W))
    sizes = torch.tensor([[h, w]] * n_targets + [[hc, wc]])  # [M + 1, 2], the context block last
    n_positions = sizes.new_tensor([H, W]) - sizes + 1  # valid tops and lefts, last row/column included
    pos = _positions(batch_size, n_positions, generator)  # [B, M + 1, 2] (top, left) per image and block
    context = _context_with_redraws(pos, sizes, (H, W), min_context=min_context, generator=generator)
    target_idx = _block_indices(pos[:, :-1, 0], pos[:, :-1, 1], h, w, W=W)  # [B, M, h*w]
    return context, target_idx


def _check_min_context(min_context: int, cs: tuple[float, float], ca: tuple[float, float], grid) -> None:
    """ValueError when `min_context` exceeds the largest context block the scale and aspect allow."""
    H, W = grid
    _check_int("min_context", min_context, 1, H * W)
    # Upper bound on the context block area (h grows with scale and aspect, w with scale and 1/aspect).
    h_max, _ = block_size(cs[1], ca[1], (H, W))
    _, w_max = block_size(cs[1], ca[0], (H, W))
    if min_context > h_max * w_max:
        raise ValueError(
            f"min_context={min_context} exceeds the largest possible context block ({h_max}x{w_max} "
            f"patches on a {H}x{W} grid with context_scale={cs}); lower min_context or raise context_scale"
        )


def _context_with_redraws(pos: Tensor, sizes: Tensor, grid, *, min_context: int, generator) -> Tensor:
    """Context grids [B, H, W] (the context block, last of `sizes` [M + 1, 2], minus the M targets) of the
    blocks at `pos` [B, M + 1, 2]; the positions of images whose context is under `min_context` patches are
    drawn again in place, up to MAX_RESAMPLES times."""
    H, W = grid
    n_positions = sizes.new_tensor([H, W]) - sizes + 1
    for attempt in range(MAX_RESAMPLES + 1):
        bits = _row_bits(pos[..., 0], pos[..., 1], sizes, H, W=W)  # [B, M + 1, H, n_words]
        covered = bits[:, 0]
        for m in range(1, len(sizes) - 1):  # union of the target blocks (a loop over M, not over the batch)
            covered = covered | bits[:, m]
        context = _unpack_bits(bits[:, -1] & ~covered, W)  # [B, H, W]: context block minus targets
        bad = context.sum(dim=(1, 2)) < min_context
        n_bad = int(bad.sum())
        if n_bad == 0:
            return context
        if attempt < MAX_RESAMPLES:
            pos[bad] = _positions(n_bad, n_positions, generator)  # only the failing images, sizes kept
    (h, w), (hc, wc) = sizes[0].tolist(), sizes[-1].tolist()
    raise RuntimeError(
        f"could not draw a context of at least min_context={min_context} patches for {n_bad} of "
        f"{len(pos)} images after {MAX_RESAMPLES} redraws of the positions ({H}x{W} grid, "
        f"{len(sizes) - 1} target blocks of {h}x{w}, context block {hc}x{wc}); lower min_context, "
        f"n_targets or target_scale, or raise context_scale"
    )


def sample_masks(
    batch_size: int,
    grid: Grid,
    *,
    context_fill: str = "subsample",
    context_length: int | None = None,
    target_length: int | None = None,
    generator: torch.Generator | None = None,
    **geometry,
) -> tuple[Tensor, Tensor]:
    """The paper's multi-block masks: context_idx [B, Kc] and target_idx [B, M, Kt], disjoint, sorted.

    `geometry`: any of `MULTIBLOCK`'s keys (n_targets, target_scale, target_aspect, context_scale,
    context_aspect, min_context), the paper's values by default; see `sample_multiblock_grids`.

    `context_fill="subsample"`: Kc is the smallest context count in the batch and larger contexts are
    subsampled uniformly at random. `"pad"`: every context patch is kept, Kc is the largest count and shorter
    rows end in -1 (see `Batch.from_masks`). `"fixed"`: Kc = `context_length` and Kt = `target_length` on
    every call (default: `fixed_lengths` of the geometry); longer contexts are subsampled, shorter contexts
    and every target block padded with -1.
    """
    if context_fill not in CONTEXT_FILLS:
        raise ValueError(f"context_fill={context_fill!r} is not one of {CONTEXT_FILLS}")
    if context_fill != "fixed" and (context_length is not None or target_length is not None):
        raise ValueError('context_length and target_length apply to context_fill="fixed" only')
    geometry = _check_geometry(geometry)
    context, target_idx = sample_multiblock_grids(batch_size, grid, generator=generator, **geometry)
    context = context.flatten(1)  # [B, N]
    if context_fill == "pad":
        return pad_sorted(context), target_idx
    if context_fill == "fixed":
        if context_length is None or target_length is None:
            auto_c, auto_t = fixed_lengths(_as_grid(grid), **geometry)  # the geometry is valid by now
            context_length = auto_c if context_length is None else context_length
            target_length = auto_t if target_length is None else target_length
        _check_int("context_length", context_length, 1, context.shape[1])
        _check_int("target_length", target_length, 1, context.shape[1])
        return fit_sorted(context, context_length, generator), pad_targets(target_idx, target_length)
    kc = int(context.sum(dim=1).min())
    return subsample_sorted(context, kc, generator), target_idx


def max_block_area(
    scale: tuple[float, float], aspect: tuple[float, float], grid: Grid, points: int = 257
) -> int:
    """The largest h*w that `block_size` gives over the scale and aspect ranges (a dense scan of both)."""
    H, W = _as_grid(grid)
    lo_s, hi_s = _check_range("scale", scale)
    lo_a, hi_a = _check_range("aspect", aspect, upper=None)
    areas = torch.linspace(lo_s, hi_s, points, dtype=torch.float64)[:, None] * H * W
    aspects = torch.linspace(lo_a, hi_a, points, dtype=torch.float64)[None, :]
    h = (areas * aspects).sqrt().round().clamp(1, H)  # round half to even, as Python's round() in block_size
    w = (areas / aspects).sqrt().round().clamp(1, W)
    return int((h * w).max())


@functools.lru_cache(maxsize=64)
def fixed_lengths(grid: tuple[int, int], *, quantile: float = FIXED_QUANTILE, **geometry) -> tuple[int, int]:
    """(context_length, target_length) of `context_fill="fixed"` for a mask geometry, the same on every call.

    target_length is the largest target block the ranges allow, so no target patch is ever dropped.
    context_length is the `quantile` of the context count over 4,096 images (1,024 batches) drawn with a
    fixed seed: that share of contexts keeps every patch; the rest lose a few, chosen at random. On the
    paper's 16x16 grid: (158, 56); about 0.4% of context patches are dropped and a quarter of the context
    slots are padding."""
    geometry = _check_geometry(geometry)
    gen = torch.Generator().manual_seed(0)
    # Block sizes are shared by a batch, so many small batches: 1,024 draws of the sizes, 4 images each.
    counts = torch.cat(
        [sample_multiblock_grids(4, grid, generator=gen, **geometry)[0].sum(dim=(1, 2)) for _ in range(1024)]
    ).double()
    context_length = max(geometry["min_context"], math.ceil(float(counts.quantile(quantile))))
    return context_length, max_block_area(geometry["target_scale"], geometry["target_aspect"], grid)


# ----------------------------------------------------------------------------------------------------------
# helpers for notebooks and tests


def masks_to_grid(idx: Tensor, grid: Grid) -> Tensor:
    """Boolean grid of the patches in `idx`: [B, K] -> [B, H, W] and [B, M, K] -> [B, M, H, W].
    Padding entries (-1, see `context_fill="pad"`) mark nothing."""
    H, W = _as_grid(grid)
    if idx.numel() and (int(idx.min()) < -1 or int(idx.max()) >= H * W):
        raise ValueError(
            f"idx holds values in [{int(idx.min())}, {int(idx.max())}], valid range is [0, {H * W}) "
            "and -1 for padding"
        )
    out = torch.zeros(*idx.shape[:-1], H * W + 1, dtype=torch.bool, device=idx.device)
    out.scatter_(-1, idx.long() % (H * W + 1), True)  # -1 lands in the extra last slot, dropped below
    out = out[..., : H * W]
    return out.view(*idx.shape[:-1], H, W)
