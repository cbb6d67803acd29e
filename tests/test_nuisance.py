"""jepa_lite.data.nuisance: label-irrelevant detail of two kinds, seeded, only in the background."""

import pytest
import torch

from jepa_lite.data.nuisance import BACKGROUND, add_nuisance, background_mask, nuisance_pattern, with_nuisance


def _garments(n: int = 16) -> torch.Tensor:
    """uint8 [n, 28, 28]: a bright block (the 'garment') on black, of a different size per image, with a
    black stripe inside it (a dark part of the garment, enclosed by it)."""
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    for i in range(n):
        images[i, 6 : 14 + i % 8, 8:20] = 180 + i
        images[i, 9, 10:18] = 0
    return images


def test_background_is_the_dark_region_around_the_garment_not_inside_it():
    images = _garments()
    bg = background_mask(images)
    assert bg[:, 0, 0].all() and bg[:, 27, 27].all() and not bg[:, 9, 12].any()  # the enclosed black stripe
    assert not (bg & (images > BACKGROUND)).any()  # nothing bright is background
    assert (bg.sum((1, 2)) == (images <= BACKGROUND).sum((1, 2)) - 8).all()  # all dark pixels but the stripe


@pytest.mark.parametrize("kind", ["noise", "stripes"])
def test_strength_zero_is_the_identity_and_the_garment_is_never_touched(kind):
    images = _garments()
    assert torch.equal(add_nuisance(images, kind, 0.0), images)
    out = add_nuisance(images, kind, 1.0, seed=3)
    garment = ~background_mask(images)  # the garment with its dark parts
    assert torch.equal(out[garment], images[garment]) and (out[:, 9, 10:18] == 0).all()
    assert out[~garment].float().mean() > 60  # the background now carries the pattern


@pytest.mark.parametrize("kind", ["noise", "stripes"])
def test_seeded_per_image_and_scaled_by_strength(kind):
    images = _garments()
    a, b = add_nuisance(images, kind, 0.5, seed=1), add_nuisance(images, kind, 0.5, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, add_nuisance(images, kind, 0.5, seed=2))
    background = background_mask(images)
    weak, strong = add_nuisance(images, kind, 0.25, seed=1), add_nuisance(images, kind, 1.0, seed=1)
    assert (
        weak[background].max() <= round(0.25 * 255)
        and strong[background].float().mean() > 3 * weak[background].float().mean()
    )


def test_stripes_are_predictable_from_neighbours_and_noise_is_not():
    g = torch.Generator().manual_seed(0)
    for kind, lo, hi in (("stripes", 0.3, 1.0), ("noise", -0.1, 0.1)):
        p = nuisance_pattern(64, 28, kind, g)
        left, right = p[:, :, :-1].flatten(), p[:, :, 1:].flatten()  # horizontal neighbours
        r = torch.corrcoef(torch.stack([left, right]))[0, 1].item()
        assert lo < r < hi, (kind, r)
        assert p.min() >= 0 and p.max() <= 1


def test_with_nuisance_keeps_labels_and_the_original_dataset():
    class Tiny:
        def __init__(self):
            self.images, self.targets = _garments(), torch.arange(16) % 10

    clean = Tiny()
    noisy = with_nuisance(clean, "noise", 0.5, seed=0)
    assert torch.equal(noisy.targets, clean.targets) and noisy.images.shape == clean.images.shape
    assert torch.equal(clean.images, _garments()) and not torch.equal(noisy.images, clean.images)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="blur", strength=0.5), "kind='blur' is not one of noise, stripes"),
        (dict(kind="noise", strength=1.5), r"strength=1.5 must be a number in \[0, 1\]"),
        (dict(kind="noise", strength=-0.1), "strength=-0.1"),
    ],
)
def test_bad_settings_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        add_nuisance(_garments(), **kwargs)
    with pytest.raises(ValueError, match="uint8"):
        add_nuisance(_garments().float(), "noise", 0.5)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (
            ["data.nuisance=blur", "data.nuisance_strength=0.5"],
            "data.nuisance='blur' is not one of none, noise",
        ),
        (["data.nuisance=noise"], r"data.nuisance_strength=0.0 must lie in \(0, 1\]"),
        (["data.nuisance_strength=0.5"], "data.nuisance_strength=0.5 needs data.nuisance=noise or stripes"),
        (["data.nuisance=noise", "data.nuisance_strength=2"], "nuisance_strength=2"),
        (
            ["--config", "shapes_vit_tiny", "data.nuisance=stripes", "data.nuisance_strength=0.5"],
            "not on shapes",
        ),
    ],
)
def test_bad_nuisance_configs_are_refused_early(overrides, match):
    from jepa_lite.core.config import check_config, load_config

    name = overrides[1] if overrides[0] == "--config" else None
    rest = overrides[2:] if name else overrides
    with pytest.raises(ValueError, match=match):
        check_config(load_config(name, overrides=rest) if name else load_config(overrides=rest))


def test_build_split_gives_training_and_probes_the_same_detail_and_each_split_its_own():
    from pathlib import Path

    from jepa_lite.core.build import build_split, build_train_set
    from jepa_lite.core.config import load_config

    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("needs Fashion-MNIST (Debian dataset-fashion-mnist)")
    clean = load_config(overrides=["data.limit=64"])
    noisy = load_config(overrides=["data.limit=64", "data.nuisance=stripes", "data.nuisance_strength=0.6"])
    c_train, n_train = build_split(clean, train=True, limit=64), build_split(noisy, train=True, limit=64)
    assert torch.equal(c_train.targets, n_train.targets) and not torch.equal(c_train.images, n_train.images)
    assert torch.equal(build_train_set(noisy).images, n_train.images)  # pretraining sees what the probes see
    n_test = build_split(noisy, train=False, limit=64)
    expected = add_nuisance(build_split(clean, train=False, limit=64).images, "stripes", 0.6, seed=1)
    assert torch.equal(n_test.images, expected)  # the test split: its own seed
    x, _ = n_train.tensors()
    assert torch.equal(x[5], n_train[5][0])  # the probes' fast path reads the same images as training
