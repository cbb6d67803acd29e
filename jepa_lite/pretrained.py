"""The course checkpoints: I-JEPA, MAE and the invariant baseline trained on Fashion-MNIST for about the same
CPU time, shipped in the repository as small safetensors, each with a card (its config, the command and seed
that retrain it, its probes, and the probes of snapshots at 1/8, 1/4, 1/2 and all of its budget).

    from jepa_lite import pretrained
    encoder = pretrained.load("ijepa")                       # the EMA target encoder, ready to probe
    predictor = pretrained.load("ijepa", part="predictor")   # what notebook 07 asks about the blue box
    pretrained.card("mae")["probes"]                         # linear probe, k-NN, ... as recorded

`python scripts/reproduce.py --groups course_checkpoints` retrains them (hours on a 2-core CPU, minutes on a
GPU; a killed run resumes), with the same `jepa_lite.train` loop as every other run.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .build import build_encoder, build_method, build_split, total_steps_of
from .checkpoint import export_weights, load_weights
from .config import config_from_dict, config_to_dict
from .evaluate import knn_accuracy
from .experiments import MAE_PRESET, make_config
from .features import extract_features
from .grid import ProbeSets, step_seconds_of, write_json
from .registry import METHOD_NAMES, TRAIN_SIZES
from .train import train

__all__ = [
    "RECIPES",
    "WEIGHTS_DIR",
    "names",
    "available",
    "card",
    "load",
    "compute_curves",
    "step_seconds",
    "device_name",
    "retrain",
    "knn_check",
]

WEIGHTS_DIR = Path(__file__).parent / "checkpoints"
SNAPSHOTS = (1 / 8, 1 / 4, 1 / 2, 1)  # fractions of the budget whose encoder is probed during the run
KNN_CHECK = {"train": 10_000, "test": 2_000}  # the fixed subsets of the quick check that a file is intact
HALF_TOLERANCE = 0.2  # points any probe may move when the weights are stored in float16 instead of float32
COMMAND = "python scripts/reproduce.py --groups course_checkpoints --checkpoints {name}"
STEP_SECONDS = "step_seconds.json"  # beside the weights: each recipe's step time, timed side by side


@dataclass(frozen=True)
class Recipe:
    """How one course checkpoint is trained: overrides of the course default `fmnist_vit_tiny` and a seed."""

    overrides: tuple[str, ...]
    seed: int = 0
    about: str = ""


# All three are the course default (a 2-deep, 192-wide ViT on 4-px patches, batch 32) trained longer; each
# gets its own objective and masks, and as many epochs as fit about the same CPU time: an MAE step is cheaper
# than I-JEPA's (no target encoder, one decoder pass): about half, so 47 epochs against 24; an invariant step
# dearer (two full views): about 1.15x, so 21. `step_seconds()` measures the ratios; the figure of accuracy
# against compute puts every snapshot on that one clock.
BASE = "fmnist_vit_tiny"
RECIPES: dict[str, Recipe] = {
    "ijepa": Recipe(
        ("optim.epochs=24",),
        about="I-JEPA, multi-block masks, EMA target encoder and a 3-deep predictor",
    ),
    "mae": Recipe(
        (*MAE_PRESET, "optim.epochs=47"),
        about="MAE: 75% random masking, a 3-deep pixel decoder on normalised patches",
    ),
    "invariant": Recipe(
        ("method.name=invariant", "optim.epochs=21"),
        about="invariant joint-embedding (InfoNCE) on two random crops of each image",
    ),
}
# The modules of each method that `load(name, part)` can return; "target_encoder" is always the encoder the
# paper evaluates (I-JEPA's EMA target encoder; MAE's and the invariant method's only encoder).
PARTS = {
    "ijepa": ("target_encoder", "context_encoder", "predictor", "method"),
    "mae": ("target_encoder", "encoder", "decoder", "method"),
    "invariant": ("target_encoder", "encoder", "head", "method"),
}


def names() -> list[str]:
    """Every course checkpoint's name, shipped or not."""
    return list(RECIPES)


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
    method = build_method(config_from_dict(info["config"]), in_chans=1)
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
    `step_seconds()`, which times the recipes one after another in one process) puts them on one clock
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
        curves[METHOD_NAMES[info["method"]]] = points
    devices = sorted({c.get("trained_on", "?") for c in cards.values()})
    where = f"all on {devices[0]}" if len(devices) == 1 else "on " + ", ".join(devices)
    clock = "\ntraining minutes: steps x each recipe's median step time, timed side by side"
    clock = clock if seconds_per_step else ""
    title = f"Fashion-MNIST probes of the course checkpoints during training (same encoder, {where}){clock}"
    return curves, title


