"""What the checkpoint formats share: head counts (not stored in any weight shape), strict loading with
readable errors, and positions interpolated to a new image size."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn

from ..core.models import ViTEncoder

WHICH = {"target": "target_encoder", "context": "encoder"}


PREFIX = "module."


_OFFICIAL_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}


def _check_which(which: str) -> str:
    if which not in WHICH:
        raise ValueError(f"which={which!r} must be one of {sorted(WHICH)}")
    return WHICH[which]


def infer_num_heads(dim: int) -> int:
    """Attention heads of an official I-JEPA width (ViT-H 1280 -> 16), else dim // 64 (head dim 64)."""
    if dim in _OFFICIAL_HEADS:
        return _OFFICIAL_HEADS[dim]
    if dim % 64 == 0:
        return dim // 64
    raise ValueError(f"cannot infer attention heads for embed dim {dim}; pass num_heads=")


def _square_grid(n: int, key: str) -> int:
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(
            f"{key} holds {n} positions, not a square grid; build the module yourself and pass it"
        )
    return side


def _depth(state: Mapping[str, Tensor], prefix: str) -> int:
    pat = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    found = {int(m.group(1)) for k in state if (m := pat.match(k))}
    return max(found) + 1 if found else 0


def _need(state: Mapping[str, Tensor], key: str, where: str) -> Tensor:
    if key not in state:
        raise ValueError(f"{where}: missing key {key!r}")
    return state[key]


def _strip_prefix(state: Mapping[str, Tensor], where: str) -> dict[str, Tensor]:
    """Drop the `module.` of DistributedDataParallel from every key (keys without it are kept as is)."""
    if not isinstance(state, Mapping):
        raise ValueError(f"{where}: expected a state dict, got {type(state).__name__}")
    return {k[len(PREFIX) :] if k.startswith(PREFIX) else k: v for k, v in state.items()}


def _load_strict(module: nn.Module, state: Mapping[str, Tensor], where: str) -> nn.Module:
    """Load `state` into `module` requiring every key used and every shape equal; the error names the first
    missing, unexpected or mismatched key."""
    expected = module.state_dict()
    for key, ref in expected.items():
        if key not in state:
            raise ValueError(f"{where}: missing key {key!r} (expected shape {tuple(ref.shape)})")
        if tuple(state[key].shape) != tuple(ref.shape):
            raise ValueError(
                f"{where}: shape mismatch at {key!r}: checkpoint {tuple(state[key].shape)}, "
                f"model {tuple(ref.shape)}"
            )
    for key in state:
        if key not in expected:
            raise ValueError(f"{where}: unexpected key {key!r} (not in {type(module).__name__})")
    on_meta = any(t.is_meta for t in state.values()) or any(t.is_meta for t in expected.values())
    module.load_state_dict(dict(state), strict=True, assign=on_meta)
    return module


def _build_on(device: torch.device, fn):
    with torch.device(device):
        return fn()


def resize_pos_embed(pos: Tensor, old_grid, new_grid, mode: str = "bicubic") -> Tensor:
    """Interpolate 2-D positions (no class token) [1, Ho*Wo, D] or [Ho*Wo, D] -> same rank with Hn*Wn rows
    (timm's `resample_abs_pos_embed`, after checking that the rows are the old grid)."""
    old = (old_grid, old_grid) if isinstance(old_grid, int) else tuple(old_grid)
    new = (new_grid, new_grid) if isinstance(new_grid, int) else tuple(new_grid)
    squeeze = pos.dim() == 2
    x = pos[None] if squeeze else pos
    if x.dim() != 3 or x.shape[0] != 1 or x.shape[1] != old[0] * old[1]:
        raise ValueError(f"pos of shape {tuple(pos.shape)} is not [1, {old[0] * old[1]}, D] for grid {old}")
    if min(new) < 1:
        raise ValueError(f"new_grid={new_grid!r} must be positive")
    if new == old:
        return pos.clone()
    out = resample_abs_pos_embed(
        x, list(new), list(old), num_prefix_tokens=0, interpolation=mode, antialias=False
    )
    return out[0] if squeeze else out


def set_image_size_(encoder: ViTEncoder, img_size: int) -> ViTEncoder:
    """Make an encoder accept img_size x img_size images: new patch grid, positions interpolated in 2-D."""
    p = encoder.patch_size
    if img_size % p != 0:
        raise ValueError(f"img_size={img_size} must be a multiple of the patch size {p}")
    new = (img_size // p, img_size // p)
    if new == tuple(encoder.grid):
        return encoder
    encoder.pos_embed = resize_pos_embed(encoder.pos_embed, encoder.grid, new)
    pe = encoder.patch_embed
    pe.img_size, pe.grid_size, pe.num_patches = (img_size, img_size), new, new[0] * new[1]
    encoder.grid = new
    return encoder
