"""The masking table's other strategies (random patches, one big block, rasterized quadrants) and, for
comparison only, a re-implementation of the official code's multi-block sampler.

Each returns `context_idx [B, Kc]` and `target_idx [B, M, Kt]` as masks.sample_masks does."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from .masks import (
    Grid,
    _as_grid,
    _block_indices,
    _check_geometry,
    _check_int,
    _check_range,
    _positions,
    _row_bits,
    _uniform,
    _unpack_bits,
    block_size,
    subsample_sorted,
)


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
    context = _unpack_bits(~_row_bits(pos[:, 0], pos[:, 1], size, H, W=W), W).flatten(1)  # [B, N]
    # Every row has the same count, and nonzero() lists (row, col) pairs in raster order: already sorted.
    context_idx = context.nonzero()[:, 1].view(batch_size, H * W - h * w)
    return context_idx, _block_indices(pos[:, 0], pos[:, 1], h, w, W=W)[:, None, :]


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


def official_collator_sample(
    batch_size: int,
    grid: Grid,
    *,
    min_keep: int = 4,
    max_tries: int = 20,
    generator: torch.Generator | None = None,
    **geometry,
) -> tuple[Tensor, Tensor]:
    """The official I-JEPA collator's behaviour, flaws included, re-implemented for the lesson of notebook 01.

    `geometry`: the keys of `masks.MULTIBLOCK` (the paper's values by default), except that the official
    code's `min_keep` stands in for `min_context`.

    Flaws kept: one random number drives both scale and aspect; block sides are clamped to H-1 / W-1 and
    positions drawn with an exclusive bound `randint(0, H - h)`, so blocks never touch the last row/column;
    contexts are equalised by truncation in raster order (the bottom rows go first). Where the original
    retries forever (a block of <= min_keep patches), this raises RuntimeError after bounded tries.
    Deliberately a per-image Python loop, like the original; defaults are the paper's config.
    """
    _check_int("batch_size", batch_size, 1)
    H, W = _as_grid(grid)
    g = _check_geometry(geometry)
    n_targets = _check_int("n_targets", g["n_targets"], 1)
    _check_int("max_tries", max_tries, 1)
    target_hw = _official_size((H, W), g["target_scale"], g["target_aspect"], generator)
    context_hw = _official_size((H, W), g["context_scale"], g["context_aspect"], generator)
    tries = dict(min_keep=min_keep, max_tries=max_tries, generator=generator)
    contexts, targets = [], []
    for _ in range(batch_size):
        targets.append([_official_block((H, W), target_hw, **tries) for _ in range(n_targets)])
        contexts.append(_official_context((H, W), context_hw, targets[-1], **tries))
    kc = min(len(c) for c in contexts)
    kt = min(len(t) for ts in targets for t in ts)
    context_idx = torch.stack([c[:kc] for c in contexts])  # flaw: raster truncation
    target_idx = torch.stack([torch.stack([t[:kt] for t in ts]) for ts in targets])
    return context_idx, target_idx


def _official_size(grid: tuple[int, int], scale, aspect, generator) -> tuple[int, int]:
    """A block's (h, w) as the official collator draws it, once per batch."""
    H, W = grid
    u = float(torch.rand(1, generator=generator))  # flaw: one draw for both scale and aspect
    keep = int(H * W * _uniform(u, *scale))
    h = round(math.sqrt(keep * _uniform(u, *aspect)))
    w = round(math.sqrt(keep / _uniform(u, *aspect)))
    return min(max(h, 1), H - 1), min(max(w, 1), W - 1)


def _official_mask(grid: tuple[int, int], hw: tuple[int, int], generator) -> Tensor:
    """[H, W] bool: one h x w block at a random position, drawn as the official collator draws it."""
    (H, W), (h, w) = grid, hw
    top = int(torch.randint(0, H - h, (1,), generator=generator))  # flaw: exclusive upper bound
    left = int(torch.randint(0, W - w, (1,), generator=generator))
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[top : top + h, left : left + w] = True
    return mask


def _official_block(grid, hw, *, min_keep: int, max_tries: int, generator) -> Tensor:
    """The patch indices of one target block of more than `min_keep` patches, after at most `max_tries`."""
    for _ in range(max_tries):
        mask = _official_mask(grid, hw, generator)
        if mask.sum() > min_keep:
            return mask.flatten().nonzero()[:, 0]
    raise RuntimeError(
        f"a {hw[0]}x{hw[1]} target block never has more than min_keep={min_keep} patches: "
        f"the official collator would retry forever here"
    )


def _official_context(
    grid, hw, image_targets: list[Tensor], min_keep: int, max_tries: int, generator
) -> Tensor:
    """The context's patch indices: a block minus the targets; after each round of failures, one fewer
    target is removed."""
    for n_regions in range(len(image_targets), -1, -1):
        for _ in range(max_tries):
            mask = _official_mask(grid, hw, generator).flatten()
            for t in image_targets[:n_regions]:
                mask[t] = False
            if mask.sum() > min_keep:
                return mask.nonzero()[:, 0]
    raise RuntimeError(
        f"no context block of more than min_keep={min_keep} patches: the original loops forever"
    )
