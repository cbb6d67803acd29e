import pytest

from jepa_lite.core.config import Config, apply_overrides, config_to_dict, list_configs, load_config


def test_every_packaged_config_loads_and_names_itself():
    names = list_configs()
    for required in ["fmnist_vit_tiny", "shapes_vit_tiny", "cifar10_vit_small", "in1k_vitb16_ep600",
                     "in1k_vitl16_ep600", "in1k_vith14_ep300", "in1k_vith16_448_ep300"]:  # fmt: skip
        assert required in names
    for name in names:
        assert load_config(name).name == name


def test_default_config_is_fmnist_ijepa():
    cfg = load_config()
    assert cfg.name == "fmnist_vit_tiny" and cfg.method.name == "ijepa" and cfg.data.name == "fmnist"


def test_default_config_is_what_the_readme_says():
    """The README and the configs table of docs/scaling.md describe the course default as it is configured."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    configs = (root / "docs" / "scaling.md").read_text()
    row = next(line for line in configs.splitlines() if line.startswith("| `fmnist_vit_tiny` (default)"))
    assert (
        row
        == "| `fmnist_vit_tiny` (default) | Fashion-MNIST | ViT-Tiny (192 wide, 2 deep, patch 4) | 28 | 32 | - | 1.2 | 0.1 |"
    )
    m, o = load_config().model, load_config().optim
    assert (m.embed_dim, m.depth, m.patch_size, load_config().data.image_size) == (192, 2, 4, 28)
    assert (o.global_batch, o.max_device_batch, o.epochs, o.warmup_epochs) == (32, None, 1.2, 0.1)
    assert (o.lr, o.start_lr) == (3.5e-4, 7e-5)  # the batch-256 recipe's lr scaled by about sqrt(32/256)
    assert "2,250 steps of batch 32 (1.2 epochs, peak lr 3.5e-4)" in " ".join(readme.split())


def test_grid_base_is_the_config_every_grid_result_was_run_with():
    from jepa_lite.lab.experiments import GRID_BASE, make_config

    cfg = make_config((), seed=0)
    assert GRID_BASE == "fmnist_grid" and cfg.name == "fmnist_grid"
    assert (cfg.model.depth, cfg.optim.global_batch, cfg.optim.epochs, cfg.optim.lr) == (4, 256, 0.8, 1e-3)


def test_vith14_config_is_exactly_the_papers_recipe():
    d = config_to_dict(load_config("in1k_vith14_ep300"))
    assert d["model"]["name"] == "vit_huge_patch14_224" and d["data"]["image_size"] == 224
    assert d["model"]["predictor_depth"] == 12 and d["model"]["predictor_dim"] == 384
    assert d["optim"] == {**d["optim"], "global_batch": 2048, "epochs": 300, "warmup_epochs": 40, "lr": 1e-3,
                          "start_lr": 2e-4, "final_lr": 1e-6, "weight_decay": 0.04, "final_weight_decay": 0.4,
                          "ema": [0.996, 1.0]}  # fmt: skip
    assert d["mask"] == {**d["mask"], "strategy": "multiblock", "n_targets": 4, "target_scale": [0.15, 0.2],
                         "target_aspect": [0.75, 1.5], "context_scale": [0.85, 1.0]}  # fmt: skip
    assert d["data"]["crop_scale"] == [0.3, 1.0] and d["mixed_precision"] == "bf16"
    assert d["method"]["loss"] == "smooth_l1"


def test_dotted_overrides_are_typed():
    cfg = apply_overrides(Config(), ["optim.lr=5e-4", "data.root=/datasets/imagenet", "mask.target_scale=[0.1,0.3]",
                                     "optim.max_steps=7", "model.grad_checkpointing=true", "data.limit=null",
                                     "mixed_precision=no", "data.root=null"])  # fmt: skip
    assert cfg.optim.lr == 5e-4 and isinstance(cfg.optim.lr, float)  # YAML reads 5e-4 as a string
    assert cfg.data.root is None and cfg.mixed_precision == "no"  # not YAML's False
    assert cfg.mask.target_scale == (0.1, 0.3)
    assert cfg.optim.max_steps == 7 and cfg.model.grad_checkpointing is True and cfg.data.limit is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", r"unknown config key 'optim.lrr'; did you mean lr"),
        ("nosuch.key=1", r"unknown config key 'nosuch.key'"),
        ("optim.lr=fast", r"'optim.lr' expects float"),
        ("optim.max_steps=2.5", r"'optim.max_steps' expects int"),
        ("optim.lr", r"must look like section.key=value"),
        ("optim=3", r"is a section"),
        ("seed.x=1", r"is a value, not a section"),
        ("mask.target_scale=[0.1]", r"expects tuple"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(Config(), [override])


def test_unknown_config_name_lists_the_packaged_ones():
    with pytest.raises(ValueError, match="fmnist_vit_tiny"):
        load_config("imagenet_giant")


@pytest.mark.parametrize(
    "name, depth",
    [
        ("in1k_vitb16_ep600", 6),
        ("in1k_vitl16_ep600", 12),
        ("in1k_vith14_ep300", 12),
        ("in1k_vith16_448_ep300", 12),
    ],
)
def test_scaled_predictors_follow_appendix_a1(name, depth):
    """A 384-wide predictor, 6 blocks for ViT-B/16 and 12 for the larger encoders, with as many heads as the
    encoder (the official code passes the encoder's head count to the predictor)."""
    import timm
    import torch

    cfg = load_config(name)
    with torch.device("meta"):  # shapes only: no memory, no time
        encoder_heads = (
            timm.create_model(cfg.model.name, pretrained=False, num_classes=0).blocks[0].attn.num_heads
        )
    assert (cfg.model.predictor_dim, cfg.model.predictor_depth, cfg.model.predictor_heads) == (
        384,
        depth,
        encoder_heads,
    )
