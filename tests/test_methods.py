import pytest
import torch
import torch.nn.functional as F

from jepa_lite.core.collate import Batch
from jepa_lite.core.masks import sample_masks
from jepa_lite.core.methods import IJEPA, MAE, Invariant, ijepa_loss, info_nce
from jepa_lite.core.models import PixelDecoder, Predictor, ProjectionHead, ViTEncoder, gather_tokens, patchify
from jepa_lite.core.views import augment_views


def encoder():
    return ViTEncoder(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=4)


def batch(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ctx, tgt = sample_masks(b, 4, target_scale=(0.1, 0.2), min_context=2, generator=g)
    return Batch(torch.randn(b, 1, 16, 16, generator=g), ctx, tgt, torch.arange(b))


def ijepa(**kw):
    torch.manual_seed(0)
    enc = encoder()
    return IJEPA(enc, Predictor(enc.grid, 32, predictor_dim=16, depth=1, num_heads=2), **kw)


def test_gradients_never_reach_the_target_encoder():
    model = ijepa()
    loss, logs = model(batch())
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.target_encoder.parameters())
    assert all(p.grad is not None for p in model.context_encoder.parameters())
    assert all(p.grad is not None for p in model.predictor.parameters())
    assert logs["loss"] == loss.detach()


def test_ijepa_loss_is_distance_to_layer_normed_target_features():
    model = ijepa()
    b = batch()
    with torch.no_grad():
        loss, _ = model(b)
        h = F.layer_norm(model.target_encoder(b.images), (32,))
        target = torch.stack([gather_tokens(h, b.target_idx[:, m]) for m in range(b.target_idx.shape[1])], 1)
        pred = model.predictor(model.context_encoder(b.images, b.context_idx), b.context_idx, b.target_idx)
    torch.testing.assert_close(loss, F.smooth_l1_loss(pred, target))
    # targets are normalised per token (non-affine layer norm)
    t = model.targets(b.images, b.target_idx)
    torch.testing.assert_close(t.mean(-1), torch.zeros(t.shape[:-1]), atol=1e-5, rtol=0)
    assert ijepa(loss="l2")(b)[0] != loss
    with pytest.raises(ValueError, match="loss 'l1'"):
        ijepa_loss(pred, target, "l1")


def test_ema_update_moves_the_target_towards_the_context_encoder():
    model = ijepa()
    with torch.no_grad():
        for p in model.context_encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.target_encoder.parameters()]
    model.update_target(0.9)
    for b, t, o in zip(before, model.target_encoder.parameters(), model.context_encoder.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)


def test_collapse_lab_target_modes():
    b = batch()
    online = ijepa(target_mode="online")
    loss, _ = online(b)
    loss.backward()
    # without stop-gradient the target path also pushes gradients into the context encoder
    stop = ijepa(target_mode="online_stopgrad")
    loss_s, _ = stop(b)
    loss_s.backward()
    g_online = online.context_encoder.blocks[0].attn.qkv.weight.grad
    g_stop = stop.context_encoder.blocks[0].attn.qkv.weight.grad
    assert not torch.allclose(g_online, g_stop)
    # the probes must read the network that trains: the (never-updated) target copy only in EMA mode
    assert online.eval_encoder is online.context_encoder and stop.eval_encoder is stop.context_encoder
    ema = ijepa()
    assert ema.eval_encoder is ema.target_encoder and ema.target_encoder is not ema.context_encoder
    with pytest.raises(ValueError, match="target_mode"):
        ijepa(target_mode="nope")


def test_mae_loss_is_zero_for_a_perfect_reconstruction_and_ignores_visible_patches():
    torch.manual_seed(0)
    enc = encoder()
    model = MAE(enc, PixelDecoder(enc.grid, 32, 4, 1, predictor_dim=16, depth=1, num_heads=2))
    b = batch()
    flat = b.target_idx.reshape(4, -1)
    pix = gather_tokens(patchify(b.images, 4), flat)
    pix = (pix - pix.mean(-1, keepdim=True)) / (pix.var(-1, keepdim=True, unbiased=False) + 1e-6).sqrt()
    model.decoder.forward = lambda z, c, t, valid=None, target_valid=None: pix  # an oracle decoder
    loss, _ = model(b)
    assert loss.item() < 1e-10
    model.decoder.forward = lambda z, c, t, valid=None, target_valid=None: torch.zeros_like(pix)
    assert model(b)[0].item() == pytest.approx(1.0, abs=1e-3)  # normalised pixels have unit variance


