"""Hugging Face `transformers.IJepaModel`: its state dict (4.x and 5.x key layouts) to ours and back, and
`save_pretrained`-style folders."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..core.models import ViTEncoder
from .common import _load_strict, _need

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
        img_size=size,
        patch_size=cfg["patch_size"],
        in_chans=cfg.get("num_channels", 3),
        embed_dim=dim,
        depth=depth,
        num_heads=cfg["num_attention_heads"],
        mlp_ratio=cfg["intermediate_size"] / dim,
    )
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
