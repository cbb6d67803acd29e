"""The blue-box decoder: pictures of what a representation says about a region of an image.

I-JEPA's predictor outputs representations, not pixels. To show what it predicts inside a target block (the
"blue box" of the paper's figure), the authors trained a stochastic generative decoder (RCDM, a conditional
diffusion model) that maps representations back to pixels, and drew several samples: if the samples agree on
the object part and its pose but differ in detail, the representation holds the part, not the pixels.

Here the decoder is a small *conditional VAE* over the patches of one block. As in the paper, it sees the
block's representation average-pooled over its patches (one vector [D]: per-patch vectors would pin down every
pixel and leave nothing to sample), the grid positions of the block's patches, and a latent z ~ N(0, I); its
output is the block's pixels [K, p*p*C]. It trains on the frozen target encoder's (layer-normed)
representations of real blocks, so at test time it can be fed the predictor's output for a block instead,
the same kind of vector. A conditional VAE rather than diffusion: one forward pass per sample and a few
minutes of CPU to train, and its latent makes the randomness explicit (z carries what the representation
leaves open); its samples are blurrier than a diffusion model's.

    decoder = BlockDecoder(grid=(7, 7), repr_dim=192, patch_size=4)
    fit_decoder(decoder, ijepa, train_set, steps=10_000)               # frozen I-JEPA, real target blocks
    pixels = decoder.sample(representation, block_idx, n=4)           # [4, B, K, p*p*C]
"""

from __future__ import annotations

import math

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..core.masks import sample_masks
from ..core.models import gather_tokens, patchify, sincos_pos_embed

__all__ = ["BlockDecoder", "block_targets", "fit_decoder", "unpatchify_block"]


