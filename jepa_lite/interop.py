"""Checkpoint interoperability: the official I-JEPA `.pth.tar` files, Hugging Face `IJepaModel`, and runs.

Three formats hold the same ViT, key for key:

* official (facebookresearch/ijepa): `torch.save` of a dict with `encoder`, `predictor`, `target_encoder`
  (state dicts whose keys start with `module.`), plus `opt`, `scaler`, `epoch`, `loss`, `lr`, ... Our
  ViTEncoder and Predictor use the official key names, so the mapping is one to one. Read with
  `torch.load(..., weights_only=True)` only: no arbitrary object is ever unpickled.
* Hugging Face (`transformers.IJepaModel`, e.g. facebook/ijepa_vith14_1k): `config.json` + safetensors.
  Facts (transformers 5.x, checked in tests/test_interop.py): no class token; positions are a learned
  `embeddings.position_embeddings [1, N, D]`; separate q/k/v/o projections (our `attn.qkv` is their
  concatenation in q, k, v order); the final `layernorm` IS applied to `last_hidden_state`; `layer_norm_eps`
  defaults to 1e-12 in IJepaConfig (ours and the official code use 1e-6: `load_hf` copies the config's eps
  onto our LayerNorms, `export_hf` writes ours). Hub files use the 4.x key layout (`encoder.layer.i.
  attention.attention.query`, ...), which transformers 5 renames on load; both layouts are read here, and
  `export_hf` writes the Hub's 4.x layout (loading it in transformers 5 is tested; 4.x is not). HF converted the *context*
  encoder, while the paper evaluates the *target* encoder.
* a jepa_lite run folder (scripts/pretrain.py): `target_encoder.safetensors`, `encoder.safetensors`
  (context) and `config.json`.

Heads are not stored in any weight shape. `infer_num_heads(dim)` uses the official sizes (192: 3, 384: 6,
768: 12, 1024: 16, 1280 (ViT-H): 16, 1408 (ViT-g): 16) and otherwise dim // 64; pass `num_heads=` to
override. The official predictor uses the encoder's head count.

Probing the official ViT-H/14 (IN-1k, 300 epochs) when you have the file (it includes the optimizer state):

    python scripts/evaluate.py /path/to/IN1K-vit.h.14-300e.pth.tar --which target \\
        --dataset imagefolder --data /path/to/imagenet_subset --image-size 224 \\
        --train-limit 10000 --test-limit 2000 --json vith14.json

`--which context` probes the context encoder instead (what HF ships). For small datasets
(`--dataset cifar10 --image-size 224`, or `fmnist`, whose grey images are repeated to 3 channels) the
dataset brings images to --image-size (resize for natural images, centred padding for fmnist), and the
16x16 positional grid is interpolated by `resize_pos_embed` when the image size differs from 224. A Hugging Face directory (`save_pretrained` output) works the same way as PATH.
ViT-H (631M parameters) is slow on CPU: use a GPU (picked automatically) or small limits.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .models import Predictor, ViTEncoder

__all__ = [
    "infer_num_heads",
    "official_encoder_from_state",
    "load_official",
    "official_state",
    "export_official",
    "hf_to_jepa_state",
    "jepa_to_hf_state",
    "load_hf",
    "export_hf",
    "resize_pos_embed",
    "set_image_size_",
    "load_encoder",
]

WHICH = {"target": "target_encoder", "context": "encoder"}
PREFIX = "module."
_OFFICIAL_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}


# ----------------------------------------------------------------------------------------------- helpers


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


# ----------------------------------------------------------------------------------------------- official


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
        return {PREFIX + k: v.detach() if v.is_meta else v.detach().to("cpu").clone()
                for k, v in m.state_dict().items()}  # fmt: skip

    meta = dict(opt=None, scaler=None, epoch=0, loss=float("nan"), batch_size=0, world_size=1, lr=0.0)
    meta.update(extra)
    return dict(encoder=prefixed(encoder), predictor=prefixed(predictor),
                target_encoder=prefixed(target_encoder), **meta)  # fmt: skip


def export_official(
    encoder: ViTEncoder, predictor: Predictor, target_encoder: ViTEncoder, path: str | Path, **extra
) -> Path:
    """Write a checkpoint in the official `.pth.tar` layout (no optimizer state: `opt`/`scaler` are None)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(official_state(encoder, predictor, target_encoder, **extra), path)
    return path