def test_info_nce_prefers_matching_pairs():
    z = F.normalize(torch.randn(8, 16), dim=-1)
    assert info_nce(z, z, 0.1) < info_nce(z, z.roll(1, 0), 0.1)
    assert info_nce(z, z, 0.1).item() < 0.5


def test_invariant_loss_is_infonce_between_two_different_augmentations_of_each_image():
    """The loss is InfoNCE of the embeddings of two views that the step augments independently: replayed
    with the same random draws, it equals the hand-computed InfoNCE, and the two views differ."""
    torch.manual_seed(0)
    model = Invariant(encoder(), ProjectionHead(32, 64, 16)).train()
    b = batch(8)
    state = torch.get_rng_state()
    loss, _ = model(b)
    torch.set_rng_state(state)  # the same draws: the same two views
    v1, v2 = (
        augment_views(b.images, crop_scale=model.crop_scale),
        augment_views(b.images, crop_scale=model.crop_scale),
    )
    assert not torch.allclose(v1, v2) and not torch.allclose(v1, b.images)
    assert loss.item() == pytest.approx(info_nce(model.embed(v1), model.embed(v2), 0.2).item(), rel=1e-5)
    loss.backward()
    assert model.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_per_block_pixel_decoding_decodes_each_target_block_alone():
    """I-JEPA with pixel targets: each block in its own pass, as I-JEPA's predictor, not one joint pass."""
    torch.manual_seed(0)
    enc = encoder()
    dec = PixelDecoder(enc.grid, 32, 4, 1, predictor_dim=16, depth=1, num_heads=2)
    joint, per_block = MAE(enc, dec).eval(), MAE(enc, dec, per_block=True).eval()
    b = batch(seed=3)
    assert b.target_idx.shape[1] == 4
    with torch.no_grad():
        alone = [joint(Batch(b.images, b.context_idx, b.target_idx[:, i : i + 1]))[0] for i in range(4)]
        assert per_block(b)[0].item() == pytest.approx(torch.stack(alone).mean().item(), rel=1e-6)
        assert abs(joint(b)[0].item() - per_block(b)[0].item()) > 1e-6  # blocks that see each other differ


def test_foreground_patches_finds_the_patches_brighter_than_the_background():
    from jepa_lite.core.methods import foreground_patches

    images = torch.full((2, 1, 8, 8), -0.5)  # a 2x2 grid of 4-px patches, all background
    images[0, 0, 5, 6] = 1.0  # one bright pixel in patch 3 (row 1, column 1) of image 0
    images[1, 0, 0:4, 0:4] = 0.3  # image 1: patch 0 filled
    fg = foreground_patches(images, 4)
    assert fg.tolist() == [[False, False, False, True], [True, False, False, False]]
    assert not foreground_patches(torch.zeros(1, 1, 8, 8), 4).any()  # a blank image has no object


def test_foreground_targets_drop_background_targets_from_the_loss():
    from jepa_lite.core.build import build_collator, build_method
    from jepa_lite.core.config import load_config
    from jepa_lite.core.methods import foreground_patches, ijepa_loss

    cfg = load_config(overrides=["model.embed_dim=48", "model.num_heads=3", "method.foreground_targets=true"])
    torch.manual_seed(0)
    method = build_method(cfg, in_chans=1)
    images = torch.full((4, 1, 28, 28), -0.8)
    images[:, :, 10:18, 10:18] = 1.5  # a bright square in the middle of a dark background
    batch = build_collator(cfg, method.context_encoder.grid)([(img, 0) for img in images])
    loss, _ = method(batch)
    b, m, kt = batch.target_idx.shape
    fg = foreground_patches(images, 4).gather(1, batch.target_idx.reshape(b, -1)).reshape(b, m, kt)
    assert 0 < fg.float().mean() < 1  # some targets are background, some are not
    with torch.no_grad():
        target = method.targets(images, batch.target_idx)
    pred = method.predictor(
        method.context_encoder(images, batch.context_idx), batch.context_idx, batch.target_idx
    )
    torch.testing.assert_close(loss, ijepa_loss(pred, target, valid=fg))
    assert not torch.isclose(loss, ijepa_loss(pred, target))  # the background targets were left out


def test_masked_mean_of_nothing_is_zero_not_nan():
    from jepa_lite.core.methods import masked_mean

    assert masked_mean(torch.ones(2, 3, 4), torch.zeros(2, 3, dtype=torch.bool)).item() == 0.0
