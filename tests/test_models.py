import pytest
import timm
import torch

from jepa_lite.core.models import (
    PixelDecoder,
    Predictor,
    ViTEncoder,
    count_parameters,
    gather_tokens,
    patchify,
    sincos_pos_embed,
)


def small_encoder(**kw):
    args = dict(img_size=32, patch_size=4, in_chans=1, embed_dim=64, depth=2, num_heads=4)
    args.update(kw)
    return ViTEncoder(**args).eval()


def test_encoder_matches_plain_timm_vit_with_same_weights():
    torch.manual_seed(0)
    enc = small_encoder()
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=4, in_chans=1, embed_dim=64, depth=2, num_heads=4, class_token=False,
        global_pool="", num_classes=0, qkv_bias=True,
    ).eval()  # fmt: skip
    state = enc.state_dict()
    missing, unexpected = vit.load_state_dict(state, strict=False)
    assert not unexpected and missing == []  # pos_embed is a parameter in timm, a buffer here: same key
    x = torch.randn(3, 1, 32, 32)
    torch.testing.assert_close(enc(x), vit.forward_features(x), atol=1e-5, rtol=1e-5)


def test_keep_idx_gathers_tokens_before_the_blocks():
    torch.manual_seed(0)
    enc = small_encoder()
    x = torch.randn(2, 1, 32, 32)
    keep = torch.tensor([[0, 7, 63], [5, 6, 40]])
    tokens = enc.patch_embed(x) + enc.pos_embed
    expected = enc.norm(enc.blocks(gather_tokens(tokens, keep)))
    out = enc(x, keep)
    torch.testing.assert_close(out, expected)
    # it is not the same as running on the full image and gathering after (attention sees only kept tokens)
    assert not torch.allclose(out, gather_tokens(enc(x), keep), atol=1e-4)
    # keeping every patch in order is the full forward
    torch.testing.assert_close(enc(x, torch.arange(64).expand(2, -1)), enc(x))


def test_sincos_positions_encode_row_and_column_separately():
    pe = sincos_pos_embed(32, (4, 6))
    assert pe.shape == (24, 32) and pe.abs().max() <= 1
    rows = pe.reshape(4, 6, 32)
    # first half depends on the row only, second half on the column only
    assert torch.allclose(rows[:, 0, :16], rows[:, 5, :16])
    assert not torch.allclose(rows[0, :, :16], rows[1, :, :16])
    assert torch.allclose(rows[0, :, 16:], rows[3, :, 16:])
    assert torch.unique(pe, dim=0).shape[0] == 24  # every patch has its own code
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed(30, (4, 4))


def test_predictor_target_blocks_do_not_see_each_other():
    torch.manual_seed(0)
    pred = Predictor((8, 8), 64, predictor_dim=32, depth=2, num_heads=4).eval()
    ctx_idx = torch.tensor([[0, 1, 2, 3, 8, 9]])
    ctx = torch.randn(1, 6, 64)
    t1 = torch.tensor([[[20, 21, 28, 29], [40, 41, 48, 49]]])
    t2 = torch.tensor([[[20, 21, 28, 29], [60, 61, 62, 63]]])
    a, b = pred(ctx, ctx_idx, t1), pred(ctx, ctx_idx, t2)
    assert a.shape == (1, 2, 4, 64)
    torch.testing.assert_close(a[:, 0], b[:, 0])  # block 0 unchanged when block 1 moves
    assert not torch.allclose(a[:, 1], b[:, 1])  # mask tokens carry their positions
    # the context matters
    assert not torch.allclose(pred(ctx + 1, ctx_idx, t1), a)


def test_pixel_decoder_decodes_all_targets_in_one_pass_with_positional_queries():
    """MAE's decoder: every target patch of every block in one joint pass, [B, M*Kt, p*p*C]: the same as
    one block holding all of them, and a query's output depends on its position."""
    torch.manual_seed(0)
    dec = PixelDecoder((8, 8), 64, 4, 1, predictor_dim=32, depth=1, num_heads=4).eval()
    ctx, ctx_idx = torch.randn(2, 5, 64), torch.randint(0, 64, (2, 5))
    tgt = torch.stack([torch.randperm(64)[:12] for _ in range(2)]).reshape(2, 3, 4)
    with torch.no_grad():
        out = dec(ctx, ctx_idx, tgt)
        one_block = dec.forward_blocks(ctx, ctx_idx, tgt.reshape(2, 1, 12))[:, 0]
        per_block = dec.forward_blocks(ctx, ctx_idx, tgt)  # [B, M, Kt, 16]: each block alone
    assert out.shape == (2, 12, 16)
    assert torch.allclose(out, one_block, atol=1e-6)
    assert not torch.allclose(out, per_block.reshape(2, 12, 16), atol=1e-4)  # joint attention differs
    assert not torch.allclose(out[:, 0], out[:, 1], atol=1e-4)  # positional queries: different outputs


def test_patchify_is_raster_order():
    img = torch.arange(2 * 8 * 8, dtype=torch.float).reshape(1, 2, 8, 8)
    p = patchify(img, 4)
    assert p.shape == (1, 4, 32)
    # patch 1 is the top-right 4x4 square; channel-last within the patch
    assert p[0, 1, 0] == img[0, 0, 0, 4] and p[0, 1, 1] == img[0, 1, 0, 4]
    assert p[0, 2, 0] == img[0, 0, 4, 0]


def test_encoder_from_timm_name_and_paper_parameter_counts():
    with torch.device("meta"):
        vith = ViTEncoder("vit_huge_patch14_224")
        pred = Predictor(vith.grid, vith.embed_dim, predictor_dim=384, depth=12, num_heads=16)
    assert vith.grid == (16, 16) and vith.embed_dim == 1280
    # the official count includes pos_embed (a frozen parameter there, a buffer here): 630.8M
    assert round((count_parameters(vith) + vith.pos_embed.numel()) / 1e6, 1) == 630.8
    assert round((count_parameters(pred) + pred.predictor_pos_embed.numel()) / 1e6, 1) == 22.4


def test_bad_model_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="divisible by patch_size"):
        ViTEncoder(img_size=30, patch_size=4)
    with pytest.raises(ValueError, match="unknown timm model"):
        ViTEncoder("vit_nonexistent_patch3")
