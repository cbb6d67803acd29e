"""Three places where the official I-JEPA recipe differs from the course default, each a config switch:
every context patch kept (padding + key-padding attention mask), the official initialisation, and crops."""

import pytest
import torch

from jepa_lite.core.build import build_method
from jepa_lite.core.collate import Batch, make_collator
from jepa_lite.core.config import check_config, load_config
from jepa_lite.core.masks import masks_to_grid, pad_sorted, sample_masks, sample_multiblock_grids
from jepa_lite.core.methods import IJEPA, MAE
from jepa_lite.core.models import PixelDecoder, Predictor, ViTEncoder, official_init_
from jepa_lite.core.views import random_resized_crop

GRID = (7, 7)


def _padded_batch(b=6, seed=0):
    ctx, tgt = sample_masks(b, GRID, context_fill="pad", generator=torch.Generator().manual_seed(seed))
    images = torch.randn(b, 1, 28, 28, generator=torch.Generator().manual_seed(seed + 1))
    return Batch.from_masks(images, ctx, tgt)


def _tiny_encoder():
    torch.manual_seed(0)
    return ViTEncoder(img_size=28, patch_size=4, in_chans=1, embed_dim=48, depth=2, num_heads=3).eval()


def test_pad_keeps_every_context_patch_and_draws_the_same_blocks_as_subsampling():
    g = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    grids, tgt_ref = sample_multiblock_grids(32, GRID, generator=g())
    ctx, tgt = sample_masks(32, GRID, context_fill="pad", generator=g())
    assert torch.equal(tgt, tgt_ref)
    counts = grids.flatten(1).sum(1)
    assert ctx.shape[1] == int(counts.max())  # padded to the longest context, not cut to the shortest
    assert torch.equal((ctx >= 0).sum(1), counts)
    assert torch.equal(masks_to_grid(ctx, GRID), grids)  # exactly the context block minus the targets
    for row, n in zip(ctx, counts.tolist()):
        assert torch.all(row[:n].diff() > 0) and torch.all(row[n:] == -1)  # sorted, padding at the end
    sub, _ = sample_masks(32, GRID, generator=g())
    assert sub.shape[1] == int(counts.min()) < ctx.shape[1]


