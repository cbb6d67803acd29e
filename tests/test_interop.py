"""Tests for jepa_lite.interop: official .pth.tar and Hugging Face IJepaModel, both ways, strictly and safely."""

import json
import os

import pytest
import torch

from jepa_lite.core.build import build_encoder
from jepa_lite.core.config import config_to_dict, load_config
from jepa_lite.core.models import Predictor, ViTEncoder, count_parameters, sincos_pos_embed
from jepa_lite.core.weights import export_weights
from jepa_lite.interop import (
    export_hf,
    export_official,
    hf_to_jepa_state,
    infer_num_heads,
    load_encoder,
    load_hf,
    load_official,
    official_state,
    resize_pos_embed,
    set_image_size_,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_pair(seed: int = 0, dim: int = 128, heads: int = 2) -> tuple[ViTEncoder, Predictor]:
    torch.manual_seed(seed)
    enc = ViTEncoder(img_size=16, patch_size=4, embed_dim=dim, depth=2, num_heads=heads)
    with torch.no_grad():  # non-default values everywhere, so a swapped tensor cannot go unnoticed
        for t in enc.state_dict().values():
            t.add_(torch.randn_like(t) * 0.1)
    pred = Predictor(enc.grid, dim, predictor_dim=16, depth=2, num_heads=heads)
    return enc.eval(), pred.eval()


def images(n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------------------------ official


def test_official_vith14_shapes_on_meta():
    with torch.device("meta"):
        enc = ViTEncoder(img_size=224, patch_size=14, embed_dim=1280, depth=32, num_heads=16)
        pred = Predictor(enc.grid, 1280, predictor_dim=384, depth=12, num_heads=16)
    state = official_state(enc, pred, enc, epoch=300)
    n_enc = sum(t.numel() for t in state["target_encoder"].values())  # includes pos_embed
    n_pred = sum(t.numel() for t in state["predictor"].values())  # includes predictor_pos_embed
    assert round(n_enc / 1e6, 1) == 630.8 and round(n_pred / 1e6, 1) == 22.4
    assert state["encoder"]["module.pos_embed"].shape == (1, 256, 1280)
    assert state["encoder"]["module.blocks.31.attn.qkv.weight"].shape == (3840, 1280)
    assert state["predictor"]["module.predictor_pos_embed"].shape == (1, 256, 384)
    e, p = load_official(state)  # architecture inferred from the shapes alone
    assert e.pos_embed.is_meta and e.grid == (16, 16) and e.patch_size == 14 and len(e.blocks) == 32
    assert e.num_heads == 16 and p.predictor_blocks[0].attn.num_heads == 16 and len(p.predictor_blocks) == 12
    assert count_parameters(e) + e.pos_embed.numel() == n_enc
    back = official_state(e, p, e)
    for section in ("encoder", "predictor", "target_encoder"):
        assert {k: v.shape for k, v in back[section].items()} == {
            k: v.shape for k, v in state[section].items()
        }


@pytest.mark.parametrize("which", ["target", "context"])
def test_official_round_trip_every_tensor(tmp_path, which):
    context, pred = tiny_pair(0)
    target, _ = tiny_pair(1)
    path = export_official(context, pred, target, tmp_path / "ijepa.pth.tar", epoch=7)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["epoch"] == 7 and all(k.startswith("module.") for k in raw["predictor"])
    enc, p = load_official(path, which)
    ref = target if which == "target" else context
    for got, want in ((enc, ref), (p, pred)):
        a, b = got.state_dict(), want.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    with torch.no_grad():
        assert torch.allclose(enc(images()), ref(images()), atol=1e-6)
    again = official_state(context, p, enc if which == "target" else target)
    for section in ("predictor", "target_encoder"):
        for k, v in raw[section].items():
            assert torch.equal(again[section][k], v), (section, k)


def test_official_strict_errors_name_the_key(tmp_path):
    enc, pred = tiny_pair()
    state = official_state(enc, pred, enc)
    missing = {**state, "target_encoder": dict(state["target_encoder"])}
    del missing["target_encoder"]["module.blocks.1.mlp.fc2.bias"]
    with pytest.raises(ValueError, match=r"missing key 'blocks\.1\.mlp\.fc2\.bias'"):
        load_official(missing)
    extra = {**state, "predictor": {**state["predictor"], "module.surprise": torch.zeros(1)}}
    with pytest.raises(ValueError, match="unexpected key 'surprise'"):
        load_official(extra)
    wrong = {**state, "encoder": {**state["encoder"], "module.norm.weight": torch.zeros(5)}}
    with pytest.raises(ValueError, match=r"shape mismatch at 'norm\.weight'"):
        load_official(wrong, "context")
    other = ViTEncoder(img_size=16, patch_size=4, embed_dim=128, depth=3, num_heads=2)
    with pytest.raises(ValueError, match=r"missing key 'blocks\.2\."):
        load_official(state, encoder=other)
    with pytest.raises(ValueError, match="which"):
        load_official(state, "online")


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth.tar"
    torch.save({"encoder": {"module.pos_embed": torch.zeros(1)}, "target_encoder": Payload()}, path)
    with pytest.raises(ValueError, match="refusing to load"):
        load_official(path)
    with pytest.raises(ValueError, match="refusing to load"):
        load_encoder(path)
    assert not marker.exists()


def test_infer_num_heads():
    assert [infer_num_heads(d) for d in (192, 384, 768, 1024, 1280, 1408, 512)] == [3, 6, 12, 16, 16, 16, 8]
    with pytest.raises(ValueError, match="num_heads"):
        infer_num_heads(100)


# ------------------------------------------------------------------------------------------------ Hugging Face


def small_hf_model(eps: float = 1e-12):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.IJepaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=16,
        patch_size=4, num_channels=3, layer_norm_eps=eps,
    )  # fmt: skip
    model = transformers.IJepaModel(cfg).eval()
    with torch.no_grad():  # HF initialises LayerNorms to 1/0 and biases to 0: perturb them all
        for t in model.state_dict().values():
            t.add_(torch.randn_like(t) * 0.1)
    return model


@pytest.mark.parametrize("eps", [1e-12, 1e-6])
def test_load_hf_matches_last_hidden_state(tmp_path, eps):
    model = small_hf_model(eps)
    enc = load_hf(model).eval()
    assert enc.norm.eps == eps and enc.blocks[0].norm1.eps == eps
    with torch.no_grad():
        want = model(
            pixel_values=images()
        ).last_hidden_state  # [B, 16, 32]: no class token, final norm applied
        assert want.shape == (2, 16, 32)
        assert torch.allclose(enc(images()), want, atol=1e-5)
        model.save_pretrained(tmp_path)  # a directory in this transformers version's own layout
        assert torch.allclose(load_hf(tmp_path).eval()(images()), want, atol=1e-5)
        assert torch.allclose(load_encoder(tmp_path).eval()(images()), want, atol=1e-5)


def test_export_hf_loads_in_ijepamodel(tmp_path):
    transformers = pytest.importorskip("transformers")
    enc, _ = tiny_pair()
    export_hf(enc, tmp_path / "hf")
    model, info = transformers.IJepaModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.layer_norm_eps == enc.norm.eps
    with torch.no_grad():
        want = enc(images())
        assert torch.allclose(model.eval()(pixel_values=images()).last_hidden_state, want, atol=1e-5)
        assert torch.allclose(load_hf(tmp_path / "hf").eval()(images()), want, atol=1e-6)


def test_hf_unknown_key_is_an_error():
    state = {**small_hf_model().state_dict(), "layers.9.mlp.fc1.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"unexpected key 'layers\.9\.mlp\.fc1\.weight'"):
        hf_to_jepa_state(state, depth=2)


# ------------------------------------------------------------------------------------------------ resolution


def test_resize_pos_embed():
    pos = sincos_pos_embed(32, (4, 4))[None]
    assert torch.equal(resize_pos_embed(pos, 4, 4), pos)
    up = resize_pos_embed(pos, (4, 4), (8, 6))
    assert up.shape == (1, 48, 32)
    assert resize_pos_embed(pos[0], 4, (2, 2)).shape == (4, 32)
    const = torch.ones(1, 16, 8)
    assert torch.allclose(resize_pos_embed(const, 4, 7), torch.ones(1, 49, 8), atol=1e-6)
    with pytest.raises(ValueError, match="grid"):
        resize_pos_embed(pos, 5, 8)  # 16 positions are not a 5x5 grid


def test_set_image_size_runs_at_new_resolution():
    enc, _ = tiny_pair()
    set_image_size_(enc, 24)
    assert enc.grid == (6, 6) and enc.pos_embed.shape == (1, 36, 128)
    with torch.no_grad():
        assert enc(images(1, 24)).shape == (1, 36, 128)
    with pytest.raises(ValueError, match="multiple"):
        set_image_size_(enc, 30)


# ------------------------------------------------------------------------------------------------ run folders


def test_load_encoder_from_run_folder_and_official(tmp_path):
    cfg = load_config("fmnist_vit_tiny", ["model.depth=1", "model.embed_dim=32", "model.num_heads=2"])
    enc = build_encoder(cfg, in_chans=1).eval()
    export_weights(enc, tmp_path / "target_encoder.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(config_to_dict(cfg)))
    got = load_encoder(tmp_path).eval()
    x = torch.randn(2, 1, cfg.data.image_size, cfg.data.image_size)
    with torch.no_grad():
        assert torch.equal(got(x), enc(x))
    with pytest.raises(FileNotFoundError, match="encoder.safetensors"):
        load_encoder(tmp_path, "context")
    pred = Predictor(enc.grid, enc.embed_dim, predictor_dim=16, depth=1, num_heads=2)
    path = export_official(enc, pred, enc, tmp_path / "run.pth.tar")
    with torch.no_grad():
        assert torch.equal(load_encoder(path, num_heads=2).eval()(x), enc(x))
