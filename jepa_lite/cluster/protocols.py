"""Evaluation protocols: how a pretrained encoder is measured, as packaged YAML files beside the pretraining
configs (configs/eval/*.yaml, each value with its source in the paper in a comment).

    protocol = load_protocol("in1k_linear")     # or a path to your own YAML file
    protocol.probe, protocol.epochs               # 'sgd', 50
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..core.config import CONFIG_DIR, _parse_yaml

PROTOCOL_DIR = CONFIG_DIR / "eval"


@dataclass(frozen=True)
class Protocol:
    name: str
    version: int
    dataset: str  # a jepa_lite.data dataset name
    image_size: int
    which: str  # encoder probed: target | context
    pooling: str  # avg_last: the last layer's patch tokens, average-pooled
    train_split: str
    per_class: int | None  # a class-balanced subset of the training split (None: all of it) ...
    split_file: str | None  # ... or the image file names listed in this file
    probe: str  # sgd (feature_store + sgd_probe) | lbfgs (evaluate.linear_probe, in memory)
    optimizer: str | None  # sgd | lars
    batch_size: int | None
    epochs: int | None
    schedule: str | None  # cosine | step
    decay_epochs: int | None
    lr: tuple[float, ...] | None  # values swept
    weight_decay: tuple[float, ...]  # values swept
    momentum: float | None

    def __post_init__(self) -> None:
        choices = dict(which=("target", "context"), pooling=("avg_last",), probe=("sgd", "lbfgs"))
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(
                    f"protocol {self.name}: {key}={getattr(self, key)!r} must be one of {allowed}"
                )
        if self.probe == "sgd":
            needed = ("optimizer", "batch_size", "epochs", "schedule", "lr", "momentum")
            missing = [k for k in needed if getattr(self, k) is None]
            if missing:
                raise ValueError(f"protocol {self.name}: the sgd probe needs {', '.join(missing)}")


def list_protocols() -> list[str]:
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml"))


def load_protocol(name_or_path: str | Path) -> Protocol:
    """A packaged protocol by name (`list_protocols()`), or a YAML file of the same keys by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROTOCOL_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(list_protocols())
        raise ValueError(f"protocol {str(name_or_path)!r} not found: not a file, and not one of {known}")
    d = _parse_yaml(path.read_text(), f"protocol file {path}")
    fields = [f.name for f in dataclasses.fields(Protocol)]
    if not isinstance(d, dict) or set(d) != set(fields):
        keys = set(d) if isinstance(d, dict) else set()
        missing, unknown = sorted(set(fields) - keys), sorted(keys - set(fields))
        raise ValueError(f"protocol file {path}: missing keys {missing}, unknown keys {unknown}")
    for key in ("lr", "weight_decay"):
        if isinstance(d[key], (int, float)):
            d[key] = [d[key]]
        d[key] = tuple(float(v) for v in d[key]) if d[key] is not None else None
    return Protocol(**d)


__all__ = ["PROTOCOL_DIR", "Protocol", "list_protocols", "load_protocol"]
