"""The blue-box decoder (a conditional VAE from block representations to pixels): its parts and that it learns."""

import pytest
import torch

from jepa_lite.core.build import build_method
from jepa_lite.core.config import load_config
from jepa_lite.core.models import gather_tokens, patchify
from jepa_lite.lab.decoder import BlockDecoder, block_targets, fit_decoder, unpatchify_block


def test_unpatchify_block_writes_exactly_the_block():
    x = torch.randn(3, 1, 28, 28)
    idx = torch.tensor([[0, 1, 8], [5, 6, 13], [40, 41, 48]])
    assert torch.equal(unpatchify_block(x, idx, gather_tokens(patchify(x, 4), idx)), x)
    y = unpatchify_block(x, idx, torch.zeros(3, 3, 16))
    assert torch.equal(gather_tokens(patchify(y, 4), idx), torch.zeros(3, 3, 16))
    outside = torch.ones(3, 49, dtype=torch.bool).scatter_(1, idx, False)
    assert torch.equal(patchify(y, 4)[outside], patchify(x, 4)[outside])


def test_the_decoder_reads_only_the_pooled_representation_and_samples_vary_with_z():
    torch.manual_seed(0)
    dec = BlockDecoder((7, 7), 32, 4, dim=32, num_heads=2).eval()
    reps, idx = torch.randn(2, 6, 32), torch.tensor([[0, 1, 2, 7, 8, 9], [10, 11, 12, 17, 18, 19]])
    z = torch.randn(2, dec.latent_dim)
    shuffled = reps[:, torch.randperm(6)]  # same mean over the block
    assert torch.allclose(dec.decode(reps, idx, z), dec.decode(shuffled, idx, z), atol=1e-5)
    samples = dec.sample(reps, idx, n=3, generator=torch.Generator().manual_seed(1))
    assert samples.shape == (3, 2, 6, 16)
    assert not torch.allclose(samples[0], samples[1])  # different z, different pixels
    loss, logs = dec(reps, idx, torch.randn(2, 6, 16), beta=0.0)
    assert loss.item() == pytest.approx(logs["recon"].item())  # beta 0: the reconstruction term alone


def test_fit_decoder_learns_to_draw_blocks_from_a_frozen_ijepa():
    cfg = load_config(overrides=["model.depth=1", "model.predictor_depth=1"])
    torch.manual_seed(0)
    method = build_method(cfg, 1)
    g = torch.Generator().manual_seed(0)
    # images that differ by their brightness only: the pooled representation says which, and so the pixels
    levels = torch.rand(256, generator=g)
    data = [
        (torch.full((1, 28, 28), float(v)) + 0.05 * torch.randn(1, 28, 28, generator=g), 0) for v in levels
    ]
    dec = BlockDecoder((7, 7), 192, 4, dim=32, num_heads=2)
    images = torch.stack([d[0] for d in data[:32]])
    block = torch.arange(0, 9).expand(32, -1)  # the first 9 patches
    reps, pixels = block_targets(method, images, block)

    def error() -> float:
        with torch.no_grad():
            return (dec.sample(reps, block, n=1)[0] - pixels).pow(2).mean().item()

    before = error()
    logs = fit_decoder(dec, method, data, steps=150, batch_size=32, lr=3e-3, beta=0.05, progress=False)
    assert not any(p.requires_grad for p in method.parameters())  # I-JEPA stays frozen
    assert logs[-1]["recon"] < 0.2 * logs[0]["recon"]
    assert error() < 0.2 * before
