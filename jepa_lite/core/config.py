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

from .. import registry

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

CONFIG_DIR = Path(__file__).parents[1] / "configs"


# Each field's valid values sit beside it (dataclass metadata), and `check_config` reads them:
#   one_of(default, names)               a name from a registry
#   at_least(default, lo[, hi])          lo <= value (<= hi); None passes where the type allows it
#   above(default, lo[, hi])             lo < value (<= hi)
#   min_max(default, lo[, hi])           a (min, max) pair with lo < min <= max (<= hi)


def one_of(default: Any, names: typing.Sequence[str]) -> Any:
    return field(default=default, metadata={"one_of": tuple(names)})


def at_least(default: Any, lo: float, hi: float | None = None) -> Any:
    return field(default=default, metadata={"range": (lo, hi, True)})


def above(default: Any, lo: float, hi: float | None = None) -> Any:
    return field(default=default, metadata={"range": (lo, hi, False)})


def min_max(default: Any, lo: float = 0, hi: float | None = 1) -> Any:
    return field(default=default, metadata={"pair": (lo, hi)})


@dataclass
class DataConfig:
    name: str = one_of("fmnist", registry.DATASETS)
    root: str | None = None  # dataset folder; None searches the usual places (see fashion_mnist.py)
    image_size: int = at_least(28, 1)  # fmnist 28 px -> a 7x7 grid of 4-px patches (32 pads to 8x8)
    # RandomResizedCrop scale of image folders' training split (the paper's only augmentation)
    crop_scale: tuple[float, float] = min_max((0.3, 1.0))
    limit: int | None = at_least(None, 1)  # train on the first N images only
    num_workers: int = at_least(0, 0)  # DataLoader worker processes (the mask collator runs inside them)
    # label-irrelevant background detail (jepa_lite.data.nuisance), in pretraining and probe images alike:
    # none | noise (unpredictable) | stripes (predictable); fmnist only
    nuisance: str = one_of("none", ("none", *registry.NUISANCE_KINDS))
    nuisance_strength: float = 0.0  # 0 (clean) .. 1: the detail's peak grey level, a fraction of white


@dataclass
class ModelConfig:
    name: str | None = None  # a timm ViT name (vit_huge_patch14_224 ...); None -> the explicit size below
    patch_size: int = at_least(4, 1)
    embed_dim: int = at_least(192, 1)
    depth: int = at_least(4, 1)
    num_heads: int = at_least(3, 1)
    predictor_dim: int = at_least(96, 1)
    predictor_depth: int = at_least(3, 1)
    predictor_heads: int = at_least(4, 1)
    drop_path: float = at_least(0.0, 0, 1)
    grad_checkpointing: bool = False  # activation checkpointing, for ViT-H / ViT-g on small GPUs
    # depth_rescale (timm's: residual branches / sqrt(2*layer)) | official (every weight std 0.02)
    init: str = one_of("depth_rescale", registry.INITS)


@dataclass
class MaskConfig:
    strategy: str = one_of("multiblock", registry.MASK_STRATEGIES)
    n_targets: int = at_least(4, 1)
    target_scale: tuple[float, float] = min_max((0.15, 0.2))
    target_aspect: tuple[float, float] = min_max((0.75, 1.5), 0, None)
    context_scale: tuple[float, float] = min_max((0.85, 1.0))
    min_context: int = at_least(4, 1)
    target_ratio: float = above(0.6, 0, 1)  # random strategy (MAE uses 0.75)
    # multiblock: subsample contexts to the batch's shortest | pad (keep all) | fixed (the same Kc and Kt
    # every step, for compiled steps; masks.fixed_lengths)
    context_fill: str = one_of("subsample", registry.CONTEXT_FILLS)
    context_length: int | None = None  # fixed: tokens per context (None: masks.fixed_lengths of the geometry)
    target_length: int | None = None  # fixed: tokens per target block (None: the largest block possible)


@dataclass
class OptimConfig:
    # the contract: per-device batch and accumulation are derived from the world size
    global_batch: int = at_least(256, 1)
    # largest micro-batch per device; None -> global_batch / world_size
    max_device_batch: int | None = at_least(None, 1)
    epochs: float = above(0.8, 0)
    # cap on optimizer steps (quick runs, tests); the schedules span the capped run
    max_steps: int | None = at_least(None, 1)
    warmup_epochs: float = at_least(0.1, 0)
    lr: float = above(1e-3, 0)
    start_lr: float = at_least(2e-4, 0)
    final_lr: float = at_least(1e-6, 0)
    weight_decay: float = at_least(0.04, 0)
    final_weight_decay: float = at_least(0.4, 0)
    ema: tuple[float, float] = field(default=(0.996, 1.0), metadata={"pair": (0, 1), "allow_equal_low": True})
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={"betas": True})
    grad_clip: float | None = above(None, 0)