def step_seconds(
    which: Iterable[str] | None = None, *, steps: int = 400, warmup: int = 50, quick: bool = False
) -> dict[str, float]:
    """Median seconds per training step of each course recipe (default all), timed one after another in this
    process on real Fashion-MNIST batches: the one clock on which their budgets compare (a ratio measured
    in one run, where each card's own timing depends on what else its host ran)."""
    which = list(which) if which is not None else names()
    for name in which:
        _check_name(name)
    rows = {name: (RECIPES[name].overrides, RECIPES[name].seed) for name in which}
    return step_seconds_of(rows, base=BASE, steps=steps, warmup=warmup, quick=quick)


# ----------------------------------------------------------------------------------------------------------
# training them


def knn_check(encoder: nn.Module, cfg, *, quick: bool = False) -> float:
    """k-NN accuracy (%) on the fixed subsets `KNN_CHECK` (first 10,000 train / 2,000 test images): cheap
    enough for a test, sensitive to a wrong or damaged file."""
    n_train, n_test = (300, 100) if quick else (KNN_CHECK["train"], KNN_CHECK["test"])
    train = build_split(cfg, train=True, limit=n_train)
    test = build_split(cfg, train=False, limit=n_test)
    return knn_accuracy(
        *extract_features(encoder, train, progress=False), *extract_features(encoder, test, progress=False)
    )


def _snapshot_steps(total: int) -> list[int]:
    return sorted({max(1, round(f * total)) for f in SNAPSHOTS})


