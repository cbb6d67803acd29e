"""The course checkpoints: I-JEPA, MAE and the invariant baseline trained on Fashion-MNIST for about the same
CPU time, shipped in the repository as small safetensors, each with a card (its config, the command and seed
that retrain it, its probes, and the probes of snapshots at 1/8, 1/4, 1/2 and all of its budget).

    from jepa_lite.lab import pretrained
    encoder = pretrained.load("ijepa")                       # the EMA target encoder, ready to probe
    predictor = pretrained.load("ijepa", part="predictor")   # what notebook 07 asks about the blue box
    pretrained.card("mae")["probes"]                         # linear probe, k-NN, ... as recorded

`python scripts/reproduce.py --groups course_checkpoints` retrains them (hours on a 2-core CPU, minutes on a
GPU; a killed run resumes), with the same `jepa_lite.core.train` loop as every other run (retrain.py). Loading
imports no training code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..core.build import build_method
from ..core.config import config_from_dict
from ..core.weights import load_weights
from ..registry import METHOD_NAMES, METHOD_PRESETS

__all__ = [
    "RECIPES",
    "WEIGHTS_DIR",
    "names",
    "available",
    "card",
    "load",
    "compute_curves",
    "label",
]

WEIGHTS_DIR = Path(__file__).parents[1] / "checkpoints"
COMMAND = "python scripts/reproduce.py --groups course_checkpoints --checkpoints {name}"
STEP_SECONDS = "step_seconds.json"  # beside the weights: each recipe's step time, timed side by side


@dataclass(frozen=True)
class Recipe:
    """How one course checkpoint is trained: overrides of the course default `fmnist_vit_tiny` and a seed."""

    overrides: tuple[str, ...]
    seed: int = 0
    about: str = ""
    label: str = ""  # as tables and figures name it (default: the method's name)


# All three are the course default (a 2-deep, 192-wide ViT on 4-px patches, batch 32) trained longer; each
# gets its own objective and masks, and as many epochs as fit about the same CPU time: an MAE step is cheaper
# than I-JEPA's (no target encoder, one decoder pass): about half, so 47 epochs against 24; an invariant step
# dearer (two full views): about 1.15x, so 21. `retrain.step_seconds()` measures the ratios; the figure of
# accuracy against compute puts every snapshot on that one clock.
BASE = "fmnist_vit_tiny"
RECIPES: dict[str, Recipe] = {
    "ijepa": Recipe(
        ("optim.epochs=24",),
        about="I-JEPA, multi-block masks, EMA target encoder and a 3-deep predictor",
    ),
    "mae": Recipe(
        ("method.name=mae", *METHOD_PRESETS["mae"], "optim.epochs=47"),
        about="MAE: 75% random masking, a 3-deep pixel decoder on normalised patches",
    ),
    "invariant": Recipe(
        ("method.name=invariant", "optim.epochs=21"),
        about="invariant joint-embedding (InfoNCE) on two random crops of each image",
    ),
    # The best JEPA of the `beyond_ijepa` screen (notebook 10): I-JEPA with a faster EMA and a 1-deep
    # predictor, whose step costs 0.61 of the 3-deep one's (results/beyond_ijepa_step_seconds.json), so
    # 24 / 0.61 epochs fit the I-JEPA checkpoint's CPU time: eight times the screened row's 4.9.
    "ijepa_tuned": Recipe(
        ("optim.ema=[0.99,0.999]", "model.predictor_depth=1", "optim.epochs=39.2"),
        about="I-JEPA tuned at course scale: EMA 0.99 -> 0.999 and a 1-deep predictor, at I-JEPA's CPU time",
        label="I-JEPA, tuned",
    ),
}
# The modules of each method that `load(name, part)` can return; "target_encoder" is always the encoder the
# paper evaluates (I-JEPA's EMA target encoder; MAE's and the invariant method's only encoder).
PARTS = {
    "ijepa": ("target_encoder", "context_encoder", "predictor", "method"),
    "mae": ("target_encoder", "encoder", "decoder", "method"),
    "invariant": ("target_encoder", "encoder", "head", "method"),
    "ijepa_tuned": ("target_encoder", "context_encoder", "predictor", "method"),
}


def names() -> list[str]:
    """Every course checkpoint's name, shipped or not."""
    return list(RECIPES)