@dataclass
class MethodConfig:
    name: str = one_of("ijepa", registry.METHODS)
    loss: str = one_of("smooth_l1", registry.LOSSES)  # ijepa: smooth_l1 (official code) | l2 (paper text)
    target_mode: str = one_of(
        "ema", registry.TARGET_MODES
    )  # ijepa collapse lab: ema | online_stopgrad | online
    temperature: float = above(0.2, 0)  # invariant
    norm_pix: bool = True  # mae
    # mae: joint (every target patch in one pass) | per_block (one pass per target block, as I-JEPA's
    # predictor: the pixel-target I-JEPA with multi-block masks)
    pixel_decode: str = one_of("joint", registry.PIXEL_DECODES)
    # ijepa, mae: RandomResizedCrop in the step (fmnist, shapes); invariant: the crop of each of its two
    # views (null: 0.3-1.0, the scale of I-JEPA's loader crop). data.crop_scale is the loader's crop only.
    crop_scale: tuple[float, float] | None = min_max(None)
    # ijepa: the loss only on target patches that hold part of the object (a patch of pure background, the
    # image's darkest value, is left out): an ablation of how much the plain background costs the objective
    foreground_targets: bool = False
    # lejepa, ijepa_sigreg: SIGReg's weight lambda (loss = (1 - lambda) * prediction + lambda * SIGReg) and
    # its number of random 1-D projections; lejepa: global and local views per image, the local views' crop
    # (the global views crop by crop_scale, null: 0.4-1.0)
    sigreg_weight: float = at_least(0.05, 0)
    sigreg_slices: int = at_least(256, 1)
    views: tuple[int, int] = (2, 2)
    local_scale: tuple[float, float] = min_max((0.1, 0.4))


@dataclass
class EvalConfig:
    enabled: bool = True
    low_shot_per_class: int = at_least(60, 1)  # 1% of Fashion-MNIST
    train_limit: int | None = at_least(None, 1)
    test_limit: int | None = at_least(None, 1)
    batch_size: int = at_least(512, 1)


@dataclass
class Config:
    name: str = "fmnist_vit_tiny"
    seed: int = at_least(0, 0)
    mixed_precision: str = one_of(
        "auto", registry.PRECISIONS
    )  # auto (bf16 on CUDA, none on CPU) | no | bf16 | fp16
    compile: bool = False
    out_dir: str = "runs"
    log_every: int = at_least(10, 1)  # steps between refreshes of the progress bar's figures
    ckpt_every: int = at_least(0, 0)  # optimizer steps between checkpoints; 0 -> only at the end
    keep_last: int = at_least(2, 0)
    dist_timeout: int = at_least(600, 1)  # seconds a collective waits for a lost process before the run stops
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
    """Bring a YAML-parsed value to the field's declared type (hint is a string
    under postponed annotations)."""
    if value is None:
        if "None" not in hint:
            raise ValueError(f"config key {key!r} cannot be null (type {hint})")
        return None
    base = hint.replace(" | None", "")
    try:
        if base.startswith("tuple"):
            if isinstance(value, str):
                value = _parse_yaml(value, f"config key {key!r}")
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
            _set_field(current, path[1:], value, full_key, raw=raw)
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


def _parse_yaml(text: str, where: str) -> Any:
    """yaml.safe_load, with a malformed text reported as one ValueError naming
    `where`, the line and the problem."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{where} is not valid YAML{line}: {problem}") from None


def apply_overrides(cfg: Config, overrides: typing.Sequence[str]) -> Config:
    """Apply `section.key=value` strings; values are parsed as YAML (numbers, lists, null, true/false)."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value (e.g. optim.lr=5e-4)")
        key, raw = item.split("=", 1)
        value = _parse_yaml(raw, f"the value of override {item!r}") if raw != "" else None
        _set_field(cfg, key.strip().split("."), value, key.strip(), raw=raw)
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
    d = _parse_yaml(path.read_text(), f"config file {path}") or {}
    if not isinstance(d, dict):
        raise ValueError(f"config file {path} must hold a mapping at top level")
    d.setdefault("name", path.stem)
    cfg = config_from_dict(d)
    return apply_overrides(cfg, overrides)


def _rule_violations(section: Any, prefix: str = ""):
    """(key, message) for every field whose value breaks the rule in its metadata, in declaration order."""
    for f in dataclasses.fields(section):
        key, v = prefix + f.name, getattr(section, f.name)
        if dataclasses.is_dataclass(v):
            yield from _rule_violations(v, key + ".")
            continue
        rule = f.metadata
        if v is None or not rule:
            continue
        if "one_of" in rule and v not in rule["one_of"]:
            yield key, f"{key}={v!r} is not one of {', '.join(rule['one_of'])}"
        if "range" in rule:
            lo, hi, closed = rule["range"]
            if not (v >= lo if closed else v > lo) or (hi is not None and v > hi) or v != v:
                left, right = "[" if closed else "(", "]" if hi is not None else ")"
                yield key, f"{key}={v!r} must lie in {left}{lo}, {hi if hi is not None else 'inf'}{right}"
        if "betas" in rule and not all(0 <= x < 1 for x in v):
            yield key, f"{key}={list(v)} must be a (min, max) pair with 0 <= each < 1"
        if "pair" in rule:
            (a, b), (lo, hi) = v, rule["pair"]
            low_ok = lo <= a if rule.get("allow_equal_low") else lo < a
            if not (low_ok and a <= b and (hi is None or b <= hi)):
                valid = f"{lo} < min <= max" + (f" <= {hi}" if hi else "")
                yield key, f"{key}={[a, b]} must be a (min, max) pair with {valid}"


def check_config(cfg: Config) -> Config:
    """Raise ValueError naming the first key whose value is out of range or not a valid name; return cfg.

    Runs in milliseconds, before any data or model is built. Geometry that needs the grid (mask blocks,
    patch size against image size) is checked where it is known: masks.py and models.py."""
    for _, message in _rule_violations(cfg):
        raise ValueError(message)
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
    if cfg.method.crop_scale is not None and cfg.method.name not in ("invariant", "lejepa"):
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
