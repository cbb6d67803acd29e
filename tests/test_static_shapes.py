"""Fixed-shape masks (`mask.context_fill=fixed`): every step has the same Kc and Kt, padding changes nothing the
loss sees, a compiled step compiles once, and the analytic FLOPs agree with torch's own count."""

import pytest
import torch

from jepa_lite.core.build import build_collator, build_encoder, build_method
from jepa_lite.core.collate import Batch
from jepa_lite.core.config import check_config, load_config
from jepa_lite.core.flops import ijepa_step_flops, plain_vit_step_flops
from jepa_lite.core.masks import (
    block_size,
    fit_sorted,
    fixed_lengths,
    masks_to_grid,
    max_block_area,
    sample_masks,
    sample_multiblock_grids,
)


def test_fit_sorted_keeps_short_rows_whole_and_subsamples_long_ones():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(200, 49, generator=g) < torch.linspace(0.1, 0.9, 200)[:, None]
    out = fit_sorted(mask, 20, g)
    assert out.shape == (200, 20)
    for row, m in zip(out, mask):
        real = row[row >= 0]
        assert torch.equal(real, real.sort().values) and len(set(real.tolist())) == len(real)
        assert m[real].all()  # only positions of the mask
        assert len(real) == min(20, int(m.sum()))  # short rows whole, long rows cut to the length
        assert (row[len(real) :] == -1).all()  # padding at the end
    with pytest.raises(ValueError, match="length=50"):
        fit_sorted(mask, 50)


@pytest.mark.parametrize("grid", [(7, 7), (14, 14)])
def test_fixed_masks_have_one_shape_and_keep_the_multiblock_properties(grid):
    lc, lt = fixed_lengths(grid)
    for seed in range(30):
        ctx, tgt = sample_masks(16, grid, context_fill="fixed", generator=torch.Generator().manual_seed(seed))
        assert ctx.shape == (16, lc) and tgt.shape == (16, 4, lt)
        # The same draw before equalising: the fixed context is part of that context, whole where it fits.
        full, tgt_ref = sample_multiblock_grids(16, grid, generator=torch.Generator().manual_seed(seed))
        full = full.flatten(1)
        real_t = (tgt >= 0).sum(-1)
        assert (real_t == tgt_ref.shape[-1]).all() and torch.equal(tgt[..., : tgt_ref.shape[-1]], tgt_ref)
        kept = masks_to_grid(ctx, grid).flatten(1)
        assert not (kept & ~full).any()
        assert torch.equal(kept.sum(1), full.sum(1).clamp(max=lc))
        covered = masks_to_grid(tgt, grid).flatten(2).any(1)
        assert not (kept & covered).any()  # context and targets stay disjoint


def test_fixed_lengths_fit_every_target_block_and_most_contexts():
    grid = (16, 16)
    lc, lt = fixed_lengths(grid)
    # target_length: the largest block block_size gives over the ranges, by a plain scan
    areas = [
        h * w
        for s in torch.linspace(0.15, 0.2, 301).tolist()
        for a in torch.linspace(0.75, 1.5, 301).tolist()
        for h, w in [block_size(s, a, grid)]
    ]
    assert lt == max(areas) == max_block_area((0.15, 0.2), (0.75, 1.5), grid)
    # context_length: about 95% of contexts fit whole, on draws the length was not computed from
    gen = torch.Generator().manual_seed(123)
    counts = torch.cat([sample_multiblock_grids(4, grid, generator=gen)[0].sum((1, 2)) for _ in range(500)])
    assert 0.88 < float((counts <= lc).float().mean()) < 0.995
    assert fixed_lengths.__wrapped__(grid) == (lc, lt)  # a function of the geometry alone


def _tiny(method: str, fill: str = "fixed"):
    overrides = [f"mask.context_fill={fill}", "model.depth=1", "model.predictor_depth=1"]
    if method == "mae":
        overrides.append("method.name=mae")  # with multi-block masks: the pixel-target I-JEPA of the grid
    cfg = check_config(load_config(overrides=overrides))
    torch.manual_seed(0)
    return cfg, build_method(cfg, 1).eval(), build_collator(cfg, (7, 7))


