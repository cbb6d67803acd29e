"""Analytic FLOPs of one I-JEPA training step and model FLOP utilisation (MFU).

Counting convention (as in PaLM / nanoGPT's MFU): FLOPs = 2 x multiply-accumulates of the matrix products,
backward = 2 x forward, activation-checkpointing recompute NOT counted (it is not model work). A transformer
block of width D, MLP ratio r on T tokens does T*D^2*(4 + 2r) MACs in its linear layers (qkv, proj, MLP) and
2*T^2*D in attention (Q K^T and A V). Per image, one I-JEPA step is
  context encoder forward + backward on Kc tokens (patch embedding on all N patches),
  predictor forward + backward on M sequences of Kc + Kt tokens (one per target block),
  target encoder forward only, on all N tokens.
Norms, softmax, the loss and the EMA update are elementwise and left out (< 1% for ViT-B and larger).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .build import build_collator, in_chans_of
from .config import Config

__all__ = [
    "VIT_SIZES",
    "PEAK_BF16_FLOPS",
    "StepFlops",
    "block_flops",
    "encoder_dims",
    "expected_tokens",
    "ijepa_step_flops",
    "plain_vit_step_flops",
    "peak_flops",
    "mfu",
]

# timm ViT names -> (embed_dim, depth, num_heads, mlp_ratio); the patch size is read from the name.
VIT_SIZES = {
    "vit_tiny": (192, 12, 3, 4.0),
    "vit_small": (384, 12, 6, 4.0),
    "vit_base": (768, 12, 12, 4.0),
    "vit_large": (1024, 24, 16, 4.0),
    "vit_huge": (1280, 32, 16, 4.0),
    "vit_giant": (1408, 40, 16, 48 / 11),
}

# Peak dense bf16 tensor-core FLOP/s (no sparsity), from the vendors' data sheets; matched by substring of
# torch.cuda.get_device_name(), first match wins (so the PCIe H100 is tested before the SXM default).
PEAK_BF16_FLOPS = [
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM, e.g. "NVIDIA H100 80GB HBM3"
    ("H200", 989e12),
    ("A100", 312e12),
]


def block_flops(tokens: float, dim: int, mlp_ratio: float = 4.0) -> float:
    """Forward FLOPs of one transformer block on one sequence of `tokens` tokens of width `dim`."""
    return 2.0 * (tokens * dim * dim * (4.0 + 2.0 * mlp_ratio) + 2.0 * tokens * tokens * dim)


def encoder_dims(cfg: Config) -> dict:
    """Encoder geometry of a config: embed_dim, depth, mlp_ratio, patch_size, in_chans, tokens (N)."""
    m = cfg.model
    if m.name:
        family = "_".join(m.name.split("_")[:2])
        if family not in VIT_SIZES or "_patch" not in m.name:
            raise ValueError(f"model.name {m.name!r} is not one of the ViT families {', '.join(VIT_SIZES)}")
        dim, depth, _, ratio = VIT_SIZES[family]
        patch = int(m.name.split("_patch")[1].split("_")[0])
    else:
        dim, depth, ratio, patch = m.embed_dim, m.depth, 4.0, m.patch_size
    if cfg.data.image_size % patch:
        raise ValueError(f"data.image_size {cfg.data.image_size} is not a multiple of the patch size {patch}")
    grid = cfg.data.image_size // patch
    return dict(
        embed_dim=dim,
        depth=depth,
        mlp_ratio=ratio,
        patch_size=patch,
        in_chans=in_chans_of(cfg),
        tokens=grid * grid,
        grid=grid,
    )


def expected_tokens(
    cfg: Config, *, collator=None, batch_size: int | None = None, draws: int = 4, seed: int = 0
) -> tuple[float, float, int]:
    """Mean (Kc, Kt, M) of the config's mask collator over `draws` batches of `batch_size` rows (default: the
    global batch, since Kc is the minimum over the rows drawn together). Real tokens only: padding
    (`mask.context_fill=pad|fixed`) is not model work, like activation-checkpointing recompute. `collator`:
    the run's own (default: the config's, built here)."""
    if collator is None:
        grid = encoder_dims(cfg)["grid"]
        collator = build_collator(cfg, (grid, grid))
    b = batch_size or cfg.optim.global_batch
    gen = torch.Generator().manual_seed(seed)
    kc = kt = 0.0
    m = 1
    for _ in range(draws):
        ctx, tgt = collator.sample(b, gen)  # -1 marks padding
        kc += float((ctx >= 0).sum(-1).float().mean()) / draws
        kt += float((tgt >= 0).sum(-1).float().mean()) / draws
        m = tgt.shape[1]
    return kc, kt, m


@dataclass
class StepFlops:
    """FLOPs per image of one training step, by part (each already includes its
    backward where there is one)."""

    context_encoder: float
    predictor: float
    target_encoder: float
    context_tokens: float
    target_tokens: float
    n_targets: int

    @property
    def total(self) -> float:
        return self.context_encoder + self.predictor + self.target_encoder


def ijepa_step_flops(
    cfg: Config,
    *,
    collator=None,
    kc: float | None = None,
    kt: float | None = None,
    n_targets: int | None = None,
) -> StepFlops:
    """Analytic FLOPs per image of one I-JEPA optimizer step of `cfg`; Kc, Kt, M default to the collator's
    expectation (`expected_tokens`, of `collator` if given)."""
    if kc is None or kt is None or n_targets is None:
        ekc, ekt, em = expected_tokens(cfg, collator=collator)
        kc, kt, n_targets = kc or ekc, kt or ekt, n_targets or em
    e = encoder_dims(cfg)
    d, depth, r, n = e["embed_dim"], e["depth"], e["mlp_ratio"], e["tokens"]
    patch_embed = 2.0 * n * e["in_chans"] * e["patch_size"] ** 2 * d
    ctx_fwd = patch_embed + depth * block_flops(kc, d, r)
    tgt_fwd = patch_embed + depth * block_flops(n, d, r)
    p = cfg.model
    pd = p.predictor_dim
    pred_fwd = 2.0 * kc * d * pd  # predictor_embed D -> P, once per image
    pred_fwd += n_targets * (p.predictor_depth * block_flops(kc + kt, pd, 4.0) + 2.0 * kt * pd * d)
    return StepFlops(3 * ctx_fwd, 3 * pred_fwd, tgt_fwd, kc, target_tokens=kt, n_targets=n_targets)


def plain_vit_step_flops(cfg: Config, *, classes: int = 0) -> float:
    """FLOPs per image of one training step of the config's encoder as a plain ViT on whole images (forward
    and backward, N tokens, plus a `classes`-way linear head on pooled tokens): the yardstick of
    `scripts/benchmark.py step --reference`."""
    e = encoder_dims(cfg)
    d, n = e["embed_dim"], e["tokens"]
    forward = 2.0 * n * e["in_chans"] * e["patch_size"] ** 2 * d + e["depth"] * block_flops(
        n, d, e["mlp_ratio"]
    )
    return 3 * (forward + 2.0 * d * classes)


def peak_flops(device_name: str | None) -> float | None:
    """Peak dense bf16 FLOP/s of a GPU name (A100, H100 SXM/PCIe, H200); None for
    a CPU or an unknown device."""
    if not device_name or device_name.lower().startswith("cpu"):
        return None
    for key, peak in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def mfu(flops_per_s: float, device_name: str | None) -> float | None:
    """Model FLOP utilisation in [0, 1]: achieved model FLOP/s over the device's
    peak bf16; None if unknown."""
    peak = peak_flops(device_name)
    return None if peak is None else flops_per_s / peak
