"""The official I-JEPA checkpoints (facebookresearch/ijepa `.pth.tar`): encoder, predictor and target encoder,
key for key, read with `weights_only=True`."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from ..core.models import Predictor, ViTEncoder
from .common import (
    PREFIX,
    _build_on,
    _check_which,
    _depth,
    _load_strict,
    _need,
    _square_grid,
    _strip_prefix,
    infer_num_heads,
)


def official_encoder_from_state(state: Mapping[str, Tensor], *, num_heads: int | None = None) -> ViTEncoder:
    """An (untrained) ViTEncoder with the architecture of an official encoder state dict (no `module.`).

    Inferred: embed dim, in_chans and patch size from `patch_embed.proj.weight [D, C, p, p]`, the square grid
    from `pos_embed [1, N, D]`, depth from `blocks.i`, mlp ratio from `blocks.0.mlp.fc1`, heads by
    `infer_num_heads` unless given. Built on the device of the tensors (meta stays meta)."""
    w = _need(state, "patch_embed.proj.weight", "encoder")
    dim, in_chans, patch = w.shape[0], w.shape[1], w.shape[2]
    side = _square_grid(_need(state, "pos_embed", "encoder").shape[1], "pos_embed")
    depth = _depth(state, "blocks")
    if depth == 0:
        raise ValueError("encoder: missing key 'blocks.0.norm1.weight' (no transformer blocks)")
    mlp_ratio = _need(state, "blocks.0.mlp.fc1.weight", "encoder").shape[0] / dim
    heads = num_heads or infer_num_heads(dim)
    kw = dict(img_size=side * patch, patch_size=patch, in_chans=in_chans, embed_dim=dim, depth=depth)
    return _build_on(w.device, lambda: ViTEncoder(**kw, num_heads=heads, mlp_ratio=mlp_ratio))


def _predictor_from_state(state: Mapping[str, Tensor], grid: tuple[int, int], num_heads: int) -> Predictor:
    w = _need(state, "predictor_embed.weight", "predictor")
    pdim, dim = w.shape
    depth = _depth(state, "predictor_blocks")
    mlp_ratio = _need(state, "predictor_blocks.0.mlp.fc1.weight", "predictor").shape[0] / pdim
    out_dim = _need(state, "predictor_proj.weight", "predictor").shape[0]
    kw = dict(predictor_dim=pdim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, out_dim=out_dim)
    return _build_on(w.device, lambda: Predictor(grid, dim, **kw))


def _read_official(path_or_state: str | Path | Mapping) -> Mapping:
    if isinstance(path_or_state, Mapping):
        return path_or_state
    path = Path(path_or_state)
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if "GLOBAL" in ln] or [type(err).__name__]
        raise ValueError(
            f"refusing to load {path}: it holds objects other than tensors and plain containers, which "
            f"weights_only=True does not unpickle (a genuine I-JEPA checkpoint never does): {lines[0]}"
        ) from None
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{path} holds a {type(ckpt).__name__}, not an I-JEPA checkpoint dict")
    return ckpt


def load_official(
    path_or_state: str | Path | Mapping,
    which: str = "target",
    *,
    encoder: ViTEncoder | None = None,
    predictor: Predictor | None = None,
    num_heads: int | None = None,
) -> tuple[ViTEncoder, Predictor | None]:
    """Official `.pth.tar` (or its loaded dict) -> (target or context ViTEncoder, Predictor), loaded strictly.

    Modules are built from the shapes unless given (see `official_encoder_from_state`); the predictor is None
    when the checkpoint has none. Raises ValueError naming the first missing/unexpected/mismatched key."""
    section = _check_which(which)
    ckpt = _read_official(path_or_state)
    if section not in ckpt:
        raise ValueError(f"checkpoint has no {section!r} entry (keys: {sorted(ckpt)}); which={which!r}")
    enc_state = _strip_prefix(ckpt[section], section)
    if encoder is None:
        encoder = official_encoder_from_state(enc_state, num_heads=num_heads)
    _load_strict(encoder, enc_state, section)
    if "predictor" not in ckpt and predictor is None:
        return encoder, None
    pred_state = _strip_prefix(_need(ckpt, "predictor", "checkpoint"), "predictor")
    if predictor is None:
        predictor = _predictor_from_state(pred_state, encoder.grid, num_heads or encoder.num_heads)
    _load_strict(predictor, pred_state, "predictor")
    return encoder, predictor


def official_state(encoder: ViTEncoder, predictor: Predictor, target_encoder: ViTEncoder, **extra) -> dict:
    """The official checkpoint dict: `module.`-prefixed CPU copies of the three state dicts plus `extra`
    (meta tensors stay meta, for shape checks of huge models)."""

    def prefixed(m: nn.Module) -> dict[str, Tensor]:
        return {
            PREFIX + k: v.detach() if v.is_meta else v.detach().to("cpu").clone()
            for k, v in m.state_dict().items()
        }

    meta = dict(opt=None, scaler=None, epoch=0, loss=float("nan"), batch_size=0, world_size=1, lr=0.0)
    meta.update(extra)
    return dict(
        encoder=prefixed(encoder),
        predictor=prefixed(predictor),
        target_encoder=prefixed(target_encoder),
        **meta,
    )


def export_official(
    encoder: ViTEncoder, predictor: Predictor, target_encoder: ViTEncoder, path: str | Path, **extra
) -> Path:
    """Write a checkpoint in the official `.pth.tar` layout (no optimizer state: `opt`/`scaler` are None)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(official_state(encoder, predictor, target_encoder, **extra), path)
    return path
