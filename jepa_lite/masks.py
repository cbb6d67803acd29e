"""Mask sampling for I-JEPA: the paper's multi-block masks, the ablation strategies, and the collators.

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
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import get_worker_info

Grid = int | tuple[int, int]
CONTEXT_FILLS = ("subsample", "pad", "fixed")  # how contexts of different sizes share a batch (sample_masks)
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
    """Every True position of each row of `mask` [B, N], sorted, padded with -1 to the longest row: [B, Kmax]."""
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
    _check_int("min_context", min_context, 1, H * W)
    # Upper bound on the context block area (h grows with scale and aspect, w with scale and 1/aspect).
    h_max, _ = block_size(cs[1], ca[1], (H, W))
    _, w_max = block_size(cs[1], ca[0], (H, W))
    if min_context > h_max * w_max:
        raise ValueError(
            f"min_context={min_context} exceeds the largest possible context block ({h_max}x{w_max} "
            f"patches on a {H}x{W} grid with context_scale={context_scale}); lower min_context or raise "
            f"context_scale"
        )

    # Block sizes, shared by the batch; scale and aspect are independent draws.
    u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
    h, w = block_size(_uniform(u[0], *ts), _uniform(u[1], *ta), (H, W))
    hc, wc = block_size(_uniform(u[2], *cs), _uniform(u[3], *ca), (H, W))
    sizes = torch.tensor([[h, w]] * n_targets + [[hc, wc]])  # [M + 1, 2], the context block last
    n_positions = sizes.new_tensor([H, W]) - sizes + 1  # valid tops and lefts, last row/column included
    pos = _positions(batch_size, n_positions, generator)  # [B, M + 1, 2] (top, left) per image and block
    for attempt in range(MAX_RESAMPLES + 1):
        bits = _row_bits(pos[..., 0], pos[..., 1], sizes, H, W)  # [B, M + 1, H, n_words]
        covered = bits[:, 0]
        for m in range(1, n_targets):  # union of the target blocks (a loop over M, not over the batch)
            covered = covered | bits[:, m]
        context = _unpack_bits(bits[:, -1] & ~covered, W)  # [B, H, W]: context block minus targets
        bad = context.sum(dim=(1, 2)) < min_context
        n_bad = int(bad.sum())
        if n_bad == 0:
            break
        if attempt == MAX_RESAMPLES:
            raise RuntimeError(
                f"could not draw a context of at least min_context={min_context} patches for {n_bad} of "
                f"{batch_size} images after {MAX_RESAMPLES} redraws of the positions ({H}x{W} grid, "
                f"{n_targets} target blocks of {h}x{w}, context block {hc}x{wc}); lower min_context, "
                f"n_targets or target_scale, or raise context_scale"
            )
        pos[bad] = _positions(n_bad, n_positions, generator)  # only the failing images, sizes kept

    target_idx = _block_indices(pos[:, :-1, 0], pos[:, :-1, 1], h, w, W)  # [B, M, h*w]
    return context, target_idx


def sample_masks(
    batch_size: int,
    grid: Grid,
    *,
    n_targets: int = 4,
    target_scale: tuple[float, float] = (0.15, 0.2),
    target_aspect: tuple[float, float] = (0.75, 1.5),
    context_scale: tuple[float, float] = (0.85, 1.0),
    context_aspect: tuple[float, float] = (1.0, 1.0),
    min_context: int = 4,
    context_fill: str = "subsample",
    context_length: int | None = None,
    target_length: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """The paper's multi-block masks: context_idx [B, Kc] and target_idx [B, M, Kt], disjoint, sorted.

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
    geometry = dict(n_targets=n_targets, target_scale=target_scale, target_aspect=target_aspect,
                    context_scale=context_scale, context_aspect=context_aspect, min_context=min_context)  # fmt: skip
    context, target_idx = sample_multiblock_grids(batch_size, grid, generator=generator, **geometry)
    context = context.flatten(1)  # [B, N]
    if context_fill == "pad":
        return pad_sorted(context), target_idx
    if context_fill == "fixed":
        if context_length is None or target_length is None:
            hashable = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in geometry.items()}
            auto_c, auto_t = fixed_lengths(_as_grid(grid), **hashable)  # the geometry is valid by now
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
def fixed_lengths(
    grid: tuple[int, int],
    *,
    n_targets: int = 4,
    target_scale: tuple[float, float] = (0.15, 0.2),
    target_aspect: tuple[float, float] = (0.75, 1.5),
    context_scale: tuple[float, float] = (0.85, 1.0),
    context_aspect: tuple[float, float] = (1.0, 1.0),
    min_context: int = 4,
    quantile: float = FIXED_QUANTILE,
) -> tuple[int, int]:
    """(context_length, target_length) of `context_fill="fixed"` for a mask geometry, the same on every call.

    target_length is the largest target block the ranges allow, so no target patch is ever dropped.
    context_length is the `quantile` of the context count over 4,096 images (1,024 batches) drawn with a
    fixed seed: that share of contexts keeps every patch; the rest lose a few, chosen at random. On the
    paper's 16x16 grid: (158, 56); about 0.4% of context patches are dropped and a quarter of the context
    slots are padding."""
    geometry = dict(n_targets=n_targets, target_scale=target_scale, target_aspect=target_aspect,
                    context_scale=context_scale, context_aspect=context_aspect, min_context=min_context)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    # Block sizes are shared by a batch, so many small batches: 1,024 draws of the sizes, 4 images each.
    counts = torch.cat([sample_multiblock_grids(4, grid, generator=gen, **geometry)[0].sum(dim=(1, 2))
                        for _ in range(1024)]).double()  # fmt: skip
    context_length = max(min_context, math.ceil(float(counts.quantile(quantile))))
    return context_length, max_block_area(target_scale, target_aspect, grid)