# ----------------------------------------------------------------------------------------------- Hugging Face

_HF_LEGACY = [  # transformers 4.x layout (the Hub files) -> the 5.x layout of IJepaModel.state_dict()
    (r"^ijepa\.", ""),
    (r"^encoder\.layer\.", "layers."),
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
]


def _hf_modern(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for k, v in state.items():
        for pat, rep in _HF_LEGACY:
            k = re.sub(pat, rep, k)
        out[k] = v
    return out


def hf_to_jepa_state(hf_state: Mapping[str, Tensor], depth: int) -> dict[str, Tensor]:
    """IJepaModel state dict (4.x or 5.x key layout) -> ViTEncoder state dict; q, k, v are concatenated.
    Raises ValueError on a missing or unused key (a pooler is ignored)."""
    s = {k: v for k, v in _hf_modern(hf_state).items() if not k.startswith("pooler.")}
    used: set[str] = set()

    def take(key: str) -> Tensor:
        used.add(key)
        return _need(s, key, "Hugging Face IJepaModel")

    out = {"pos_embed": take("embeddings.position_embeddings")}
    for p in ("weight", "bias"):
        out[f"patch_embed.proj.{p}"] = take(f"embeddings.patch_embeddings.projection.{p}")
        for i in range(depth):
            h, o = f"layers.{i}.", f"blocks.{i}."
            out[o + f"norm1.{p}"] = take(h + f"layernorm_before.{p}")
            qkv = [take(h + f"attention.{n}_proj.{p}") for n in "qkv"]
            out[o + f"attn.qkv.{p}"] = torch.cat(qkv, 0)
            out[o + f"attn.proj.{p}"] = take(h + f"attention.o_proj.{p}")
            out[o + f"norm2.{p}"] = take(h + f"layernorm_after.{p}")
            out[o + f"mlp.fc1.{p}"] = take(h + f"mlp.fc1.{p}")
            out[o + f"mlp.fc2.{p}"] = take(h + f"mlp.fc2.{p}")
        out[f"norm.{p}"] = take(f"layernorm.{p}")
    extra = sorted(set(s) - used)
    if extra:
        raise ValueError(f"Hugging Face IJepaModel: unexpected key {extra[0]!r} (config depth {depth})")
    return out


def jepa_to_hf_state(encoder: ViTEncoder) -> dict[str, Tensor]:
    """ViTEncoder -> IJepaModel state dict in the transformers 4.x layout of the Hub files."""
    s = {k: v.detach().to("cpu") for k, v in encoder.state_dict().items()}
    out = {"embeddings.position_embeddings": s["pos_embed"]}
    for p in ("weight", "bias"):
        out[f"embeddings.patch_embeddings.projection.{p}"] = s[f"patch_embed.proj.{p}"]
        for i in range(len(encoder.blocks)):
            h, o = f"encoder.layer.{i}.", f"blocks.{i}."
            out[h + f"layernorm_before.{p}"] = s[o + f"norm1.{p}"]
            for name, t in zip(("query", "key", "value"), s[o + f"attn.qkv.{p}"].chunk(3, 0)):
                out[h + f"attention.attention.{name}.{p}"] = t
            out[h + f"attention.output.dense.{p}"] = s[o + f"attn.proj.{p}"]
            out[h + f"layernorm_after.{p}"] = s[o + f"norm2.{p}"]
            out[h + f"intermediate.dense.{p}"] = s[o + f"mlp.fc1.{p}"]
            out[h + f"output.dense.{p}"] = s[o + f"mlp.fc2.{p}"]
        out[f"layernorm.{p}"] = s[f"norm.{p}"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def _set_layernorm_eps_(module: nn.Module, eps: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.LayerNorm):
            m.eps = eps


def _read_hf_dir(folder: Path) -> tuple[dict, dict[str, Tensor]]:
    cfg = json.loads((folder / "config.json").read_text())
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"{folder} has no model.safetensors (pytorch_model.bin is not read: pickle)")
    state: dict[str, Tensor] = {}
    for name in files:
        state.update(load_file(str(folder / name)))
    return cfg, state


def load_hf(dir_or_model) -> ViTEncoder:
    """A Hugging Face IJepaModel (object, or a directory with config.json + safetensors) -> ViTEncoder.

    Reading a directory needs no transformers install. Our LayerNorms take the config's `layer_norm_eps`."""
    if isinstance(dir_or_model, (str, Path)):
        folder = Path(dir_or_model)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} is not a Hugging Face model directory (no config.json)")
        cfg, state = _read_hf_dir(folder)
    else:
        cfg, state = dir_or_model.config.to_dict(), dir_or_model.state_dict()
    if cfg.get("model_type") not in (None, "ijepa"):
        raise ValueError(f"model_type {cfg.get('model_type')!r} is not 'ijepa'")
    if cfg.get("hidden_act", "gelu") != "gelu" or not cfg.get("qkv_bias", True):
        raise ValueError(
            f"unsupported IJepaConfig: hidden_act={cfg.get('hidden_act')!r}, qkv_bias={cfg.get('qkv_bias')}"
        )
    size = cfg["image_size"]
    size = size[0] if isinstance(size, (list, tuple)) else size
    dim, depth = cfg["hidden_size"], cfg["num_hidden_layers"]
    enc = ViTEncoder(
        img_size=size, patch_size=cfg["patch_size"], in_chans=cfg.get("num_channels", 3), embed_dim=dim,
        depth=depth, num_heads=cfg["num_attention_heads"], mlp_ratio=cfg["intermediate_size"] / dim,
    )  # fmt: skip
    _load_strict(enc, hf_to_jepa_state(state, depth), "Hugging Face IJepaModel")
    _set_layernorm_eps_(enc, cfg.get("layer_norm_eps", 1e-12))
    return enc


