"""The networks of I-JEPA on timm parts: a ViT encoder with a masked forward, the narrow predictor,
the MAE pixel decoder and the projection head of the invariant method.

Key names follow the official I-JEPA code (`pos_embed`, `patch_embed.proj`, `blocks.i`, `norm`;
`predictor_embed`, `mask_token`, `predictor_pos_embed`, `predictor_blocks.i`, `predictor_norm`,
`predictor_proj`) so its checkpoints map one to one.
"""

from __future__ import annotations

import contextlib
import math

import timm
import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

__all__ = [
    "sincos_pos_embed",
    "gather_tokens",
    "key_padding_mask",
    "official_init_",
    "ViTEncoder",
    "Predictor",
    "PixelDecoder",
    "ProjectionHead",
    "patchify",
    "count_parameters",
    "attention_kernels",
]


def sincos_pos_embed(dim: int, grid: tuple[int, int]) -> Tensor:
    """Fixed 2-D sin-cos positions [H*W, dim]: half the channels encode the row, half the column."""
    if dim % 4 != 0:
        raise ValueError(f"embed dim {dim} must be divisible by 4 for 2-D sin-cos positions")
    h, w = grid
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # [D/4]
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    parts = []
    for coord in (rows.flatten(), cols.flatten()):
        angle = coord[:, None] * omega[None, :]  # [H*W, D/4]
        parts += [torch.sin(angle), torch.cos(angle)]
    return torch.cat(parts, dim=1).float()


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """Pick tokens by index: x [B, N, D], idx [B, K] -> [B, K, D]."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def key_padding_mask(valid: Tensor | None) -> Tensor | None:
    """valid [B, K] bool (True for a real token) -> attention mask [B, 1, 1, K] (True: may be attended to)."""
    return None if valid is None else valid[:, None, None, :]


def _run_blocks(
    blocks: nn.ModuleList, x: Tensor, grad_checkpointing: bool, valid: Tensor | None = None
) -> Tensor:
    """Run the blocks on x [B, K, D]; tokens where `valid` [B, K] is False are never attended to."""
    mask = key_padding_mask(valid)
    extra = () if mask is None else (mask,)  # timm's Block.forward(x, attn_mask=None)
    for block in blocks:
        if grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(block, x, *extra, use_reentrant=False)
        else:
            x = block(x, *extra)
    return x


class ViTEncoder(nn.Module):
    """A timm VisionTransformer without class token, with fixed 2-D sin-cos positions, that can run on a
    subset of patches: `forward(images [B,C,H,W], keep_idx [B,K] | None) -> tokens [B, K or N, D]`."""

    def __init__(
        self,
        model_name: str | None = None,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        common = dict(class_token=False, global_pool="", num_classes=0, pos_embed="none", img_size=img_size)
        common.update(in_chans=in_chans, drop_path_rate=drop_path_rate)
        if model_name is not None:
            try:
                vit = timm.create_model(model_name, pretrained=False, **common)
            except RuntimeError as err:  # timm raises RuntimeError for unknown names
                raise ValueError(f"unknown timm model name {model_name!r}: {err}") from None
            if not isinstance(vit, timm.models.vision_transformer.VisionTransformer):
                raise ValueError(f"model {model_name!r} is not a timm VisionTransformer")
            patch = vit.patch_embed.patch_size[0]
            if img_size % patch:  # timm would silently drop the image's last pixels
                raise ValueError(
                    f"img_size {img_size} must be divisible by the patch size {patch} of {model_name!r}"
                )
        else:
            if img_size % patch_size != 0:
                raise ValueError(f"img_size {img_size} must be divisible by patch_size {patch_size}")
            if embed_dim % num_heads != 0:
                raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
            vit = timm.models.vision_transformer.VisionTransformer(
                patch_size=patch_size,
                embed_dim=embed_dim,
                depth=depth,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=True,
                **common,
            )
        self.patch_embed = vit.patch_embed
        self.blocks = vit.blocks
        self.norm = vit.norm
        self.embed_dim = vit.embed_dim
        self.num_heads = vit.blocks[0].attn.num_heads
        self.grid = tuple(self.patch_embed.grid_size)
        self.patch_size = self.patch_embed.patch_size[0]
        self.in_chans = in_chans
        self.register_buffer("pos_embed", sincos_pos_embed(self.embed_dim, self.grid)[None], persistent=True)
        self.grad_checkpointing = False
        depth_rescale_(self.blocks)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(
        self, images: Tensor, keep_idx: Tensor | None = None, keep_valid: Tensor | None = None
    ) -> Tensor:
        """Patch-embed, add positions, keep only `keep_idx` tokens [B, K] if given, run blocks, final norm.
        `keep_valid` [B, K] bool marks padding (False) that attention ignores; its outputs are meaningless."""
        if keep_valid is not None and keep_idx is None:
            raise ValueError("keep_valid marks padding of keep_idx: pass keep_idx too")
        x = self.patch_embed(images) + self.pos_embed  # [B, N, D]
        if keep_idx is not None:
            x = gather_tokens(x, keep_idx)
        x = _run_blocks(self.blocks, x, self.grad_checkpointing, keep_valid)
        return self.norm(x)


class Predictor(nn.Module):
    """The narrow ViT of I-JEPA: from context tokens [B, Kc, D] it predicts the representation of each
    target block [B, M, Kt, D]. Target patches enter as a shared mask token plus their position, and each
    target block gets its own pass over [context, mask tokens], so targets never see each other."""

    def __init__(
        self,
        grid: tuple[int, int],
        embed_dim: int,
        *,
        predictor_dim: int = 384,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        if predictor_dim % num_heads != 0:
            raise ValueError(
                f"predictor_dim {predictor_dim} must be divisible by predictor heads {num_heads}"
            )
        self.grid = tuple(grid)
        self.predictor_embed = nn.Linear(embed_dim, predictor_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_dim))
        self.register_buffer("predictor_pos_embed", sincos_pos_embed(predictor_dim, self.grid)[None])
        self.predictor_blocks = nn.ModuleList(
            [Block(predictor_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True) for _ in range(depth)]
        )
        self.predictor_norm = nn.LayerNorm(predictor_dim, eps=1e-6)
        self.predictor_proj = nn.Linear(predictor_dim, out_dim or embed_dim)
        self.grad_checkpointing = False
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.apply(_init_weights)
        depth_rescale_(self.predictor_blocks)

    def forward(
        self,
        context_tokens: Tensor,
        context_idx: Tensor,
        target_idx: Tensor,
        context_valid: Tensor | None = None,
        target_valid: Tensor | None = None,
    ) -> Tensor:
        """context_tokens [B, Kc, D], context_idx [B, Kc], target_idx [B, M, Kt] -> [B, M, Kt, D_out].
        `context_valid` [B, Kc] and `target_valid` [B, M, Kt] (bool) mark padding (False): attention never
        looks at padded tokens, and the outputs at padded targets are meaningless."""
        b, m, kt = target_idx.shape
        pos = self.predictor_pos_embed.expand(b, -1, -1)
        ctx = self.predictor_embed(context_tokens) + gather_tokens(pos, context_idx)  # [B, Kc, P]
        ctx = ctx.repeat_interleave(m, dim=0)  # [B*M, Kc, P]: one sequence per target block
        tgt_pos = gather_tokens(pos.repeat_interleave(m, dim=0), target_idx.reshape(b * m, kt))
        x = torch.cat([ctx, self.mask_token + tgt_pos], dim=1)  # [B*M, Kc+Kt, P]
        valid = None  # [B*M, Kc+Kt]: which tokens attention may look at
        if context_valid is not None or target_valid is not None:
            kc = context_idx.shape[1]
            cv = context_valid.repeat_interleave(m, dim=0) if context_valid is not None else None
            tv = target_valid.reshape(b * m, kt) if target_valid is not None else None
            cv = cv if cv is not None else target_idx.new_ones(b * m, kc, dtype=torch.bool)
            tv = tv if tv is not None else target_idx.new_ones(b * m, kt, dtype=torch.bool)
            valid = torch.cat([cv, tv], dim=1)
        x = _run_blocks(self.predictor_blocks, x, self.grad_checkpointing, valid)
        x = self.predictor_proj(self.predictor_norm(x[:, -kt:]))
        return x.reshape(b, m, kt, -1)


class PixelDecoder(Predictor):
    """MAE's decoder: the same narrow ViT, but all masked patches in one pass and pixels as output.
    Returns [B, K, patch_size**2 * C] for the flattened target indices [B, K]. `forward_blocks` decodes each
    target block [B, M, Kt] in its own pass instead, as I-JEPA's predictor does: [B, M, Kt, p*p*C]."""

    forward_blocks = Predictor.forward

    def __init__(
        self, grid: tuple[int, int], embed_dim: int, patch_size: int, in_chans: int, **kwargs
    ) -> None:
        super().__init__(grid, embed_dim, out_dim=patch_size * patch_size * in_chans, **kwargs)

    def forward(
        self, context_tokens, context_idx, target_idx, context_valid=None, target_valid=None
    ) -> Tensor:
        """As `Predictor.forward`, with every target block decoded together: -> [B, M*Kt, p*p*C]."""
        flat = target_idx.reshape(target_idx.shape[0], 1, -1)
        tv = None if target_valid is None else target_valid.reshape(flat.shape)
        return super().forward(context_tokens, context_idx, flat, context_valid, target_valid=tv)[:, 0]