@pytest.mark.parametrize("method", ["ijepa", "mae"])
def test_padding_changes_nothing_the_loss_sees(method):
    """The padded batch's loss is the mean of each image's loss computed alone, without any padding."""
    _, model, collator = _tiny(method)
    images = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    for _ in range(10):  # until a batch pads both contexts and target blocks
        batch = collator([(images[i], 0) for i in range(6)])
        if not batch.target_valid.all() and not batch.context_valid.all():
            break
    assert not batch.target_valid.all() and not batch.context_valid.all()
    with torch.no_grad():
        padded, _ = model(batch)
        alone = []
        for i in range(6):
            ctx = batch.context_idx[i][batch.context_valid[i]][None]
            tgt = batch.target_idx[i][batch.target_valid[i]].view(1, 4, -1)
            alone.append(model(Batch(images[i : i + 1], ctx, tgt))[0])
    assert padded.item() == pytest.approx(torch.stack(alone).mean().item(), rel=1e-5)


def test_a_compiled_step_compiles_once_with_fixed_shapes_and_again_and_again_without():
    from torch._dynamo.testing import CompileCounter

    images = torch.randn(8, 1, 28, 28)
    frames = {}
    for fill, steps in (("fixed", 20), ("subsample", 6)):
        torch._dynamo.reset()
        _, model, collator = _tiny("ijepa", fill)
        model.train()
        counter = CompileCounter()
        model.compile(backend=counter, dynamic=False)
        for _ in range(steps):  # fresh masks every step, as in training
            loss, _ = model(collator([(x, 0) for x in images]))
            loss.backward()
        frames[fill] = counter.frame_count
    torch._dynamo.reset()
    assert frames["fixed"] == 1
    assert frames["subsample"] > 2  # a new Kc or Kt is a new graph


@pytest.mark.parametrize("fill", ["subsample", "fixed"])
def test_analytic_step_flops_match_torchs_flop_counter(fill):
    """flops.ijepa_step_flops at the batch's own token counts against FlopCounterMode on the real step (the
    math attention kernel, whose matrix products the counter sees). The counter also charges the gradient of
    the patch embedding's input, which the analytic count, like autograd, leaves out: hence 1%."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    cfg, model, collator = _tiny("ijepa", fill)
    batch = collator([(x, 0) for x in torch.randn(8, 1, 28, 28)])
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        loss, _ = model(batch)
        loss.backward()
    kc, kt = batch.context_idx.shape[1], batch.target_idx.shape[2]  # the slots computed, padding included
    analytic = ijepa_step_flops(cfg, kc=kc, kt=kt, n_targets=4).total * 8
    assert counter.get_total_flops() == pytest.approx(analytic, rel=0.01)


def test_plain_vit_reference_flops_match_torchs_flop_counter():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    cfg = load_config(overrides=["model.depth=2"])
    encoder = build_encoder(cfg, 1)
    head = torch.nn.Linear(encoder.embed_dim, 10)
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        head(encoder(torch.randn(4, 1, 28, 28)).mean(1)).sum().backward()
    assert counter.get_total_flops() == pytest.approx(plain_vit_step_flops(cfg, classes=10) * 4, rel=0.01)
    # and it is the I-JEPA target encoder's forward, three times, plus the head
    ijepa = ijepa_step_flops(cfg, kc=10, kt=5, n_targets=4)
    assert plain_vit_step_flops(cfg) == pytest.approx(3 * ijepa.target_encoder)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["mask.context_length=20"], "mask.context_length=20 applies to mask.context_fill=fixed only"),
        (["mask.context_fill=fixed", "mask.strategy=random"], "applies to mask.strategy=multiblock only"),
        (["mask.context_fill=fixed", "mask.target_length=0"], "mask.target_length=0 must be at least 1"),
    ],
)
def test_bad_fixed_shape_configs_are_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        check_config(load_config(overrides=overrides))


def test_explicit_lengths_are_used_and_checked():
    ctx, tgt = sample_masks(4, (7, 7), context_fill="fixed", context_length=20, target_length=15)
    assert ctx.shape == (4, 20) and tgt.shape == (4, 4, 15)
    with pytest.raises(ValueError, match="does not fit target_length=2"):
        sample_masks(4, (7, 7), context_fill="fixed", target_length=2)
    with pytest.raises(ValueError, match='apply to context_fill="fixed" only'):
        sample_masks(4, (7, 7), context_length=20)