def export_hf(encoder: ViTEncoder, folder: str | Path) -> Path:
    """Write config.json + model.safetensors that `transformers.IJepaModel.from_pretrained(folder)` loads."""
    if encoder.grid[0] != encoder.grid[1]:
        raise ValueError(f"IJepaModel needs a square grid; encoder grid is {encoder.grid}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    block = encoder.blocks[0]
    cfg = {
        "architectures": ["IJepaModel"],
        "model_type": "ijepa",
        "hidden_size": encoder.embed_dim,
        "num_hidden_layers": len(encoder.blocks),
        "num_attention_heads": encoder.num_heads,
        "intermediate_size": block.mlp.fc1.out_features,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": encoder.norm.eps,
        "image_size": encoder.grid[0] * encoder.patch_size,
        "patch_size": encoder.patch_size,
        "num_channels": encoder.in_chans,
        "qkv_bias": True,
        "torch_dtype": "float32",
    }
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file(jepa_to_hf_state(encoder), str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


# ----------------------------------------------------------------------------------------------- resolution


def resize_pos_embed(pos: Tensor, old_grid, new_grid, mode: str = "bicubic") -> Tensor:
    """Interpolate 2-D positions (no class token) [1, Ho*Wo, D] or [Ho*Wo, D] -> same rank with Hn*Wn rows."""
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
    d = x.shape[-1]
    grid = x.reshape(1, old[0], old[1], d).permute(0, 3, 1, 2).float()  # [1, D, Ho, Wo]
    grid = F.interpolate(grid, size=new, mode=mode, align_corners=False)
    out = grid.permute(0, 2, 3, 1).reshape(1, new[0] * new[1], d).to(pos.dtype)
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


# ----------------------------------------------------------------------------------------------- any format


def load_encoder(path: str | Path, which: str = "target", *, num_heads: int | None = None) -> ViTEncoder:
    """A ViTEncoder from a jepa_lite run folder, an official `.pth.tar`, or a Hugging Face directory.

    `which` picks target or context encoder (a Hugging Face directory holds one encoder only)."""
    section = _check_which(which)
    path = Path(path)
    if path.is_file():
        return load_official(path, which, num_heads=num_heads)[0]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a file nor a folder")
    cfg_file = path / "config.json"
    cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    if cfg.get("model_type") == "ijepa":
        return load_hf(path)
    weights = path / f"{section}.safetensors"
    if cfg and weights.is_file():
        from .checkpoint import load_weights
        from .config import config_from_dict
        from .train import build_encoder

        state = load_file(str(weights))
        enc = build_encoder(config_from_dict(cfg), in_chans=state["patch_embed.proj.weight"].shape[1])
        return load_weights(enc, weights)
    raise FileNotFoundError(
        f"{path}: expected a jepa_lite run folder (config.json + {section}.safetensors), a Hugging Face "
        "directory (config.json with model_type 'ijepa' + model.safetensors), or an official .pth.tar file"
    )