# ----------------------------------------------------------------------------------------------------------
# ablation strategies (the paper's masking-strategy table)


def sample_random_masks(
    batch_size: int, grid: Grid, *, target_ratio: float = 0.6, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Random masking: M=1 target of round(target_ratio * N) random patches, context = the rest."""
    _check_int("batch_size", batch_size, 1)
    H, W = _as_grid(grid)
    if not isinstance(target_ratio, numbers.Real) or not 0 < target_ratio < 1:
        raise ValueError(f"target_ratio={target_ratio!r} must lie in (0, 1)")
    n = H * W
    kt = min(max(round(target_ratio * n), 1), n - 1)
    chosen = torch.rand(batch_size, n, generator=generator).topk(kt, dim=1, sorted=False).indices
    target = torch.zeros(batch_size, n, dtype=torch.bool).scatter_(1, chosen, True)
    # nonzero() lists (row, col) pairs in raster order, so both index sets come out sorted.
    target_idx = target.nonzero()[:, 1].view(batch_size, 1, kt)  # [B, 1, Kt]
    return (~target).nonzero()[:, 1].view(batch_size, n - kt), target_idx


def sample_block_masks(
    batch_size: int,
    grid: Grid,
    *,
    target_scale: tuple[float, float] = (0.6, 0.6),
    target_aspect: tuple[float, float] = (0.75, 1.5),
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Single block: M=1 target block (size shared by the batch), context = its complement.

    A block that would cover the whole grid is shrunk by one row or column so the context is never empty.
    """
    _check_int("batch_size", batch_size, 1)
    H, W = _as_grid(grid)
    ts = _check_range("target_scale", target_scale)
    ta = _check_range("target_aspect", target_aspect, upper=None)
    u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
    h, w = block_size(_uniform(u[0], *ts), _uniform(u[1], *ta), (H, W))
    if h * w == H * W:
        h, w = (h, w - 1) if W >= H else (h - 1, w)
    size = torch.tensor([h, w])
    pos = _positions(batch_size, size.new_tensor([H, W]) - size + 1, generator)  # [B, 2]
    context = _unpack_bits(~_row_bits(pos[:, 0], pos[:, 1], size, H, W), W).flatten(1)  # [B, N]
    # Every row has the same count, and nonzero() lists (row, col) pairs in raster order: already sorted.
    context_idx = context.nonzero()[:, 1].view(batch_size, H * W - h * w)
    return context_idx, _block_indices(pos[:, 0], pos[:, 1], h, w, W)[:, None, :]


def _quadrants(H: int, W: int) -> Tensor:
    """Quadrant id [N] of each patch: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right."""
    rows = (torch.arange(H) >= H // 2).long()
    cols = (torch.arange(W) >= W // 2).long()
    return (2 * rows[:, None] + cols[None, :]).flatten()


def sample_rasterized_masks(
    batch_size: int, grid: Grid, *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Rasterized: 4 quadrants, a random one is the context, the other 3 are M=3 targets (in quadrant order).

    Quadrants split at (H//2, W//2). On odd grids they differ in size, so every quadrant is subsampled
    uniformly at random to the smallest, (H//2)*(W//2) patches: Kc = Kt = (H//2)*(W//2) on every grid.
    """
    _check_int("batch_size", batch_size, 1)
    H, W = _as_grid(grid)
    q = (H // 2) * (W // 2)
    quads = _quadrants(H, W)[None, :] == torch.arange(4)[:, None]  # [4, N]
    chosen = torch.randint(0, 4, (batch_size,), generator=generator)  # context quadrant per image
    # Quadrant order per image [B, 4]: the context quadrant first, then the three targets.
    order = torch.tensor([[i] + [j for j in range(4) if j != i] for i in range(4)])[chosen]
    if H % 2 == 0 and W % 2 == 0:
        table = quads.nonzero()[:, 1].view(4, q)  # raster order within each quadrant
        sel = table.index_select(0, order.flatten()).view(batch_size, 4, q)
    else:
        per_quad = subsample_sorted(quads.repeat(batch_size, 1), q, generator).view(batch_size, 4, q)
        sel = per_quad.gather(1, order[:, :, None].expand(-1, -1, q))
    return sel[:, 0].contiguous(), sel[:, 1:].contiguous()


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


def official_collator_sample(
    batch_size: int,
    grid: Grid,
    *,
    n_targets: int = 4,
    target_scale: tuple[float, float] = (0.15, 0.2),
    target_aspect: tuple[float, float] = (0.75, 1.5),
    context_scale: tuple[float, float] = (0.85, 1.0),
    context_aspect: tuple[float, float] = (1.0, 1.0),
    min_keep: int = 4,
    max_tries: int = 20,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """The official I-JEPA collator's behaviour, flaws included, re-implemented for the lesson of notebook 01.

    Flaws kept: one random number drives both scale and aspect; block sides are clamped to H-1 / W-1 and
    positions drawn with an exclusive bound `randint(0, H - h)`, so blocks never touch the last row/column;
    contexts are equalised by truncation in raster order (the bottom rows go first). Where the original
    retries forever (a block of <= min_keep patches), this raises RuntimeError after bounded tries.
    Deliberately a per-image Python loop, like the original; defaults are the paper's config.
    """
    _check_int("batch_size", batch_size, 1)
    H, W = _as_grid(grid)
    _check_int("n_targets", n_targets, 1)
    _check_int("max_tries", max_tries, 1)

    def size(scale, aspect):
        u = float(torch.rand(1, generator=generator))  # flaw: one draw for both scale and aspect
        keep = int(H * W * _uniform(u, *scale))
        h = round(math.sqrt(keep * _uniform(u, *aspect)))
        w = round(math.sqrt(keep / _uniform(u, *aspect)))
        return min(max(h, 1), H - 1), min(max(w, 1), W - 1)

    def block(h, w):
        top = int(torch.randint(0, H - h, (1,), generator=generator))  # flaw: exclusive upper bound
        left = int(torch.randint(0, W - w, (1,), generator=generator))
        mask = torch.zeros(H, W, dtype=torch.bool)
        mask[top : top + h, left : left + w] = True
        return mask

    (h, w), (hc, wc) = size(target_scale, target_aspect), size(context_scale, context_aspect)
    contexts, targets = [], []
    for _ in range(batch_size):
        image_targets = []
        for _ in range(n_targets):
            for _ in range(max_tries):
                mask = block(h, w)
                if mask.sum() > min_keep:
                    break
            else:
                raise RuntimeError(
                    f"a {h}x{w} target block never has more than min_keep={min_keep} patches: "
                    f"the official collator would retry forever here"
                )
            image_targets.append(mask.flatten().nonzero()[:, 0])
        # Context: block minus the targets; after each round of failures, one fewer target is removed.
        for n_regions in range(n_targets, -1, -1):
            for _ in range(max_tries):
                mask = block(hc, wc).flatten()
                for t in image_targets[:n_regions]:
                    mask[t] = False
                if mask.sum() > min_keep:
                    break
            else:
                continue
            break
        else:
            raise RuntimeError(
                f"no context block of more than min_keep={min_keep} patches: the original loops forever"
            )
        contexts.append(mask.nonzero()[:, 0])
        targets.append(image_targets)
    kc = min(len(c) for c in contexts)
    kt = min(len(t) for ts in targets for t in ts)
    context_idx = torch.stack([c[:kc] for c in contexts])  # flaw: raster truncation
    target_idx = torch.stack([torch.stack([t[:kt] for t in ts]) for ts in targets])
    return context_idx, target_idx


# ----------------------------------------------------------------------------------------------------------
# batch and collators


@dataclass
class Batch:
    """A training batch: images [B, C, H, W], context_idx [B, Kc], target_idx [B, M, Kt], labels [B],
    context_valid [B, Kc] (bool, True for a real context token) when contexts are padded, else None, and
    target_valid [B, M, Kt] (True for a real target patch) when target blocks are padded, else None."""

    images: Tensor
    context_idx: Tensor
    target_idx: Tensor
    labels: Tensor | None = None
    context_valid: Tensor | None = None
    target_valid: Tensor | None = None

    @classmethod
    def from_masks(
        cls,
        images: Tensor,
        context_idx: Tensor,
        target_idx: Tensor,
        labels=None,
        *,
        always_valid: bool = False,
    ) -> Batch:
        """A batch from a sampler's masks: -1 padding becomes `context_valid` / `target_valid`, and the padded
        slots repeat their row's (or block's) first patch: a valid index to gather, ignored by attention and
        by the loss. `always_valid`: give both masks even where nothing is padded (the same inputs to a
        compiled step every time)."""
        context_idx, context_valid = _unpad(context_idx, always_valid)
        target_idx, target_valid = _unpad(target_idx, always_valid)
        return cls(images, context_idx, target_idx, labels, context_valid, target_valid)

    def _map(self, fn) -> Batch:
        f = lambda t: None if t is None else fn(t)  # noqa: E731
        return Batch(f(self.images), f(self.context_idx), f(self.target_idx), f(self.labels),
                     f(self.context_valid), f(self.target_valid))  # fmt: skip

    def to(self, device, non_blocking: bool = False) -> Batch:
        """Move every tensor to `device`."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Page-lock every tensor, so DataLoader(pin_memory=True) works."""
        return self._map(lambda t: t.pin_memory())

    def __len__(self) -> int:
        return self.images.shape[0]


def _unpad(idx: Tensor, always: bool = False) -> tuple[Tensor, Tensor | None]:
    """Indices [..., K] with -1 padding -> (indices with each pad replaced by its row's first, valid [..., K]),
    or (idx, None) when nothing is padded (unless `always`)."""
    if not always and (idx.numel() == 0 or int(idx.min()) >= 0):
        return idx, None
    valid = idx >= 0
    return torch.where(valid, idx, idx[..., :1]), valid


def _mix(*values: int) -> int:
    """Deterministic 63-bit seed from a few ints."""
    seed = 0
    for v in values:
        seed = (seed * 1_000_003 + int(v)) % 2**63
    return seed


class MaskCollator:
    """DataLoader `collate_fn` that stacks (image, label[, key]) samples and draws masks for them.

    With keys `(step, slot, global_batch)` the masks depend only on (seed, step): masks for the whole global
    batch are drawn and the rows at each sample's slot returned, so any split of a global batch across
    processes gives the same masks as one process. Without keys the generator is seeded from (seed, epoch,
    worker id, call counter): reproducible, and different in each worker; call `set_epoch` each epoch if the
    DataLoader's workers are not persistent (their counters restart).
    """

    def __init__(self, grid: Grid, *, seed: int = 0, **mask_kwargs):
        self.grid = _as_grid(grid)
        self.seed = _check_int("seed", seed, 0)
        self.mask_kwargs = mask_kwargs
        self.fixed_shapes = mask_kwargs.get("context_fill") == "fixed"  # batches always carry valid masks
        self.epoch = 0
        self._calls = 0
        self.sample(1, torch.Generator().manual_seed(0))  # validate the arguments now, not in a worker

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Draw context_idx [B, Kc] and target_idx [B, M, Kt]."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Fold the epoch into the seed of key-less batches."""
        self.epoch = _check_int("epoch", epoch, 0)

    def __call__(self, samples: list[tuple]) -> Batch:
        if len(samples) == 0:
            raise ValueError("samples is empty: the collator needs at least one sample")
        parts = [
            (s, None, None) if isinstance(s, Tensor) else tuple(s) + (None,) * (3 - len(s)) for s in samples
        ]
        if any(len(p) != 3 for p in parts):
            raise ValueError("each sample must be image, (image,), (image, label) or (image, label, key)")
        images = torch.stack([torch.as_tensor(p[0]) for p in parts])
        images = images if images.is_floating_point() else images.float()
        labels = None
        if all(p[1] is not None for p in parts):
            labels = torch.tensor([int(p[1]) for p in parts], dtype=torch.long)
        keys = [p[2] for p in parts]
        if all(k is None for k in keys):
            info = get_worker_info()
            seed = _mix(self.seed, self.epoch, 0 if info is None else info.id, self._calls)
            self._calls += 1
            context_idx, target_idx = self.sample(len(samples), torch.Generator().manual_seed(seed))
        else:
            context_idx, target_idx = self._keyed(keys)
        return Batch.from_masks(images, context_idx, target_idx, labels, always_valid=self.fixed_shapes)

    def _keyed(self, keys: list) -> tuple[Tensor, Tensor]:
        """Rows of the global batch's masks at each key's slot."""
        try:
            keys = [tuple(int(v) for v in k) for k in keys]
        except TypeError:
            raise ValueError(
                "either every sample carries a key (step, slot, global_batch) or none does"
            ) from None
        if any(len(k) != 3 for k in keys):
            raise ValueError(f"key={keys[0]!r}: each key must be (step, slot, global_batch)")
        step, _, global_batch = keys[0]
        if any(k[0] != step or k[2] != global_batch for k in keys):
            raise ValueError(f"keys must share step and global_batch within a batch, got {sorted(set(keys))}")
        _check_int("step", step, 0)
        _check_int("global_batch", global_batch, 1)
        slots = torch.tensor([k[1] for k in keys])
        if int(slots.min()) < 0 or int(slots.max()) >= global_batch:
            raise ValueError(f"slot values {slots.tolist()} must lie in [0, global_batch={global_batch})")
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + step) % 2**63)
        context_idx, target_idx = self.sample(global_batch, generator)
        return context_idx.index_select(0, slots), target_idx.index_select(0, slots)


class MultiBlockMaskCollator(MaskCollator):
    """The paper's multi-block masks (kwargs of `sample_masks`)."""

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return sample_masks(batch_size, self.grid, generator=generator, **self.mask_kwargs)


class RandomMaskCollator(MaskCollator):
    """Random-patch masks (kwargs of `sample_random_masks`)."""

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return sample_random_masks(batch_size, self.grid, generator=generator, **self.mask_kwargs)


class BlockMaskCollator(MaskCollator):
    """Single-block masks (kwargs of `sample_block_masks`)."""

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return sample_block_masks(batch_size, self.grid, generator=generator, **self.mask_kwargs)


class RasterizedMaskCollator(MaskCollator):
    """Quadrant masks (`sample_rasterized_masks`)."""

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return sample_rasterized_masks(batch_size, self.grid, generator=generator, **self.mask_kwargs)


COLLATORS: dict[str, type[MaskCollator]] = {
    "multiblock": MultiBlockMaskCollator,
    "random": RandomMaskCollator,
    "block": BlockMaskCollator,
    "rasterized": RasterizedMaskCollator,
}


def make_collator(strategy: str, grid: Grid, *, seed: int = 0, **kwargs) -> MaskCollator:
    """Collator for a masking strategy: 'multiblock' (the paper's), 'random', 'block' or 'rasterized'."""
    if strategy not in COLLATORS:
        raise ValueError(f"strategy={strategy!r} is not one of {sorted(COLLATORS)}")
    return COLLATORS[strategy](grid, seed=seed, **kwargs)