def _snapshot_saver(work: Path, steps: list[int]):
    """`on_step` callback: export the eval encoder after each snapshot step (kept across a resume)."""

    def on_step(step: int, method: nn.Module, row: dict) -> None:
        done = step + 1
        path = work / f"snap-{done:08d}.safetensors"
        if done in steps and not path.exists():
            export_weights(method.eval_encoder, path)

    return on_step


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def retrain(
    which: Iterable[str] | None = None,
    *,
    out_dir: str | Path | None = None,
    work_dir: str | Path = "results/.work/course_checkpoints",
    quick: bool = False,
    progress: bool = True,
) -> dict[str, dict]:
    """Train the course checkpoints `which` (default all), probe their snapshots, write `<name>.safetensors`
    and `<name>.json` to `out_dir` (default the package's), and return the cards.

    Resumable: training checkpoints every 500 steps, snapshot weights and their probes stay in `work_dir`
    until the card is written. Float16 weights are shipped when no probe moves by `HALF_TOLERANCE` or more."""
    which = list(which) if which is not None else names()
    for n in which:
        _check_name(n)
    out = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    cards = {}
    probes = None
    for name in which:
        recipe = RECIPES[name]
        cfg = make_config(recipe.overrides, recipe.seed, quick=quick, base=BASE)
        cfg.name = f"course-{name}"
        cfg.ckpt_every, cfg.keep_last = (0, 1) if quick else (500, 1)
        work = Path(work_dir) / name
        work.mkdir(parents=True, exist_ok=True)
        total = total_steps_of(cfg, cfg.data.limit or TRAIN_SIZES[cfg.data.name])[1]
        steps = _snapshot_steps(total)
        print(f"course checkpoint {name}: {total} steps, snapshots after {steps}", flush=True)
        t0 = time.perf_counter()
        result = train(
            cfg, run_dir=work / "run", resume="auto", progress=progress, on_step=_snapshot_saver(work, steps)
        )
        wall = time.perf_counter() - t0
        # Compute is steps x the median step time: robust to the stretches when other jobs shared the CPU (or
        # the run was paused), which a plain sum of step times would count as training.
        seconds = [r["time"] for r in result.history]  # per-step times, kept across a resume
        median_step = statistics.median(seconds)
        probes = probes or ProbeSets(cfg, quick=quick)
        snapshots = []
        for s in steps:
            record = work / f"snap-{s:08d}.json"
            if not record.exists():
                enc = load_weights(build_encoder(cfg, in_chans=1), work / f"snap-{s:08d}.safetensors")
                print(f"  probing the snapshot after step {s}", flush=True)
                write_json(
                    record,
                    {
                        "step": s,
                        "fraction": s / total,
                        "train_minutes": round(s * median_step / 60, 2),
                        "train_minutes_summed": round(sum(seconds[:s]) / 60, 2),
                        **probes.evaluate(enc, progress=progress),
                    },
                )
            snapshots.append(json.loads(record.read_text()))
        # Ship float16 where the probes of the rounded weights stay within HALF_TOLERANCE of float32's.
        state = {k: v.detach().cpu().contiguous() for k, v in result.method.state_dict().items()}
        half = build_method(cfg, in_chans=1)
        half.load_state_dict({k: v.float() for k, v in _half(state).items()})
        print("  probing the float16-rounded weights", flush=True)
        half_probes = probes.evaluate(half.eval_encoder.eval(), progress=progress)
        metrics = ("linear_probe", "knn", "low_shot")
        use_half = all(abs(half_probes[m] - snapshots[-1][m]) < HALF_TOLERANCE for m in metrics)
        shipped = _half(state) if use_half else state
        info = {
            "name": name,
            "about": recipe.about,
            "method": cfg.method.name,
            "seed": recipe.seed,
            "overrides": list(recipe.overrides),
            "command": COMMAND.format(name=name),
            "pretrain_command": " ".join(
                [
                    "python scripts/pretrain.py",
                    f"--config {BASE} --name course-{name}",
                    *recipe.overrides,
                    f"seed={recipe.seed}",
                ]
            ),
            "config": config_to_dict(cfg),
            "steps": result.step,
            "epochs": cfg.optim.epochs,
            "train_minutes": round(result.step * median_step / 60, 1),
            "step_seconds_median": round(median_step, 4),
            "train_minutes_summed": round(sum(seconds) / 60, 1),
            "wall_minutes_this_call": round(wall / 60, 1),
            "trained_on": device_name(),
            "dtype": "float16" if use_half else "float32",
            "probes": half_probes if use_half else snapshots[-1],
            "probes_float32": snapshots[-1],
            "snapshots": snapshots,
            "loss_curve": _loss_curve(result.history),
            "quick": quick,
        }
        weights, card_path = _paths(name, out)
        tmp = weights.with_name(weights.name + ".tmp")
        save_file(shipped, str(tmp), metadata={"name": name, "config": json.dumps(info["config"])})
        os.chmod(tmp, 0o644)  # safetensors writes owner-only files; these are shipped
        os.replace(tmp, weights)
        info["knn_check"] = {
            **({"train": 300, "test": 100} if quick else KNN_CHECK),
            "knn": knn_check(_load_state(cfg, weights), cfg, quick=quick),
        }
        write_json(card_path, info)
        cards[name] = info
    return cards


def _loss_curve(history: list[dict], points: int = 200) -> list[list[float]]:
    """[[step, mean loss], ...] over at most `points` equal windows of the run (a
    small card, a smooth curve)."""
    window = max(1, len(history) // points)
    return [
        [history[i]["step"], sum(r["loss"] for r in history[i : i + window]) / len(history[i : i + window])]
        for i in range(0, len(history), window)
    ]


def _load_state(cfg, weights: Path) -> nn.Module:
    method = build_method(cfg, in_chans=1)
    state = load_file(str(weights))
    method.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return method.eval_encoder.eval()


def device_name() -> str:
    """Where this process trains: the CUDA device's name, or "CPU, N threads"."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    n = torch.get_num_threads()
    return f"CPU, {n} thread{'' if n == 1 else 's'}"