class ProjectionHead(nn.Module):
    """Two-layer MLP on pooled features, the projector of SimCLR-style invariant
    methods: [B, D] -> [B, out]."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """Images [B, C, H, W] -> patches [B, N, p*p*C] in raster order (channels last within a patch)."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of a module (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in module.parameters())


def attention_kernels(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Where to run a training step's attention: on CUDA, any SDPA kernel but cuDNN's. I-JEPA's context and
    target lengths change every step, and cuDNN (PyTorch's first choice on Hopper) builds a new plan for each
    new length: on an H100 that cost 2-4 ms of host time per attention call and left the GPU idle."""
    if torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def _init_weights(m: nn.Module, weights: tuple[type, ...] = (nn.Linear,)) -> None:
    """Truncated-normal (std 0.02) weights, zero biases for the `weights` layer types; LayerNorm 1 and 0."""
    if isinstance(m, weights):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def official_init_(module: nn.Module) -> None:
    """The official I-JEPA initialisation: every Linear and Conv2d weight redrawn from a truncated normal of
    std 0.02 (the patch embedding included), biases zero, LayerNorms one and zero. The official code draws
    its weights, rescales the residual branches by depth, then redraws every Linear weight, so the depth
    rescale is undone: this is what it trains from."""
    for m in module.modules():
        _init_weights(m, (nn.Linear, nn.Conv2d))


def depth_rescale_(blocks: nn.ModuleList) -> None:
    """Scale each residual branch's output projection by 1/sqrt(2*layer), as the official I-JEPA init does."""
    for i, block in enumerate(blocks, start=1):
        block.attn.proj.weight.data.div_(math.sqrt(2.0 * i))
        block.mlp.fc2.weight.data.div_(math.sqrt(2.0 * i))
