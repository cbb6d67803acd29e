"""Filling the blue box from a representation: which representation each source gives, that only the box
changes, the scores' arithmetic (an oracle decoder scores zero error), the judge probe, and the shipped decoder."""

from pathlib import Path

import pytest
import torch

from jepa_lite.core.build import build_method
from jepa_lite.core.config import load_config
from jepa_lite.core.evaluate import fit_linear_classifier, linear_probe
from jepa_lite.core.models import gather_tokens, patchify
from jepa_lite.lab import blue_box, pretrained
from jepa_lite.lab.decoder import BlockDecoder

HAS_FMNIST = Path("/usr/share/datasets/fashion-mnist").is_dir()


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = load_config(overrides=["model.depth=1", "model.predictor_depth=1"])
    method = build_method(cfg, 1).eval().requires_grad_(False)
    decoder = BlockDecoder((7, 7), 192, 4, dim=32, num_heads=2).eval()
    images = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    return method, decoder, images


def test_eval_masks_are_seeded_and_the_box_is_outside_the_context():
    ctx, box = blue_box.eval_masks(8, (7, 7), seed=3)
    ctx2, box2 = blue_box.eval_masks(8, (7, 7), seed=3)
    assert torch.equal(ctx, ctx2) and torch.equal(box, box2)
    assert not torch.equal(box, blue_box.eval_masks(8, (7, 7), seed=4)[1])
    for c, b in zip(ctx, box, strict=True):
        assert not set(c.tolist()) & set(b.tolist())


def test_each_source_is_the_representation_it_names(setup):
    method, _, images = setup
    ctx, box = blue_box.eval_masks(len(images), (7, 7), seed=0)
    target = blue_box.block_representations(method, images, ctx, box, "target")
    assert torch.allclose(target, method.targets(images, box[:, None])[:, 0])
    pred = blue_box.block_representations(method, images, ctx, box, "predictor")
    expect = method.predictor(method.context_encoder(images, ctx), ctx, box[:, None])[:, 0]
    assert torch.allclose(pred, expect)
    shuffled = blue_box.block_representations(method, images, ctx, box, "shuffled context")
    other = method.predictor(
        method.context_encoder(images.roll(1, 0), ctx.roll(1, 0)), ctx.roll(1, 0), box[:, None]
    )
    assert torch.allclose(shuffled, other[:, 0]) and not torch.allclose(shuffled, pred)
    with pytest.raises(ValueError, match="source must be one of"):
        blue_box.block_representations(method, images, ctx, box, "mean")


def test_fill_in_changes_the_box_only_and_samples_differ(setup):
    method, decoder, images = setup
    ctx, box = blue_box.eval_masks(len(images), (7, 7), seed=0)
    filled = blue_box.fill_in(decoder, method, images, ctx, box, "predictor", n=2,
                              generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert filled.shape == (2, *images.shape)
    outside = torch.ones(len(images), 49, dtype=torch.bool).scatter_(1, box, False)
    for f in filled:
        assert torch.equal(patchify(f, 4)[outside], patchify(images, 4)[outside])
    assert not torch.allclose(
        gather_tokens(patchify(filled[0], 4), box), gather_tokens(patchify(filled[1], 4), box)
    )


def test_an_oracle_decoder_scores_zero_error_and_the_clean_accuracy(setup, monkeypatch):
    method, decoder, images = setup
    labels = torch.arange(len(images)) % 3
    classify = lambda x: x.flatten(1).mean(1).gt(0).long() + x.flatten(1)[:, 0].gt(0).long()  # noqa: E731
    clean = 100.0 * (classify(images) == labels).float().mean().item()

    def oracle(reps, idx, n=1, generator=None):
        return gather_tokens(patchify(images, 4), idx)[None].expand(n, -1, -1, -1)

    monkeypatch.setattr(decoder, "sample", oracle)
    scores = blue_box.fill_in_scores(decoder, method, images, labels, classify, n_samples=2, batch_size=6)
    for row in scores.values():
        assert row["box_mse"] == pytest.approx(0.0, abs=1e-12)
        assert row["class_acc"] == pytest.approx(clean)
    monkeypatch.setattr(decoder, "sample", lambda reps, idx, n=1, generator=None: oracle(reps, idx, n) + 1.0)
    scores = blue_box.fill_in_scores(decoder, method, images, labels, classify, n_samples=2, batch_size=6)
    assert all(row["box_mse"] == pytest.approx(1.0) for row in scores.values())  # off by one everywhere


def test_the_judge_is_the_linear_probe_as_a_classifier():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(300) % 3
    x = torch.randn(300, 8, generator=g) + 2.0 * torch.nn.functional.one_hot(y, 8).float()
    xt, yt = x[200:], y[200:]
    predict = fit_linear_classifier(x[:200], y[:200], weight_decay=1e-3)
    acc = 100.0 * (predict(xt) == yt).float().mean().item()
    assert acc == pytest.approx(linear_probe(x[:200], y[:200], xt, yt, weight_decay=1e-3))
    assert acc > 80


def test_a_missing_decoder_names_the_command_that_trains_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="python scripts/train_decoder.py"):
        blue_box.load_decoder(tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_FMNIST, reason="needs Fashion-MNIST (Debian dataset-fashion-mnist)")
def test_shipped_decoder_reproduces_its_recorded_scores():
    """A wrong or damaged decoder file fails here: its box error on the recorded test images must match."""
    if not (pretrained.WEIGHTS_DIR / f"{blue_box.DECODER}.safetensors").is_file():
        pytest.skip(f"the decoder is not shipped in this checkout (train it: {blue_box.DECODER_COMMAND})")
    from jepa_lite.data import build_dataset

    decoder, card = blue_box.load_decoder()
    method = pretrained.load(card["encoder"], part="method")
    check = card["check"]
    test_set = build_dataset("fmnist", train=False, image_size=28)
    images = torch.stack([test_set[i][0] for i in range(check["images"])])
    labels = torch.tensor([int(test_set[i][1]) for i in range(check["images"])])
    scores = blue_box.fill_in_scores(decoder, method, images, labels, lambda x: torch.zeros(len(x), dtype=torch.long),
                                       seed=check["seed"])  # fmt: skip
    for source, row in scores.items():
        assert row["box_mse"] == pytest.approx(check["scores"][source]["box_mse"], rel=1e-3), source
