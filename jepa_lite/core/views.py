"""Augmented views: the hand-crafted augmentations that invariant methods need and I-JEPA does without.

An invariant method (SimCLR-like, `methods.Invariant`) and LeJEPA learn by making two views of one image
agree, so what the views change (crop, flip, brightness, contrast) decides what the features ignore. I-JEPA
predicts masked blocks of one image instead; its official recipe keeps one random resized crop
(`random_resized_crop`, used by `methods.IJEPA` when `crop_scale` is set). Both are batched on the images'
device and draw from the global RNG (saved in checkpoints, so a resumed run draws the same views)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["augment_views", "random_resized_crop"]


def _crop_boxes(b: int, crop_scale: tuple[float, float], dev) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random resized crop boxes (aspect 3/4-4/3) as affine scales and shifts sx, sy, tx, ty, each [B]."""
    scale = torch.empty(b, device=dev).uniform_(*crop_scale)
    log_ratio = torch.empty(b, device=dev).uniform_(-0.2877, 0.2877)  # log(3/4) .. log(4/3)
    sx = (scale * log_ratio.exp()).sqrt().clamp(max=1.0)
    sy = (scale / log_ratio.exp()).sqrt().clamp(max=1.0)
    tx = (torch.rand(b, device=dev) * 2 - 1) * (1 - sx)
    ty = (torch.rand(b, device=dev) * 2 - 1) * (1 - sy)
    return sx, sy, tx, ty


def _warp(images: Tensor, sx: Tensor, sy: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    """Resample each image's box (affine scales sx, sy and shifts tx, ty, [B]) back to the full size."""
    theta = torch.zeros(images.shape[0], 2, 3, device=images.device)
    theta[:, 0, 0], theta[:, 0, 2] = sx, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(
        images, grid.to(images.dtype), mode="bilinear", padding_mode="reflection", align_corners=False
    )


def random_resized_crop(images: Tensor, crop_scale: tuple[float, float] = (0.3, 1.0)) -> Tensor:
    """RandomResizedCrop of each image [B, C, H, W], batched on its device: a box of `crop_scale` of the area
    (aspect 3/4-4/3), resized back to H x W. The official I-JEPA recipe's only augmentation. Global RNG."""
    return _warp(images, *_crop_boxes(images.shape[0], crop_scale, images.device))


def augment_views(
    images: Tensor, *, crop_scale: tuple[float, float] = (0.3, 1.0), jitter: float = 0.4
) -> Tensor:
    """One random view per image, batched on the images' device: random resized crop (aspect 3/4-4/3),
    horizontal flip, brightness/contrast jitter and a little noise. Uses the global RNG (saved on resume)."""
    b, dev = images.shape[0], images.device
    sx, sy, tx, ty = _crop_boxes(b, crop_scale, dev)
    flip = torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0)
    out = _warp(images, sx * flip, sy, tx, ty=ty)
    contrast = 1 + (torch.rand(b, 1, 1, 1, device=dev) * 2 - 1) * jitter
    brightness = (torch.rand(b, 1, 1, 1, device=dev) * 2 - 1) * jitter
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast + mean + brightness
    return out + 0.05 * torch.randn_like(out)