class BlockDecoder(nn.Module):
    """p(pixels of a block | its pooled representation, z) and the posterior q(z | pixels, representation).

    Both are small transformers over the K patches of the block (positions from the same sin-cos table as
    the encoder); the pooled representation and z [latent_dim] are added to every token."""

    def __init__(
        self,
        grid: tuple[int, int],
        repr_dim: int,
        patch_size: int,
        in_chans: int = 1,
        *,
        dim: int = 128,
        depth: int = 2,
        num_heads: int = 4,
        latent_dim: int = 16,
    ) -> None:
        super().__init__()
        pixels = patch_size * patch_size * in_chans
        self.grid, self.patch_size, self.in_chans, self.latent_dim = (
            tuple(grid),
            patch_size,
            in_chans,
            latent_dim,
        )
        self.register_buffer("pos_embed", sincos_pos_embed(dim, self.grid)[None], persistent=False)
        self.embed = nn.Linear(repr_dim, dim)
        self.from_z = nn.Linear(latent_dim, dim)
        self.blocks = nn.ModuleList([Block(dim, num_heads, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.to_pixels = nn.Linear(dim, pixels)
        # the posterior sees the true pixels too; it is used in training only
        self.post_embed = nn.Linear(repr_dim + pixels, dim)
        self.post_block = Block(dim, num_heads, qkv_bias=True)
        self.to_z = nn.Linear(dim, 2 * latent_dim)

    def _tokens(self, x: Tensor, idx: Tensor) -> Tensor:
        return x + gather_tokens(self.pos_embed.expand(idx.shape[0], -1, -1), idx)

    def decode(self, reps: Tensor, idx: Tensor, z: Tensor) -> Tensor:
        """reps [B, K, D] at patches idx [B, K], z [B, L] -> pixels [B, K, p*p*C] (normalised like the data).
        Only the mean of `reps` over the block's patches is used."""
        x = self._tokens(self.embed(reps.mean(dim=1, keepdim=True)), idx) + self.from_z(z)[:, None]
        for block in self.blocks:
            x = block(x)
        return self.to_pixels(self.norm(x))

    def posterior(self, reps: Tensor, idx: Tensor, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance [B, L] of q(z | pixels [B, K, p*p*C], reps [B, K, D])."""
        pooled = reps.mean(dim=1, keepdim=True).expand(-1, pixels.shape[1], -1)
        x = self.post_block(self._tokens(self.post_embed(torch.cat([pooled, pixels], -1)), idx))
        mu, logvar = self.to_z(x.mean(dim=1)).chunk(2, dim=-1)
        return mu, logvar.clamp(-8, 8)

    def forward(self, reps: Tensor, idx: Tensor, pixels: Tensor, beta: float = 1.0) -> tuple[Tensor, dict]:
        """The negative ELBO per block: squared error summed over the block's
        pixels + beta * KL(q || N(0, I))."""
        mu, logvar = self.posterior(reps, idx, pixels)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        recon = (self.decode(reps, idx, z) - pixels).pow(2).sum(dim=(1, 2)).mean()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1).mean()
        loss = recon + beta * kl
        return loss, {"loss": loss.detach(), "recon": recon.detach(), "kl": kl.detach()}

    @torch.no_grad()
    def sample(
        self, reps: Tensor, idx: Tensor, n: int = 1, generator: torch.Generator | None = None
    ) -> Tensor:
        """`n` samples of the block's pixels from the prior: [n, B, K, p*p*C]."""
        z = torch.randn(n, reps.shape[0], self.latent_dim, generator=generator).to(reps.device)
        return torch.stack([self.decode(reps, idx, zi) for zi in z])


def block_targets(method: nn.Module, images: Tensor, block_idx: Tensor) -> tuple[Tensor, Tensor]:
    """The frozen target encoder's layer-normed representations [B, K, D] of the patches `block_idx` [B, K],
    and those patches' pixels [B, K, p*p*C]: what the decoder learns to map between."""
    with torch.no_grad():
        reps = method.targets(images, block_idx[:, None])[:, 0]
    return reps, gather_tokens(patchify(images, method.eval_encoder.patch_size), block_idx)


def fit_decoder(
    decoder: BlockDecoder,
    method: nn.Module,
    dataset,
    *,
    steps: int = 10_000,
    batch_size: int = 64,
    lr: float = 1e-3,
    beta: float = 0.05,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Train `decoder` on the target blocks of the paper's multi-block masks over `dataset` images, with the
    I-JEPA `method` frozen (its target encoder gives the representations). AdamW, cosine learning rate;
    returns the per-step logs. `beta` weights the KL term: a small one keeps the latent in use (at 1.0 the
    decoder learns to ignore z and every sample of a box looks the same)."""
    gen = torch.Generator().manual_seed(seed)
    method.eval().requires_grad_(False)
    decoder.train()
    opt = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    logs = []
    for _ in tqdm(range(steps), disable=not progress, desc="blue-box decoder"):
        rows = torch.randint(len(dataset), (batch_size,), generator=gen).tolist()
        images = torch.stack([dataset[i][0] for i in rows])
        _, target_idx = sample_masks(batch_size, decoder.grid, generator=gen)  # [B, M, Kt]
        pick = torch.randint(target_idx.shape[1], (batch_size,), generator=gen)
        block = target_idx[torch.arange(batch_size), pick]  # one block per image: [B, Kt]
        reps, pixels = block_targets(method, images, block)
        loss, log = decoder(reps, block, pixels, beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        logs.append({k: float(v) for k, v in log.items()})
    decoder.eval()
    return logs


def unpatchify_block(images: Tensor, block_idx: Tensor, pixels: Tensor) -> Tensor:
    """Write a block's patches `pixels` [B, K, p*p*C] at `block_idx` [B, K] into
    copies of `images` [B, C, H, W]."""
    b, c, h, w = images.shape
    p = int(math.isqrt(pixels.shape[-1] // c))
    patches = patchify(images, p).clone()  # [B, N, p*p*C]
    patches.scatter_(1, block_idx[..., None].expand(-1, -1, patches.shape[-1]), pixels.to(patches.dtype))
    gh, gw = h // p, w // p
    return patches.reshape(b, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)