def test_pad_sorted_on_a_hand_made_mask():
    mask = torch.tensor([[0, 1, 1, 0, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    assert pad_sorted(mask).tolist() == [[1, 2, 4], [0, -1, -1]]


def test_batch_from_masks_turns_padding_into_a_valid_mask():
    ctx = torch.tensor([[3, 5, 8], [2, -1, -1]])
    batch = Batch.from_masks(torch.zeros(2, 1, 4, 4), ctx, torch.zeros(2, 1, 1, dtype=torch.long))
    assert batch.context_valid.tolist() == [[True, True, True], [True, False, False]]
    assert batch.context_idx.tolist() == [[3, 5, 8], [2, 2, 2]]  # a gatherable index; attention ignores it
    plain = Batch.from_masks(torch.zeros(1, 1, 4, 4), ctx[:1], torch.zeros(1, 1, 1, dtype=torch.long))
    assert plain.context_valid is None
    assert torch.equal(batch.to("cpu").context_valid, batch.context_valid)


def test_padded_encoder_tokens_equal_each_image_run_alone():
    enc, batch = _tiny_encoder(), _padded_batch()
    with torch.no_grad():
        out = enc(batch.images, batch.context_idx, batch.context_valid)
        for i in range(len(batch)):
            keep = batch.context_idx[i, batch.context_valid[i]][None]
            alone = enc(batch.images[i : i + 1], keep)[0]
            torch.testing.assert_close(out[i, batch.context_valid[i]], alone, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="keep_idx"):
        enc(batch.images, None, batch.context_valid)


def test_padded_predictor_and_decoder_equal_each_image_run_alone():
    batch = _padded_batch()
    torch.manual_seed(1)
    pred = Predictor(GRID, 48, predictor_dim=32, depth=2, num_heads=4).eval()
    dec = PixelDecoder(GRID, 48, 4, 1, predictor_dim=32, depth=1, num_heads=4).eval()
    tokens = torch.randn(len(batch), batch.context_idx.shape[1], 48)
    tokens[~batch.context_valid] = 1e3  # whatever sits in a padded slot must not matter
    with torch.no_grad():
        out = pred(tokens, batch.context_idx, batch.target_idx, batch.context_valid)
        pix = dec(tokens, batch.context_idx, batch.target_idx, batch.context_valid)
        for i in range(len(batch)):
            v = batch.context_valid[i]
            args = (tokens[i : i + 1, v], batch.context_idx[i : i + 1, v], batch.target_idx[i : i + 1])
            torch.testing.assert_close(out[i], pred(*args)[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(pix[i], dec(*args)[0], atol=1e-5, rtol=1e-5)


def test_ijepa_loss_of_a_padded_batch_is_the_mean_of_each_image_alone():
    batch = _padded_batch(b=4)
    torch.manual_seed(2)
    method = IJEPA(_tiny_encoder(), Predictor(GRID, 48, predictor_dim=32, depth=2, num_heads=4)).eval()
    with torch.no_grad():
        loss, _ = method(batch)
        alone = []
        for i in range(len(batch)):
            v = batch.context_valid[i]
            one = Batch(batch.images[i : i + 1], batch.context_idx[i : i + 1, v], batch.target_idx[i : i + 1])
            alone.append(method(one)[0])
    torch.testing.assert_close(loss, torch.stack(alone).mean(), atol=1e-6, rtol=1e-5)


def test_collator_pads_and_keyed_slices_still_match_the_global_batch():
    coll = make_collator("multiblock", GRID, seed=3, context_fill="pad")
    samples = [(torch.zeros(1, 28, 28), 0, (5, slot, 8)) for slot in range(8)]
    whole = coll(samples)
    assert whole.context_valid is not None and not whole.context_valid.all()
    half = coll(samples[4:])
    assert torch.equal(half.context_idx, whole.context_idx[4:])
    assert torch.equal(half.context_valid, whole.context_valid[4:])
    with pytest.raises(ValueError, match="context_fill"):
        make_collator("multiblock", GRID, context_fill="truncate")


def test_official_init_draws_every_weight_at_std_002_without_depth_rescale():
    torch.manual_seed(0)
    enc = ViTEncoder(img_size=28, patch_size=4, in_chans=1, embed_dim=192, depth=4, num_heads=3)
    conv = enc.patch_embed.proj.weight
    assert conv.std() > 0.1  # PyTorch's default for a 4x4x1 conv: about 0.144
    assert enc.blocks[3].mlp.fc2.weight.std() < 0.0075  # depth rescale: 0.02 / sqrt(8)
    official_init_(enc)
    assert (
        abs(float(conv.detach().std()) - 0.02) < 0.003
    )  # trunc_normal_ cuts at +-2 (absolute): a plain std 0.02
    assert abs(float(enc.blocks[3].mlp.fc2.weight.detach().std()) - 0.02) < 0.001
    assert float(enc.patch_embed.proj.bias.abs().max()) == 0.0
    assert float(enc.blocks[0].attn.qkv.bias.abs().max()) == 0.0


def test_model_init_official_in_a_config_reaches_the_encoder_predictor_and_target():
    cfg = load_config("fmnist_vit_tiny", ["model.init=official"])
    method = build_method(cfg, in_chans=1)
    assert abs(float(method.context_encoder.patch_embed.proj.weight.detach().std()) - 0.02) < 0.003
    assert abs(float(method.predictor.predictor_blocks[2].mlp.fc2.weight.detach().std()) - 0.02) < 0.002
    for a, b in zip(method.context_encoder.parameters(), method.target_encoder.parameters()):
        assert torch.equal(a, b)  # the target encoder starts as a copy of the initialised context encoder
    default = build_method(load_config("fmnist_vit_tiny"), in_chans=1)
    assert float(default.context_encoder.patch_embed.proj.weight.detach().std()) > 0.1


def test_random_resized_crop_zooms_into_each_image_and_only_while_training():
    x = torch.zeros(2, 1, 28, 28)
    x[:, :, :, 14:] = 1.0  # left half 0, right half 1
    torch.manual_seed(0)
    full = random_resized_crop(x, (1.0, 1.0))
    assert full.shape == x.shape and abs(float(full.mean()) - 0.5) < 0.1  # about the whole image
    torch.manual_seed(0)
    small = random_resized_crop(x.repeat(64, 1, 1, 1), (0.1, 0.1))
    means = small.mean(dim=(1, 2, 3))
    assert means.min() < 0.05 and means.max() > 0.95  # some small boxes fall inside one half
    torch.testing.assert_close(
        random_resized_crop(torch.ones(3, 1, 8, 8), (0.3, 1.0)), torch.ones(3, 1, 8, 8)
    )

    batch = _padded_batch(b=4)
    torch.manual_seed(2)
    method = MAE(_tiny_encoder(), PixelDecoder(GRID, 48, 4, 1, predictor_dim=32, depth=1, num_heads=4))
    cropped = MAE(method.encoder, method.decoder, crop_scale=(0.3, 0.5))
    method.eval(), cropped.eval()
    with torch.no_grad():
        assert torch.equal(method(batch)[0], cropped(batch)[0])  # evaluation never crops
        cropped.train()
        assert not torch.equal(method(batch)[0], cropped(batch)[0])


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["mask.context_fill=pad", "mask.strategy=random"], "multiblock only"),
        (["mask.context_fill=all"], "mask.context_fill"),
        (["model.init=xavier"], "model.init"),
        (["method.crop_scale=[0.3,1.0]", "data.name=cifar10", "data.image_size=32"], "second time"),
        (["method.crop_scale=[0.0,1.0]"], "method.crop_scale"),
    ],
)
def test_bad_recipe_switches_raise_clear_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        check_config(load_config("fmnist_vit_tiny", overrides))


def test_the_invariant_views_crop_by_method_crop_scale_not_by_the_loaders():
    """data.crop_scale is the loader's crop; the invariant method's two views take method.crop_scale."""
    base = ["method.name=invariant"]
    assert build_method(load_config("fmnist_vit_tiny", base)).crop_scale == (0.3, 1.0)
    views = load_config(
        "fmnist_vit_tiny", [*base, "method.crop_scale=[0.5,0.9]", "data.crop_scale=[0.2,1.0]"]
    )
    check_config(views)
    assert build_method(views).crop_scale == (0.5, 0.9)