def label(name: str) -> str:
    """How tables and figures name a course checkpoint: its recipe's label, else its method's name."""
    _check_name(name)
    recipe = RECIPES[name]
    method = next((o.split("=", 1)[1] for o in recipe.overrides if o.startswith("method.name=")), "ijepa")
    return recipe.label or METHOD_NAMES[method]


def _check_name(name: str) -> None:
    if name not in RECIPES:
        raise ValueError(
            f"unknown course checkpoint {name!r}; the course checkpoints are: {', '.join(RECIPES)}"
        )


def _paths(name: str, root: str | Path | None) -> tuple[Path, Path]:
    folder = Path(root) if root is not None else WEIGHTS_DIR
    return folder / f"{name}.safetensors", folder / f"{name}.json"


def available(root: str | Path | None = None) -> list[str]:
    """Names of the course checkpoints whose weights and card are present (in
    `root`, default the package's)."""
    return [n for n in RECIPES if all(p.is_file() for p in _paths(n, root))]


def card(name: str, root: str | Path | None = None) -> dict:
    """The card of a course checkpoint: config, command, seed, training time, probes and snapshot probes."""
    _check_name(name)
    weights, card_path = _paths(name, root)
    if not (weights.is_file() and card_path.is_file()):
        raise FileNotFoundError(
            f"course checkpoint {name!r} is not in {weights.parent} (needs {weights.name} and "
            f"{card_path.name}); train it with `{COMMAND.format(name=name)}`"
        )
    return json.loads(card_path.read_text())


def load(
    name: str, part: str = "target_encoder", *, root: str | Path | None = None, device: str = "cpu"
) -> nn.Module:
    """A course checkpoint's module, in eval mode and float32: `part` is one of `PARTS[method]`.

    Loads strictly (every key of the file, nothing else), so a wrong or damaged file fails here."""
    _check_name(name)
    if part not in PARTS[name]:
        raise ValueError(f"part {part!r} of {name!r} must be one of: {', '.join(PARTS[name])}")
    info = card(name, root)
    method = build_method(config_from_dict(info["config"]))
    load_weights(method, _paths(name, root)[0], strict=True)
    method.eval().requires_grad_(False).to(device)
    if part == "method":
        return method
    return method.eval_encoder if part == "target_encoder" else getattr(method, part)


def compute_curves(
    root: str | Path | None = None, seconds_per_step: dict[str, float] | None = None
) -> tuple[dict[str, list[dict]], str]:
    """The snapshot probes of every course checkpoint present, as `viz.plot_accuracy_vs_compute` takes them
    ({"I-JEPA": [{"train_minutes": t, "linear_probe": ..., "knn": ...}, ...], ...}), and a title naming
    where they were trained. Empty when none is present.

    Each card times its own run, and a long run shares its host with other jobs at times; `seconds_per_step`
    ({name: median seconds per step}, default the `STEP_SECONDS` file beside the weights, written by
    `retrain.step_seconds()`, which times the recipes one after another in one process) puts them on one clock
    instead: minutes = step x seconds per step / 60."""
    cards = {n: card(n, root) for n in available(root)}
    timing = (Path(root) if root is not None else WEIGHTS_DIR) / STEP_SECONDS
    if seconds_per_step is None and timing.is_file():
        seconds_per_step = json.loads(timing.read_text())["seconds_per_step"]
    curves = {}
    for name, info in cards.items():
        points = info["snapshots"]
        if seconds_per_step and name in seconds_per_step:
            points = [{**p, "train_minutes": p["step"] * seconds_per_step[name] / 60} for p in points]
        curves[label(name)] = points
    devices = sorted({c.get("trained_on", "?") for c in cards.values()})
    where = f"all on {devices[0]}" if len(devices) == 1 else "on " + ", ".join(devices)
    clock = "\ntraining minutes: steps x each recipe's median step time, timed side by side"
    clock = clock if seconds_per_step else ""
    title = f"Fashion-MNIST probes of the course checkpoints during training (same encoder, {where}){clock}"
    return curves, title
