"""Checkpoint interoperability: the official I-JEPA `.pth.tar` files (official.py), Hugging Face `IJepaModel`
(hf.py), and runs; `load_encoder` reads any of the three.

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
  `export_hf` writes the Hub's 4.x layout (loading it in transformers 5 is tested; 4.x is not). HF converted
  the *context* encoder, while the paper evaluates the *target* encoder.
* a jepa_lite run folder (scripts/pretrain.py): `target_encoder.safetensors`, `encoder.safetensors`
  (context) and `config.json`.

Heads are not stored in any weight shape. `infer_num_heads(dim)` uses the official sizes (192: 3, 384: 6,
768: 12, 1024: 16, 1280 (ViT-H): 16, 1408 (ViT-g): 16) and otherwise dim // 64; pass `num_heads=` to
override. The official predictor uses the encoder's head count.

Probing the official ViT-H/14 (IN-1k, 300 epochs) when you have the file (it includes the optimizer state):

    python scripts/evaluate.py /path/to/IN1K-vit.h.14-300e.pth.tar --which target \\
        --dataset imagefolder --data /path/to/imagenet_subset --image-size 224 \\
        --train-limit 10000 --test-limit 2000 --json vith14.json

`--which context` probes the context encoder instead (what HF ships). For small datasets (`--dataset cifar10
--image-size 224`, or `fmnist`, whose grey images are repeated to 3 channels) the dataset brings images to
--image-size (resize for natural images, centred padding for fmnist), and the 16x16 positional grid is
interpolated by `resize_pos_embed` when the image size differs from 224. A Hugging Face directory
(`save_pretrained` output) works the same way as PATH. ViT-H (631M parameters) is slow on CPU: use a GPU
(picked automatically) or small limits.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from ..core.build import build_encoder
from ..core.config import config_from_dict
from ..core.models import ViTEncoder
from ..core.weights import load_weights
from .common import _check_which, infer_num_heads, resize_pos_embed, set_image_size_
from .hf import export_hf, hf_to_jepa_state, jepa_to_hf_state, load_hf
from .official import export_official, load_official, official_encoder_from_state, official_state

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
        state = load_file(str(weights))
        enc = build_encoder(config_from_dict(cfg), in_chans=state["patch_embed.proj.weight"].shape[1])
        return load_weights(enc, weights)
    raise FileNotFoundError(
        f"{path}: expected a jepa_lite run folder (config.json + {section}.safetensors), a Hugging Face "
        "directory (config.json with model_type 'ijepa' + model.safetensors), or an official .pth.tar file"
    )
