"""The three families of self-supervised learning on one ViT encoder and one batch contract, and LeJEPA.

- `IJEPA` (joint-embedding predictive): predict the target encoder's representations of target blocks;
  with `sigreg_weight` and target_mode 'online', SIGReg instead of the EMA teacher keeps it from collapse.
- `MAE` (generative): reconstruct the normalised pixels of masked patches.
- `Invariant` (joint-embedding, SimCLR-like): two augmented views, InfoNCE between their embeddings.
- `LeJEPA` (Balestriero and LeCun 2025): every view's embedding predicts the mean of the global views',
  with SIGReg (sigreg.py) and no EMA, stop-gradient or schedule of a teacher.

Each is an nn.Module whose `forward(batch) -> (loss, logs)`; `eval_encoder` is the encoder to probe.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import registry
from .collate import Batch
from .ema import ema_update
from .models import PixelDecoder, Predictor, ProjectionHead, ViTEncoder, gather_tokens, patchify
from .sigreg import sigreg
from .views import augment_views, random_resized_crop

__all__ = [
    "IJEPA",
    "MAE",
    "Invariant",
    "LeJEPA",
    "ijepa_loss",
    "masked_mean",
    "foreground_patches",
    "info_nce",
    "METHODS",
]

TARGET_MODES = registry.TARGET_MODES


def ijepa_loss(pred: Tensor, target: Tensor, kind: str = "smooth_l1", valid: Tensor | None = None) -> Tensor:
    """Distance between predicted and target representations, averaged: smooth-L1 (official code) or L2
    (the paper's equation, section 3).

    pred, target [..., K, D]; `valid` [..., K] (bool) keeps padded targets out of the average."""
    losses = {"smooth_l1": F.smooth_l1_loss, "l2": F.mse_loss}  # the names of registry.LOSSES
    if kind not in losses:
        raise ValueError(f"loss {kind!r} is not one of {', '.join(losses)}")
    if valid is None:
        return losses[kind](pred, target)
    return masked_mean(losses[kind](pred, target, reduction="none"), valid)


def masked_mean(per_element: Tensor, valid: Tensor | None) -> Tensor:
    """Mean of `per_element` [..., K, D] over the tokens where `valid` [..., K] is True (all if None)."""
    if valid is None:
        return per_element.mean()
    weight = valid.unsqueeze(-1).to(per_element.dtype)
    return (per_element * weight).sum() / (weight.sum().clamp(min=1) * per_element.shape[-1])


def foreground_patches(images: Tensor, patch_size: int, threshold: float = 0.05) -> Tensor:
    """[B, N] bool: patches of images [B, C, H, W] that hold some of the object, i.e. a pixel brighter than
    the image's background (its darkest value) by `threshold` of the image's range. On Fashion-MNIST about a
    third of the 7x7 patches are pure black background."""
    pix = patchify(images, patch_size)  # [B, N, p*p*C]
    lo = images.flatten(1).amin(1)[:, None, None]
    span = (images.flatten(1).amax(1) - images.flatten(1).amin(1)).clamp(min=1e-6)[:, None]
    return (pix - lo).amax(-1) > threshold * span


def _maybe_crop(images: Tensor, crop_scale: tuple[float, float] | None, training: bool) -> Tensor:
    return random_resized_crop(images, crop_scale) if crop_scale is not None and training else images


class IJEPA(nn.Module):
    """Context encoder + predictor, trained to match an EMA target encoder's layer-normed patch features.

    `target_mode` is for the collapse lab: 'ema' (I-JEPA), 'online_stopgrad' (target = the context encoder
    itself under stop-gradient, i.e. momentum 0), 'online' (no stop-gradient: gradients flow into the target).
    `crop_scale` (lo, hi): each training image is first randomly cropped and resized, as in the official
    recipe. `foreground_targets`: the loss skips target patches of pure background (an ablation).
    `sigreg_weight` lambda > 0 (with target_mode 'online': targets from the same encoder, with gradients):
    loss = (1 - lambda) * prediction + lambda * SIGReg of the full image's patch embeddings [B*N, D], the
    regulariser of LeJEPA in place of the EMA teacher.
    """

    def __init__(
        self,
        encoder: ViTEncoder,
        predictor: Predictor,
        *,
        loss: str = "smooth_l1",
        target_mode: str = "ema",
        crop_scale: tuple[float, float] | None = None,
        foreground_targets: bool = False,
        sigreg_weight: float = 0.0,
        sigreg_slices: int = 256,
    ) -> None:
        super().__init__()
        if not 0 <= sigreg_weight < 1:
            raise ValueError(f"sigreg_weight {sigreg_weight} must lie in [0, 1)")
        if target_mode not in TARGET_MODES:
            raise ValueError(f"target_mode {target_mode!r} is not one of {TARGET_MODES}")
        ijepa_loss(torch.zeros(1), torch.zeros(1), loss)  # validates the loss name early
        self.context_encoder = encoder
        self.predictor = predictor
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.loss_kind = loss
        self.target_mode = target_mode
        self.crop_scale = crop_scale
        self.foreground_targets = foreground_targets
        self.sigreg_weight, self.sigreg_slices = sigreg_weight, sigreg_slices

    @property
    def eval_encoder(self) -> ViTEncoder:
        """The paper evaluates the target encoder; in the online modes the target *is* the context encoder."""
        return self.target_encoder if self.target_mode == "ema" else self.context_encoder

    def targets(self, images: Tensor, target_idx: Tensor) -> Tensor:
        """Layer-normed (no affine) features of the full image, gathered per target block: [B, M, Kt, D]."""
        return self._targets_and_embeddings(images, target_idx)[0]

    def _targets_and_embeddings(self, images: Tensor, target_idx: Tensor) -> tuple[Tensor, Tensor]:
        """(targets [B, M, Kt, D], the full image's patch embeddings before the layer norm [B, N, D])."""
        b, m, kt = target_idx.shape
        if self.target_mode == "ema":
            with torch.no_grad():
                h = self.target_encoder(images)
        elif self.target_mode == "online_stopgrad":
            with torch.no_grad():
                h = self.context_encoder(images)
        else:
            h = self.context_encoder(images)
        normed = F.layer_norm(h, h.shape[-1:])
        return gather_tokens(normed, target_idx.reshape(b, m * kt)).reshape(b, m, kt, -1), h

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        images = _maybe_crop(batch.images, self.crop_scale, self.training)
        target, embeddings = self._targets_and_embeddings(images, batch.target_idx)
        context = self.context_encoder(images, batch.context_idx, batch.context_valid)  # [B, Kc, D]
        pred = self.predictor(
            context, batch.context_idx, batch.target_idx, batch.context_valid, target_valid=batch.target_valid
        )  # [B, M, Kt, D]
        valid = batch.target_valid
        if self.foreground_targets:  # [B, M, Kt]: True where the target patch shows part of the object
            b, m, kt = batch.target_idx.shape
            fg = foreground_patches(images, self.context_encoder.patch_size)
            fg = torch.gather(fg, 1, batch.target_idx.reshape(b, m * kt)).reshape(b, m, kt)
            valid = fg if valid is None else valid & fg
        loss = ijepa_loss(pred, target, self.loss_kind, valid)
        if not self.sigreg_weight:
            return loss, {"loss": loss.detach()}
        reg = sigreg(embeddings.reshape(-1, embeddings.shape[-1]).float(), slices=self.sigreg_slices)
        total = (1 - self.sigreg_weight) * loss + self.sigreg_weight * reg
        return total, {"loss": total.detach(), "prediction": loss.detach(), "sigreg": reg.detach()}

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """EMA step of the target encoder (only in 'ema' mode; the other modes use the online encoder)."""
        if self.target_mode == "ema":
            ema_update(self.target_encoder, self.context_encoder, momentum)


class MAE(nn.Module):
    """Masked autoencoder: encoder on the visible (context) patches, decoder predicts the per-patch normalised
    pixels of every target patch; loss on the target patches only.

    `per_block`: decode each target block in its own pass, as I-JEPA's predictor does (with multi-block masks
    this is I-JEPA with pixel targets). Otherwise every target patch is decoded in one joint pass, as MAE
    does; with overlapping target blocks a patch then appears once per block that covers it."""

    def __init__(
        self,
        encoder: ViTEncoder,
        decoder: PixelDecoder,
        *,
        norm_pix: bool = True,
        crop_scale: tuple[float, float] | None = None,
        per_block: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.norm_pix = norm_pix
        self.crop_scale = crop_scale
        self.per_block = per_block

    @property
    def eval_encoder(self) -> ViTEncoder:
        return self.encoder

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        images = _maybe_crop(batch.images, self.crop_scale, self.training)
        b, (m, kt) = images.shape[0], batch.target_idx.shape[1:]
        target_idx = batch.target_idx.reshape(b, -1)  # [B, M*Kt]
        pix = gather_tokens(patchify(images, self.encoder.patch_size), target_idx)  # [B, M*Kt, p*p*C]
        if self.norm_pix:
            pix = (pix - pix.mean(-1, keepdim=True)) / (
                pix.var(-1, keepdim=True, unbiased=False) + 1e-6
            ).sqrt()
        latent = self.encoder(images, batch.context_idx, batch.context_valid)
        tv = None if batch.target_valid is None else batch.target_valid.reshape(b, m * kt)
        if self.per_block:  # one pass per target block: [B, M, Kt, p*p*C]
            pred = self.decoder.forward_blocks(
                latent,
                batch.context_idx,
                batch.target_idx,
                batch.context_valid,
                target_valid=batch.target_valid,
            ).reshape(pix.shape)
        else:
            pred = self.decoder(latent, batch.context_idx, target_idx, batch.context_valid, target_valid=tv)
        loss = (
            F.mse_loss(pred, pix) if tv is None else masked_mean(F.mse_loss(pred, pix, reduction="none"), tv)
        )
        return loss, {"loss": loss.detach()}

    def update_target(self, momentum: float) -> None:
        """MAE has no target network."""


def info_nce(z1: Tensor, z2: Tensor, temperature: float = 0.2) -> Tensor:
    """Symmetric InfoNCE (NT-Xent): each view must pick its partner among the 2B-1 other embeddings."""
    z = F.normalize(torch.cat([z1, z2]), dim=-1)  # [2B, E]
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, partner)


class Invariant(nn.Module):
    """Invariant joint-embedding (SimCLR-like): embeddings of two augmentations of an image should agree
    and differ from other images'. It needs hand-crafted augmentations; the masks of the batch are unused."""

    def __init__(
        self,
        encoder: ViTEncoder,
        head: ProjectionHead,
        *,
        temperature: float = 0.2,
        crop_scale: tuple[float, float] = (0.3, 1.0),
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature {temperature} must be positive")
        self.encoder = encoder
        self.head = head
        self.temperature = temperature
        self.crop_scale = tuple(crop_scale)

    @property
    def eval_encoder(self) -> ViTEncoder:
        return self.encoder

    def embed(self, images: Tensor) -> Tensor:
        return self.head(self.encoder(images).mean(dim=1))

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        v1 = augment_views(batch.images, crop_scale=self.crop_scale)
        v2 = augment_views(batch.images, crop_scale=self.crop_scale)
        loss = info_nce(self.embed(v1), self.embed(v2), self.temperature)
        return loss, {"loss": loss.detach()}

    def update_target(self, momentum: float) -> None:
        """No target network: both views go through the same encoder."""


class LeJEPA(nn.Module):
    """LeJEPA (arXiv 2511.08544, Algorithm 2): `global_views` crops of `global_scale` and `local_views` of
    `local_scale` of each image (all resized to the encoder's size, flipped and jittered), one encoder and a
    projector; every view's embedding [B, K] predicts the mean of the global views' embeddings, and SIGReg
    keeps each view's embeddings an isotropic Gaussian (sigreg_weight 0: nothing does, and it collapses):

        loss = (1 - lambda) * mean_v ||mean_g z_g - z_v||^2 + lambda * mean_v SIGReg(z_v)

    No target network, no stop-gradient, no momentum schedule; the masks of the batch are unused."""

    def __init__(
        self,
        encoder: ViTEncoder,
        projector: ProjectionHead,
        *,
        views: tuple[int, int] = (2, 2),
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.1, 0.4),
        sigreg_weight: float = 0.05,
        sigreg_slices: int = 256,
    ) -> None:
        super().__init__()
        if any(v != int(v) for v in views) or views[0] < 1 or views[1] < 0 or not 0 <= sigreg_weight < 1:
            raise ValueError(f"views {views} need >= 1 global view; sigreg_weight {sigreg_weight} in [0, 1)")
        self.encoder, self.projector = encoder, projector
        self.views = tuple(int(v) for v in views)  # [global, local]
        self.global_scale, self.local_scale = tuple(global_scale), tuple(local_scale)
        self.sigreg_weight, self.sigreg_slices = sigreg_weight, sigreg_slices

    @property
    def eval_encoder(self) -> ViTEncoder:
        return self.encoder

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        n_global, n_local = self.views
        images = batch.images
        crops = [self.global_scale] * n_global + [self.local_scale] * n_local
        views = torch.cat([augment_views(images, crop_scale=scale) for scale in crops])  # [V*B, C, H, W]
        z = self.projector(self.encoder(views).mean(dim=1)).reshape(len(crops), len(images), -1)  # [V, B, K]
        prediction = (z[:n_global].mean(0) - z).square().mean()
        reg = torch.stack([sigreg(zv.float(), slices=self.sigreg_slices) for zv in z]).mean()
        loss = (1 - self.sigreg_weight) * prediction + self.sigreg_weight * reg
        return loss, {"loss": loss.detach(), "prediction": prediction.detach(), "sigreg": reg.detach()}

    def update_target(self, momentum: float) -> None:
        """No target network: SIGReg, not a teacher, prevents collapse."""


METHODS = {"ijepa": IJEPA, "mae": MAE, "invariant": Invariant, "lejepa": LeJEPA, "ijepa_sigreg": IJEPA}
