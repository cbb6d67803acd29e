"""Tests for jepa_lite.core.masks: multi-block geometry, ablation strategies, collators, seeding protocol."""

import pickle

import pytest
import torch
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from jepa_lite.core.collate import (
    Batch,
    BlockMaskCollator,
    MaskCollator,
    MultiBlockMaskCollator,
    RandomMaskCollator,
    RasterizedMaskCollator,
    make_collator,
)
from jepa_lite.core.mask_strategies import (
    official_collator_sample,
    sample_block_masks,
    sample_random_masks,
    sample_rasterized_masks,
)
from jepa_lite.core.masks import (
    block_size,
    masks_to_grid,
    sample_masks,
    sample_multiblock_grids,
    subsample_sorted,
)

SETTINGS = settings(max_examples=40, deadline=None)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def block_shape(idx: torch.Tensor, W: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the bounding box of one index set."""
    rows, cols = idx // W, idx % W
    top, left = int(rows.min()), int(cols.min())
    return top, left, int(rows.max()) - top + 1, int(cols.max()) - left + 1


def assert_sorted_unique_in_range(idx: torch.Tensor, n: int) -> None:
    assert idx.dtype == torch.long
    assert int(idx.min()) >= 0 and int(idx.max()) < n
    assert (idx[..., 1:] > idx[..., :-1]).all(), "indices must be strictly increasing (sorted, no duplicates)"


def assert_multiblock_invariants(context_idx, target_idx, H, W, min_context=1):
    B, M, Kt = target_idx.shape
    assert context_idx.shape[0] == B and context_idx.shape[1] >= min_context
    assert_sorted_unique_in_range(context_idx, H * W)
    assert_sorted_unique_in_range(target_idx, H * W)
    # Context never contains a target patch.
    overlap = masks_to_grid(context_idx, (H, W)) & masks_to_grid(target_idx, (H, W)).any(dim=1)
    assert not overlap.any()
    # Every target is a full rectangle, and all share one size.
    shapes = set()
    for block in target_idx.reshape(-1, Kt):
        top, left, h, w = block_shape(block, W)
        assert h * w == Kt, "a target block is not a full rectangle"
        shapes.add((h, w))
    assert len(shapes) == 1


# ---------------------------------------------------------------------------------------------------------
# multi-block masks


def test_shapes_and_paper_defaults():
    context_idx, target_idx = sample_masks(8, 14, generator=gen())
    assert context_idx.ndim == 2 and context_idx.shape[0] == 8
    assert target_idx.shape[:2] == (8, 4)
    # Paper: targets cover 15-20% of the image each (up to rounding on a 14x14 grid).
    assert 0.1 <= target_idx.shape[2] / 196 <= 0.25
    assert_multiblock_invariants(context_idx, target_idx, 14, 14, min_context=4)


def test_non_square_grid():
    context_idx, target_idx = sample_masks(16, (6, 11), generator=gen(1))
    assert_multiblock_invariants(context_idx, target_idx, 6, 11)


def test_block_size_formula():
    assert block_size(0.2, 1.0, 14) == (6, 6)  # sqrt(39.2) = 6.26
    assert block_size(0.2, 1.5, 14) == (8, 5)  # sqrt(58.8) = 7.7, sqrt(26.1) = 5.1
    assert block_size(1.0, 1.0, (4, 9)) == (4, 6)  # clamped to H
    assert block_size(0.001, 1.0, 14) == (1, 1)


def test_context_count_is_batch_minimum_and_a_subset_of_the_context_grid():
    context_grid, targets = sample_multiblock_grids(32, 14, generator=gen(3))
    context_idx, targets2 = sample_masks(32, 14, generator=gen(3))  # same stream, then subsampling
    assert torch.equal(targets, targets2)
    counts = context_grid.flatten(1).sum(dim=1)
    assert context_idx.shape[1] == int(counts.min())
    assert counts.max() > counts.min(), "test needs unequal counts to mean anything"
    chosen = masks_to_grid(context_idx, 14)
    assert not (chosen & ~context_grid).any()
    full = counts == counts.min()  # rows at the minimum keep their whole context
    assert torch.equal(chosen[full], context_grid[full])


def test_subsample_is_uniform_not_raster_truncation():
    mask = torch.zeros(1, 50, dtype=torch.bool)
    mask[0, 10:40] = True
    draws = torch.cat([subsample_sorted(mask.expand(200, -1), 6, gen(s)) for s in range(10)])  # 2000 rows
    assert_sorted_unique_in_range(draws, 50)
    freq = torch.bincount(draws.flatten(), minlength=50).float() / len(draws)
    assert freq[:10].sum() == 0 and freq[40:].sum() == 0
    assert torch.allclose(freq[10:40], torch.full((30,), 6 / 30), atol=0.04)  # each kept with p = k / n


def test_last_row_and_column_are_reachable():
    H = W = 14
    target_cover = torch.zeros(H, W, dtype=torch.bool)
    context_cover = torch.zeros(H, W, dtype=torch.bool)
    for s in range(30):
        context_idx, target_idx = sample_masks(32, 14, generator=gen(s))
        target_cover |= masks_to_grid(target_idx, 14).flatten(0, 1).any(0)
        context_cover |= masks_to_grid(context_idx, 14).any(0)
    assert target_cover[-1].all() and target_cover[:, -1].all()
    assert context_cover[-1].all() and context_cover[:, -1].all()
    # The official collator's exclusive bound never reaches them (the lesson of notebook 01).
    c, t = official_collator_sample(64, 14, generator=gen(0))
    assert not masks_to_grid(t, 14)[..., -1, :].any() and not masks_to_grid(t, 14)[..., :, -1].any()
    assert not masks_to_grid(c, 14)[..., -1, :].any()


def test_target_positions_are_uniform_over_every_valid_top_left():
    # Fixed 6x6 blocks on a 14x14 grid: tops and lefts uniform on 0..8 (9 values), last one included.
    tops = []
    for s in range(40):
        _, t = sample_masks(64, 14, target_scale=(0.16, 0.16), target_aspect=(1, 1), generator=gen(s))
        tops.append(t[..., 0] // 14)  # first index of a block is its top-left corner
        tops.append(t[..., 0] % 14)
    counts = torch.bincount(torch.cat(tops).flatten(), minlength=14).float()
    assert counts[9:].sum() == 0
    expected = counts.sum() / 9
    chi2 = ((counts[:9] - expected) ** 2 / expected).sum()
    assert chi2 < 40, f"positions not uniform: counts {counts[:9].tolist()}"  # df = 8, p ~ 1e-5


def test_context_coverage_is_symmetric_not_biased_to_top_left():
    heat = torch.zeros(14, 14)
    for s in range(60):
        context_idx, _ = sample_masks(64, 14, generator=gen(s))
        heat += masks_to_grid(context_idx, 14).float().mean(0)
    heat /= 60
    # Uniform positions + uniform subsampling => coverage invariant under a 180-degree rotation.
    assert (heat - heat.flip(0, 1)).abs().max() < 0.08
    assert abs(heat[0].mean() - heat[-1].mean()) < 0.05
    # The official collator (exclusive bound + raster truncation) is far from symmetric.
    off = masks_to_grid(official_collator_sample(64, 14, generator=gen(0))[0], 14).float().mean(0)
    assert (off - off.flip(0, 1)).abs().max() > 0.5 and off[-1].sum() == 0


def _drawn_sizes(fn, n=300, grid=32):
    g = gen(0)
    h, w = [], []
    for _ in range(n):
        _, t = fn(1, grid, generator=g)
        _, _, bh, bw = block_shape(t[0, 0], grid)
        h.append(bh)
        w.append(bw)
    return torch.tensor(h, dtype=torch.float64), torch.tensor(w, dtype=torch.float64)


def _corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_scale_and_aspect_are_drawn_independently():
    h, w = _drawn_sizes(sample_masks)
    assert abs(_corr(h * w, h / w)) < 0.3  # independent draws: area and aspect uncorrelated
    h, w = _drawn_sizes(official_collator_sample, n=100)
    assert _corr(h * w, h / w) > 0.8  # one shared draw: nearly perfectly correlated


def test_same_seed_same_masks_different_seed_different():
    a = sample_masks(16, 14, generator=gen(7))
    b = sample_masks(16, 14, generator=gen(7))
    c = sample_masks(16, 14, generator=gen(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[1], c[1])


def test_impossible_context_raises_after_bounded_retries():
    # A full 4x4 context block always loses its target patches, so 16 context patches can never be reached.
    with pytest.raises(RuntimeError, match="min_context=16"):
        sample_masks(4, 4, context_scale=(1.0, 1.0), min_context=16, generator=gen())


def test_small_grid_where_the_official_collator_hangs_works():
    # 8x8 grid, tiny targets: the official loop needs > min_keep patches per target and never gets them.
    kwargs = dict(target_scale=(0.05, 0.05), target_aspect=(1.0, 1.0))
    with pytest.raises(RuntimeError, match="forever"):
        official_collator_sample(4, 8, min_keep=4, max_tries=5, generator=gen(), **kwargs)
    context_idx, target_idx = sample_masks(64, 8, min_context=4, generator=gen(), **kwargs)
    assert_multiblock_invariants(context_idx, target_idx, 8, 8, min_context=4)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(grid=1), "grid"),
        (dict(grid=(4, 1)), "grid"),
        (dict(grid=(4, 4, 4)), "grid"),
        (dict(grid=4.0), "grid"),
        (dict(n_targets=0), "n_targets"),
        (dict(target_scale=(0.9, 1.2)), "target_scale"),
        (dict(target_scale=(0.3, 0.2)), "target_scale"),
        (dict(target_scale=(0.0, 0.2)), "target_scale"),
        (dict(target_scale=0.2), "target_scale"),
        (dict(target_aspect=(-1.0, 1.0)), "target_aspect"),
        (dict(context_scale=(0.85, 1.5)), "context_scale"),
        (dict(context_aspect=(0.0, 1.0)), "context_aspect"),
        (dict(min_context=0), "min_context"),
        (dict(min_context=197), "min_context"),
        (dict(context_scale=(0.1, 0.1), min_context=30), "min_context"),
    ],
)
def test_bad_multiblock_arguments_raise_value_error_naming_the_parameter(kwargs, name):
    args = dict(batch_size=4, grid=14) | kwargs
    with pytest.raises(ValueError, match=name):
        sample_masks(args.pop("batch_size"), args.pop("grid"), **args)


@pytest.mark.parametrize(
    "fn, kwargs, name",
    [
        (sample_random_masks, dict(target_ratio=1.0), "target_ratio"),
        (sample_random_masks, dict(target_ratio=0), "target_ratio"),
        (sample_block_masks, dict(target_scale=(0.5, 1.1)), "target_scale"),
        (sample_block_masks, dict(target_aspect=(2.0, 1.0)), "target_aspect"),
        (sample_rasterized_masks, dict(grid=1), "grid"),
        (sample_rasterized_masks, dict(batch_size=-1), "batch_size"),
    ],
)
def test_bad_ablation_arguments_raise_value_error(fn, kwargs, name):
    args = dict(batch_size=4, grid=14) | kwargs
    with pytest.raises(ValueError, match=name):
        fn(args.pop("batch_size"), args.pop("grid"), **args)


@SETTINGS
@given(
    H=st.integers(4, 16),
    W=st.integers(4, 16),
    n_targets=st.integers(1, 4),
    lo=st.floats(0.02, 0.3),
    span=st.floats(0.0, 0.2),
    aspect=st.tuples(st.floats(0.3, 1.0), st.floats(1.0, 3.0)),
    context_lo=st.floats(0.5, 1.0),
    batch=st.integers(1, 8),
    seed=st.integers(0, 2**31),
)
def test_multiblock_invariants_hold_over_grids_and_scales(
    H, W, n_targets, lo, span, aspect, context_lo, batch, seed
):
    try:
        context_idx, target_idx = sample_masks(
            batch,
            (H, W),
            n_targets=n_targets,
            target_scale=(lo, min(lo + span, 1.0)),
            target_aspect=aspect,
            context_scale=(context_lo, 1.0),
            min_context=2,
            generator=gen(seed),
        )
    except RuntimeError as e:  # documented outcome when targets keep covering the context block
        assert "min_context" in str(e)
        reject()
    assert target_idx.shape[:2] == (batch, n_targets)
    assert_multiblock_invariants(context_idx, target_idx, H, W, min_context=2)


@settings(max_examples=15, deadline=None)
@given(H=st.integers(2, 6), W=st.integers(60, 130), seed=st.integers(0, 2**31))
def test_multiblock_on_wide_grids_that_need_several_bit_words(H, W, seed):
    context_idx, target_idx = sample_masks(4, (H, W), min_context=1, generator=gen(seed))
    assert_multiblock_invariants(context_idx, target_idx, H, W)


def test_block_bit_masks_match_boolean_grids():
    from jepa_lite.core.masks import _positions, _row_bits, _unpack_bits  # the vectorised core

    g = gen(0)
    for H, W in [(14, 14), (4, 9), (8, 62), (5, 63), (3, 130), (2, 124)]:
        sizes = torch.stack(
            [torch.randint(1, H + 1, (4,), generator=g), torch.randint(1, W + 1, (4,), generator=g)], -1
        )
        pos = _positions(16, torch.tensor([H, W]) - sizes + 1, g)  # [16, 4, 2]
        got = _unpack_bits(_row_bits(pos[..., 0], pos[..., 1], sizes, H, W), W)
        rows, cols = torch.arange(H), torch.arange(W)
        top, left = pos[..., 0, None], pos[..., 1, None]
        in_rows = (rows >= top) & (rows < top + sizes[:, 0, None])
        in_cols = (cols >= left) & (cols < left + sizes[:, 1, None])
        assert torch.equal(got, in_rows[..., :, None] & in_cols[..., None, :]), (H, W)


# ---------------------------------------------------------------------------------------------------------
# ablation strategies


@SETTINGS
@given(H=st.integers(2, 16), W=st.integers(2, 16), ratio=st.floats(0.05, 0.95), seed=st.integers(0, 2**31))
def test_random_masks_split_all_patches(H, W, ratio, seed):
    context_idx, target_idx = sample_random_masks(4, (H, W), target_ratio=ratio, generator=gen(seed))
    n = H * W
    assert target_idx.shape[:2] == (4, 1)
    assert target_idx.shape[2] == min(max(round(ratio * n), 1), n - 1)
    assert context_idx.shape[1] + target_idx.shape[2] == n
    assert_sorted_unique_in_range(context_idx, n)
    assert_sorted_unique_in_range(target_idx, n)
    c, t = masks_to_grid(context_idx, (H, W)), masks_to_grid(target_idx[:, 0], (H, W))
    assert not (c & t).any() and (c | t).all()


def test_random_masks_default_is_sixty_percent_and_varies():
    context_idx, target_idx = sample_random_masks(8, 14, generator=gen())
    assert target_idx.shape == (8, 1, round(0.6 * 196))
    assert not torch.equal(target_idx[0], target_idx[1])


@SETTINGS
@given(H=st.integers(2, 16), W=st.integers(2, 70), scale=st.floats(0.05, 1.0), seed=st.integers(0, 2**31))
def test_block_masks_context_is_the_complement_of_one_block(H, W, scale, seed):
    context_idx, target_idx = sample_block_masks(4, (H, W), target_scale=(scale, scale), generator=gen(seed))
    assert target_idx.shape[:2] == (4, 1) and context_idx.shape[1] >= 1
    assert_sorted_unique_in_range(context_idx, H * W)
    _, _, h, w = block_shape(target_idx[0, 0], W)
    for block in target_idx[:, 0]:
        assert block_shape(block, W)[2:] == (h, w) and h * w == target_idx.shape[2]
    c, t = masks_to_grid(context_idx, (H, W)), masks_to_grid(target_idx[:, 0], (H, W))
    assert torch.equal(c, ~t)


def quadrant_ids(H, W):
    rows = (torch.arange(H) >= H // 2).long()[:, None]
    cols = (torch.arange(W) >= W // 2).long()[None, :]
    return (2 * rows + cols).flatten()


@SETTINGS
@given(H=st.integers(2, 16), W=st.integers(2, 16), seed=st.integers(0, 2**31))
def test_rasterized_context_is_one_quadrant_and_targets_the_other_three(H, W, seed):
    context_idx, target_idx = sample_rasterized_masks(8, (H, W), generator=gen(seed))
    q = (H // 2) * (W // 2)
    assert context_idx.shape == (8, q) and target_idx.shape == (8, 3, q)
    assert_sorted_unique_in_range(context_idx, H * W)
    assert_sorted_unique_in_range(target_idx, H * W)
    quad = quadrant_ids(H, W)
    cq, tq = quad[context_idx], quad[target_idx]  # quadrant of every chosen patch
    assert (cq == cq[:, :1]).all() and (tq == tq[..., :1]).all()  # each set lies in one quadrant
    labels = torch.cat([cq[:, :1], tq[:, :, 0]], dim=1).sort(dim=1).values
    assert torch.equal(labels, torch.arange(4).expand(8, 4))  # the four sets use the four quadrants
    if H % 2 == 0 and W % 2 == 0:  # even grids: every quadrant is taken whole
        c, t = masks_to_grid(context_idx, (H, W)), masks_to_grid(target_idx, (H, W)).any(1)
        assert (c ^ t).all()


def test_rasterized_uses_every_quadrant_as_context():
    context_idx, _ = sample_rasterized_masks(64, 14, generator=gen())
    assert set(quadrant_ids(14, 14)[context_idx[:, 0]].tolist()) == {0, 1, 2, 3}


# ---------------------------------------------------------------------------------------------------------
# helpers


def test_masks_to_grid_round_trip_and_range_check():
    context_idx, target_idx = sample_masks(4, (6, 9), generator=gen())
    grid = masks_to_grid(target_idx, (6, 9))
    assert grid.shape == (4, 4, 6, 9) and grid.dtype == torch.bool
    assert torch.equal(grid.flatten(2).nonzero()[:, 2].view_as(target_idx), target_idx)
    assert masks_to_grid(context_idx, (6, 9)).shape == (4, 6, 9)
    with pytest.raises(ValueError, match="idx"):
        masks_to_grid(torch.tensor([[0, 54]]), (6, 9))


def test_official_collator_keeps_its_flaws():
    c, t = official_collator_sample(16, 14, generator=gen(1))
    assert t.shape[:2] == (16, 4)
    # Context block clamped to 13x13 and drawn with randint(0, 1): always the same top-left square.
    assert ((c // 14) < 13).all() and ((c % 14) < 13).all()
    # Raster truncation: every row keeps a prefix, so the kept set ends early in raster order.
    assert c[:, -1].float().mean() < 150


# ---------------------------------------------------------------------------------------------------------
# collators and the seeding protocol


def make_samples(n, key=None, channels=1, size=8):
    images = torch.randn(n, channels, size, size, generator=gen(99))
    if key is None:
        return [(images[i], i % 10) for i in range(n)]
    step, global_batch, slots = key
    return [(images[i], torch.tensor(i % 10), (step, s, global_batch)) for i, s in enumerate(slots)]


def test_collator_returns_a_batch():
    collate = MultiBlockMaskCollator(14, seed=0)
    batch = collate(make_samples(6))
    assert isinstance(batch, Batch) and len(batch) == 6
    assert batch.images.shape == (6, 1, 8, 8) and batch.images.dtype == torch.float32
    assert batch.labels.tolist() == [0, 1, 2, 3, 4, 5] and batch.labels.dtype == torch.long
    assert batch.context_idx.shape[0] == 6 and batch.target_idx.shape[:2] == (6, 4)
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and torch.equal(moved.images, batch.images)
    unlabelled = collate([torch.zeros(3, 4, 4, dtype=torch.uint8)] * 2)
    assert unlabelled.labels is None and unlabelled.images.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pin_memory needs an accelerator")
def test_batch_pin_memory():
    batch = MultiBlockMaskCollator(14)(make_samples(2)).pin_memory()
    assert batch.images.is_pinned() and batch.context_idx.is_pinned()


def test_keyed_collation_depends_only_on_seed_and_step():
    a = MultiBlockMaskCollator(14, seed=3)(make_samples(4, key=(10, 4, range(4))))
    b = MultiBlockMaskCollator(14, seed=3)(make_samples(4, key=(10, 4, range(4))))
    c = MultiBlockMaskCollator(14, seed=3)(make_samples(4, key=(11, 4, range(4))))
    d = MultiBlockMaskCollator(14, seed=4)(make_samples(4, key=(10, 4, range(4))))
    assert torch.equal(a.context_idx, b.context_idx) and torch.equal(a.target_idx, b.target_idx)
    assert not torch.equal(a.target_idx, c.target_idx)
    assert not torch.equal(a.target_idx, d.target_idx)


@pytest.mark.parametrize("strategy", ["multiblock", "random", "block", "rasterized"])
def test_slices_of_a_global_batch_equal_the_whole(strategy):
    step, global_batch = 7, 8
    whole = make_collator(strategy, 14, seed=1)(make_samples(8, key=(step, global_batch, range(8))))
    # Two "processes", each with its own collator, collate one half; a third gets shuffled slots.
    first = make_collator(strategy, 14, seed=1)(make_samples(4, key=(step, global_batch, range(4))))
    second = make_collator(strategy, 14, seed=1)(make_samples(4, key=(step, global_batch, range(4, 8))))
    assert torch.equal(torch.cat([first.context_idx, second.context_idx]), whole.context_idx)
    assert torch.equal(torch.cat([first.target_idx, second.target_idx]), whole.target_idx)
    slots = [5, 0, 3]
    picked = make_collator(strategy, 14, seed=1)(make_samples(3, key=(step, global_batch, slots)))
    assert torch.equal(picked.target_idx, whole.target_idx[slots])


@SETTINGS
@given(global_batch=st.integers(1, 16), step=st.integers(0, 10**6), data=st.data())
def test_any_split_of_the_global_batch_matches(global_batch, step, data):
    collate = MultiBlockMaskCollator(8, seed=2)
    whole = collate(make_samples(global_batch, key=(step, global_batch, range(global_batch))))
    cut = data.draw(st.integers(0, global_batch))
    parts = [range(cut), range(cut, global_batch)]
    parts = [collate(make_samples(len(p), key=(step, global_batch, p))) for p in parts if len(p)]
    assert torch.equal(torch.cat([p.context_idx for p in parts]), whole.context_idx)
    assert torch.equal(torch.cat([p.target_idx for p in parts]), whole.target_idx)


def test_bad_keys_raise_value_error():
    collate = MultiBlockMaskCollator(14)
    samples = make_samples(2, key=(1, 4, [0, 1]))
    with pytest.raises(ValueError, match="step"):
        collate([samples[0], (samples[1][0], 0, (2, 1, 4))])
    with pytest.raises(ValueError, match="global_batch"):
        collate([samples[0], (samples[1][0], 0, (1, 1, 5))])
    with pytest.raises(ValueError, match="slot"):
        collate(make_samples(2, key=(1, 4, [0, 4])))
    with pytest.raises(ValueError, match="key"):
        collate([samples[0], (samples[1][0], 0)])
    with pytest.raises(ValueError, match="samples"):
        collate([])


def test_unkeyed_calls_are_reproducible_and_differ_between_calls():
    a, b = MultiBlockMaskCollator(14, seed=5), MultiBlockMaskCollator(14, seed=5)
    first = [a(make_samples(4)).target_idx for _ in range(3)]
    second = [b(make_samples(4)).target_idx for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    assert not torch.equal(first[0], first[1])
    c = MultiBlockMaskCollator(14, seed=5)
    c.set_epoch(1)
    assert not torch.equal(c(make_samples(4)).target_idx, first[0])


def test_make_collator_and_validation_at_construction():
    kinds = {
        "multiblock": MultiBlockMaskCollator,
        "random": RandomMaskCollator,
        "block": BlockMaskCollator,
        "rasterized": RasterizedMaskCollator,
    }
    for name, cls in kinds.items():
        collate = make_collator(name, 8, seed=1)
        assert type(collate) is cls and isinstance(collate, MaskCollator)
    with pytest.raises(ValueError, match="multiblock"):
        make_collator("checkerboard", 8)
    with pytest.raises(ValueError, match="target_scale"):
        make_collator("multiblock", 14, target_scale=(0.5, 2.0))  # raised now, not inside a worker
    with pytest.raises(TypeError):
        make_collator("rasterized", 14, target_scale=(0.5, 0.5))
    with pytest.raises(ValueError, match="seed"):
        make_collator("random", 14, seed=-1)


def test_collator_is_picklable():
    collate = make_collator("multiblock", 14, seed=4, n_targets=2)
    clone = pickle.loads(pickle.dumps(collate))
    samples = make_samples(4, key=(3, 4, range(4)))
    assert torch.equal(clone(samples).target_idx, collate(samples).target_idx)


class TinyDataset(torch.utils.data.Dataset):
    def __init__(self, n=16, keyed=False, batch_size=4):
        self.images = torch.randn(n, 1, 8, 8, generator=gen(0))
        self.keyed, self.batch_size = keyed, batch_size

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        if self.keyed:  # step = batch number, slot = position in the batch
            return self.images[i], i % 10, (i // self.batch_size, i % self.batch_size, self.batch_size)
        return self.images[i], i % 10


def test_collator_in_a_dataloader_with_two_workers_is_reproducible():
    def run(keyed):
        loader = torch.utils.data.DataLoader(
            TinyDataset(keyed=keyed),
            batch_size=4,
            num_workers=2,
            collate_fn=MultiBlockMaskCollator(8, seed=1),
        )
        return list(loader)

    first, second = run(False), run(False)
    assert len(first) == 4
    for x, y in zip(first, second):
        assert torch.equal(x.images, y.images) and torch.equal(x.target_idx, y.target_idx)
        assert torch.equal(x.context_idx, y.context_idx)
    # Batches 0 and 1 go to different workers (both on their first call): their masks must differ.
    assert not torch.equal(first[0].target_idx, first[1].target_idx)
    # Keyed samples: the workers give exactly what an in-process collator gives.
    keyed = run(True)
    local = MultiBlockMaskCollator(8, seed=1)
    dataset = TinyDataset(keyed=True)
    for step, batch in enumerate(keyed):
        expected = local([dataset[i] for i in range(4 * step, 4 * step + 4)])
        assert torch.equal(batch.target_idx, expected.target_idx)
        assert torch.equal(batch.context_idx, expected.context_idx)
