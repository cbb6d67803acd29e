"""Typed run configuration: dataclasses with the defaults of the CPU course run, packaged YAML files that
override them by name (`fmnist_vit_tiny`, ..., `in1k_vith14_ep300`), and dotted command-line overrides
(`optim.lr=5e-4 data.root=/datasets/imagenet`). A key that does not exist is an error, never ignored."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import registry

__all__ = [
    "Config",
    "DataConfig",
    "ModelConfig",
    "MaskConfig",
    "OptimConfig",
    "MethodConfig",
    "EvalConfig",
    "CONFIG_DIR",
    "list_configs",
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "check_config",
]

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class DataConfig:
    name: str = "fmnist"  # fmnist | shapes | cifar10 | stl10 | imagefolder
    root: str | None = None  # dataset folder; None searches the usual places (see data.py)
    image_size: int = 28  # fmnist 28 px -> a 7x7 grid of 4-px patches (32 pads to 8x8)
    # RandomResizedCrop scale of image folders' training split (the paper's only augmentation)
    crop_scale: tuple[float, float] = (0.3, 1.0)
    limit: int | None = None  # train on the first N images only
    num_workers: int = 0  # DataLoader worker processes (the mask collator runs inside them)
    # label-irrelevant background detail (jepa_lite.nuisance), in pretraining and probe images alike:
    nuisance: str = "none"  # none | noise (unpredictable) | stripes (predictable); fmnist only
    nuisance_strength: float = 0.0  # 0 (clean) .. 1: the detail's peak grey level, a fraction of white


@dataclass
class ModelConfig:
    name: str | None = None  # a timm ViT name (vit_huge_patch14_224 ...); None -> the explicit size below
    patch_size: int = 4
    embed_dim: int = 192
    depth: int = 4
    num_heads: int = 3
    predictor_dim: int = 96
    predictor_depth: int = 3
    predictor_heads: int = 4
    drop_path: float = 0.0
    grad_checkpointing: bool = False  # activation checkpointing, for ViT-H / ViT-g on small GPUs
    # depth_rescale (timm's: residual branches / sqrt(2*layer)) | official (every weight std 0.02)
    init: str = "depth_rescale"


@dataclass
class MaskConfig:
    strategy: str = "multiblock"  # multiblock | random | block | rasterized
    n_targets: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    min_context: int = 4
    target_ratio: float = 0.6  # random strategy (MAE uses 0.75)
    context_fill: str = "subsample"  # multiblock: subsample contexts to the batch's shortest | pad (keep all)
    # | fixed (the same Kc and Kt every step, for compiled steps; masks.fixed_lengths)
    context_length: int | None = None  # fixed: tokens per context (None: masks.fixed_lengths of the geometry)
    target_length: int | None = None  # fixed: tokens per target block (None: the largest block possible)


@dataclass
class OptimConfig:
    global_batch: int = 256  # the contract: per-device batch and accumulation are derived from the world size
    max_device_batch: int | None = None  # largest micro-batch per device; None -> global_batch / world_size
    epochs: float = 0.8
    max_steps: int | None = None  # cap on optimizer steps (quick runs, tests); schedules span the capped run
    warmup_epochs: float = 0.1
    lr: float = 1e-3
    start_lr: float = 2e-4
    final_lr: float = 1e-6
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    ema: tuple[float, float] = (0.996, 1.0)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = None


@dataclass
class MethodConfig:
    name: str = "ijepa"  # ijepa | mae | invariant
    loss: str = "smooth_l1"  # ijepa: smooth_l1 (official code) | l2 (paper text)
    target_mode: str = "ema"  # ijepa collapse lab: ema | online_stopgrad | online
    temperature: float = 0.2  # invariant
    norm_pix: bool = True  # mae
    # mae: joint (every target patch in one pass) | per_block (one pass per target block, as I-JEPA's
    # predictor: the pixel-target I-JEPA with multi-block masks)
    pixel_decode: str = "joint"
    crop_scale: tuple[float, float] | None = (
        None  # ijepa, mae: RandomResizedCrop in the step (fmnist, shapes)
    )


@dataclass
class EvalConfig:
    enabled: bool = True
    low_shot_per_class: int = 60  # 1% of Fashion-MNIST
    train_limit: int | None = None
    test_limit: int | None = None
    batch_size: int = 512


@dataclass
class Config:
    name: str = "fmnist_vit_tiny"
    seed: int = 0
    mixed_precision: str = "auto"  # auto (bf16 on CUDA, none on CPU) | no | bf16 | fp16
    compile: bool = False
    out_dir: str = "runs"
    log_every: int = 10
    ckpt_every: int = 0  # optimizer steps between checkpoints; 0 -> only at the end
    keep_last: int = 2
    dist_timeout: int = 600  # seconds a collective waits for a lost process before the run stops
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def list_configs() -> list[str]:
    """Names of the packaged configs."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples as lists), ready for YAML or JSON."""
    out = dataclasses.asdict(cfg)

    def fix(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return list(v) if isinstance(v, tuple) else v

    return fix(out)


def _coerce(value: Any, hint: str, key: str) -> Any:
    """Bring a YAML-parsed value to the field's declared type (hint is a string under postponed
    annotations)."""
    if value is None:
        if "None" not in hint:
            raise ValueError(f"config key {key!r} cannot be null (type {hint})")
        return None
    base = hint.replace(" | None", "")
    try:
        if base.startswith("tuple"):
            if isinstance(value, str):
                value = yaml.safe_load(value)
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise ValueError
            return tuple(float(v) for v in value)
        if base == "bool":
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            if not isinstance(value, bool):
                raise ValueError
            return value
        if base == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base == "float":
            return float(value)
        if base == "str":
            return str(value)
    except (ValueError, TypeError):
        raise ValueError(f"config key {key!r} expects {hint}, got {value!r}") from None
    return value


def _set_field(obj: Any, path: list[str], value: Any, full_key: str, raw: str | None = None) -> None:
    names = [f.name for f in dataclasses.fields(obj)]
    head = path[0]
    if head not in names:
        close = difflib.get_close_matches(head, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys: {', '.join(names)}"
        raise ValueError(f"unknown config key {full_key!r}{hint}")
    current = getattr(obj, head)
    if dataclasses.is_dataclass(current):
        if len(path) == 1:
            if not isinstance(value, dict):
                raise ValueError(
                    f"config key {full_key!r} is a section; set its fields, e.g. {full_key}.<key>=..."
                )
            for k, v in value.items():
                _set_field(current, [k], v, f"{full_key}.{k}")
        else:
            _set_field(current, path[1:], value, full_key, raw)
        return
    if len(path) > 1:
        raise ValueError(f"config key {full_key!r}: {head!r} is a value, not a section")
    hint = {f.name: str(f.type) for f in dataclasses.fields(obj)}[head]
    if raw is not None and hint.startswith("str") and raw.lower() not in ("null", "none", "~"):
        value = raw  # a string field keeps the text as typed: `mixed_precision=no` is 'no', not YAML's False
    setattr(obj, head, _coerce(value, hint, full_key))


def config_from_dict(d: dict, base: Config | None = None) -> Config:
    """Overlay a nested dict on `base` (defaults if None), checking every key and type."""
    cfg = base if base is not None else Config()
    for k, v in d.items():
        _set_field(cfg, [k], v, k)
    return cfg


def apply_overrides(cfg: Config, overrides: typing.Sequence[str]) -> Config:
    """Apply `section.key=value` strings; values are parsed as YAML (numbers, lists, null, true/false)."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value (e.g. optim.lr=5e-4)")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else None
        _set_field(cfg, key.strip().split("."), value, key.strip(), raw)
    return cfg


def load_config(name_or_path: str | Path = "fmnist_vit_tiny", overrides: typing.Sequence[str] = ()) -> Config:
    """A packaged config by name, or a YAML file by path, on top of the defaults, then dotted overrides."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(
            f"config {str(name_or_path)!r} not found: not a file, and not one of {list_configs()}"
        )
    d = yaml.safe_load(path.read_text()) or {}
    if not isinstance(d, dict):
        raise ValueError(f"config file {path} must hold a mapping at top level")
    d.setdefault("name", path.stem)
    cfg = config_from_dict(d)
    return apply_overrides(cfg, overrides)


# Valid names (jepa_lite.registry), checked before any data is read (the modules that use them check again,
# for direct callers).
CHOICES = {
    "mixed_precision": registry.PRECISIONS,
    "data.name": registry.DATASETS,
    "method.name": registry.METHODS,
    "method.loss": registry.LOSSES,
    "method.target_mode": registry.TARGET_MODES,
    "method.pixel_decode": registry.PIXEL_DECODES,
    "mask.strategy": registry.MASK_STRATEGIES,
    "mask.context_fill": registry.CONTEXT_FILLS,
    "model.init": registry.INITS,
}
# key: (lowest, highest, lowest is allowed); None values pass (the key's type says when None is allowed)
RANGES = {
    "seed": (0, None, True),
    "log_every": (1, None, True),
    "ckpt_every": (0, None, True),
    "keep_last": (0, None, True),
    "dist_timeout": (1, None, True),
    "data.image_size": (1, None, True),
    "data.limit": (1, None, True),
    "data.num_workers": (0, None, True),
    "model.patch_size": (1, None, True),
    "model.embed_dim": (1, None, True),
    "model.depth": (1, None, True),
    "model.num_heads": (1, None, True),
    "model.predictor_dim": (1, None, True),
    "model.predictor_depth": (1, None, True),
    "model.predictor_heads": (1, None, True),
    "model.drop_path": (0, 1, True),
    "mask.n_targets": (1, None, True),
    "mask.min_context": (1, None, True),
    "mask.target_ratio": (0, 1, False),
    "optim.global_batch": (1, None, True),
    "optim.max_device_batch": (1, None, True),
    "optim.epochs": (0, None, False),
    "optim.max_steps": (1, None, True),
    "optim.warmup_epochs": (0, None, True),
    "optim.lr": (0, None, False),
    "optim.start_lr": (0, None, True),
    "optim.final_lr": (0, None, True),
    "optim.weight_decay": (0, None, True),
    "optim.final_weight_decay": (0, None, True),
    "optim.grad_clip": (0, None, False),
    "method.temperature": (0, None, False),
    "eval.low_shot_per_class": (1, None, True),
    "eval.train_limit": (1, None, True),
    "eval.test_limit": (1, None, True),
    "eval.batch_size": (1, None, True),
}
# (min, max) pairs: (lowest, highest) of both ends
PAIRS = {
    "data.crop_scale": (0, 1),
    "mask.target_scale": (0, 1),
    "mask.context_scale": (0, 1),
    "mask.target_aspect": (0, None),
    "optim.ema": (0, 1),
    "optim.betas": (0, 1),
    "method.crop_scale": (0, 1),
}


def _get(cfg: Config, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def check_config(cfg: Config) -> Config:
    """Raise ValueError naming the first key whose value is out of range or not a valid name; return cfg.

    Runs in milliseconds, before any data or model is built. Geometry that needs the grid (mask blocks,
    patch size against image size) is checked where it is known: masks.py and models.py."""
    for key, valid in CHOICES.items():
        if _get(cfg, key) not in valid:
            raise ValueError(f"{key}={_get(cfg, key)!r} is not one of {', '.join(valid)}")
    for key, (lo, hi, closed) in RANGES.items():
        v = _get(cfg, key)
        if v is None:
            continue
        if not (v >= lo if closed else v > lo) or (hi is not None and v > hi) or v != v:
            left, right = "[" if closed else "(", "]" if hi is not None else ")"
            span = f"{left}{lo}, {hi if hi is not None else 'inf'}{right}"
            raise ValueError(f"{key}={v!r} must lie in {span}")
    for key, (lo, hi) in PAIRS.items():
        if _get(cfg, key) is None:
            continue
        a, b = _get(cfg, key)
        inside = lo < a <= b and (hi is None or b <= hi)
        if key == "optim.betas":
            inside = 0 <= a < 1 and 0 <= b < 1
        elif key == "optim.ema":
            inside = 0 <= a <= b <= 1
        if not inside:
            valid = (
                "0 <= each < 1"
                if key == "optim.betas"
                else f"{lo} < min <= max" + (f" <= {hi}" if hi else "")
            )
            raise ValueError(f"{key}={[a, b]} must be a (min, max) pair with {valid}")
    mk = cfg.mask
    if mk.context_fill != "subsample" and mk.strategy != "multiblock":
        raise ValueError(
            f"mask.context_fill={mk.context_fill} applies to mask.strategy=multiblock only (the others need "
            "no padding: their shapes never change)"
        )
    for key in ("context_length", "target_length"):
        value = getattr(mk, key)
        if value is not None and mk.context_fill != "fixed":
            raise ValueError(f"mask.{key}={value} applies to mask.context_fill=fixed only")
        if value is not None and value < 1:
            raise ValueError(f"mask.{key}={value} must be at least 1 (or null: derived from the geometry)")
    if cfg.data.nuisance != "none" or cfg.data.nuisance_strength != 0:
        d, KINDS = cfg.data, registry.NUISANCE_KINDS
        if d.nuisance == "none":
            raise ValueError(
                f"data.nuisance_strength={d.nuisance_strength!r} needs data.nuisance={' or '.join(KINDS)}"
            )
        if d.nuisance not in KINDS:
            raise ValueError(f"data.nuisance={d.nuisance!r} is not one of none, {', '.join(KINDS)}")
        if not 0 < d.nuisance_strength <= 1:
            raise ValueError(
                f"data.nuisance_strength={d.nuisance_strength!r} must lie in (0, 1] with a nuisance"
            )
        if d.name != "fmnist":
            raise ValueError(f"data.nuisance is drawn on Fashion-MNIST's black background, not on {d.name}")
    if cfg.method.crop_scale is not None:
        if cfg.method.name == "invariant":
            raise ValueError(
                "method.crop_scale is for ijepa and mae; the invariant method crops its two views itself"
            )
        if cfg.data.name not in ("fmnist", "shapes"):
            raise ValueError(
                f"method.crop_scale would crop {cfg.data.name} a second time: its loader already crops "
                "(data.crop_scale); set method.crop_scale=null"
            )
    m = cfg.model
    if m.name is None and m.embed_dim % m.num_heads:
        raise ValueError(f"model.embed_dim={m.embed_dim} must be divisible by model.num_heads={m.num_heads}")
    if m.predictor_dim % m.predictor_heads:
        raise ValueError(
            f"model.predictor_dim={m.predictor_dim} must be divisible by "
            f"model.predictor_heads={m.predictor_heads}"
        )
    if m.name is None and cfg.data.image_size % m.patch_size:
        raise ValueError(
            f"data.image_size={cfg.data.image_size} must be divisible by model.patch_size={m.patch_size}"
        )
    return cfg
