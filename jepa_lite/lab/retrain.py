"""Training the course checkpoints (pretrained.py loads them): each recipe run with the one training loop,
snapshots of its encoder probed at 1/8, 1/4, 1/2 and all of its budget, the weights shipped as float16 where
that moves no probe, and a card that says how to train it again.

    python scripts/reproduce.py --groups course_checkpoints     # what calls retrain(); resumable
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..cluster.run_folder import RunFolder
from ..core.build import build_encoder, build_method, build_split, total_steps_of
from ..core.config import Config, config_to_dict
from ..core.evaluate import knn_accuracy
from ..core.features import extract_features
from ..core.train import train
from ..core.weights import export_weights, load_weights
from ..registry import TRAIN_SIZES
from .experiments import make_config
from .grid import ProbeSets, step_seconds_of, write_json
from .pretrained import BASE, COMMAND, RECIPES, WEIGHTS_DIR, _check_name, _paths, names

SNAPSHOTS = (1 / 8, 1 / 4, 1 / 2, 1)  # fractions of the budget whose encoder is probed during the run
KNN_CHECK = {"train": 10_000, "test": 2_000}  # the fixed subsets of the quick check that a file is intact
HALF_TOLERANCE = 0.2  # points any probe may move when the weights are stored in float16 instead of float32
METRICS = ("linear_probe", "knn", "low_shot")


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


def extend_step_seconds(recorded: dict, which: Iterable[str], **budget) -> dict:
    """`recorded` (the STEP_SECONDS file's content) with each recipe of `which` added on its clock: that
    recipe's step time relative to I-JEPA's, both timed now one after another in this process, times I-JEPA's
    recorded step time. A ratio measured in one run carries over where absolute times would not (another
    machine, or other jobs beside this one)."""
    which = [n for n in which if n != "ijepa"]
    now = step_seconds(["ijepa", *which], **budget)
    seconds, scaled = dict(recorded["seconds_per_step"]), dict(recorded.get("scaled", {}))
    for name in which:
        ratio = now[name] / now["ijepa"]
        seconds[name] = seconds["ijepa"] * ratio
        scaled[name] = f"{ratio:.3f} x ijepa's step, timed side by side on {device_name()}"
    return {**recorded, "seconds_per_step": seconds, "scaled": scaled}


def knn_check(encoder: nn.Module, cfg: Config, *, quick: bool = False) -> float:
    """k-NN accuracy (%) on the fixed subsets `KNN_CHECK` (first 10,000 train / 2,000 test images): cheap
    enough for a test, sensitive to a wrong or damaged file."""
    n_train, n_test = (300, 100) if quick else (KNN_CHECK["train"], KNN_CHECK["test"])
    train_set = build_split(cfg, train=True, limit=n_train)
    test_set = build_split(cfg, train=False, limit=n_test)
    return knn_accuracy(
        *extract_features(encoder, train_set, progress=False),
        *extract_features(encoder, test_set, progress=False),
    )


def device_name() -> str:
    """Where this process trains: the CUDA device's name, or "CPU, N threads"."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    n = torch.get_num_threads()
    return f"CPU, {n} thread{'' if n == 1 else 's'}"


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


def _loss_curve(history: list[dict], points: int = 200) -> list[list[float]]:
    """[[step, mean loss], ...] over at most `points` equal windows of the run (small card, smooth curve)."""
    window = max(1, len(history) // points)
    return [
        [history[i]["step"], sum(r["loss"] for r in history[i : i + window]) / len(history[i : i + window])]
        for i in range(0, len(history), window)
    ]


def _probe_snapshots(cfg: Config, work: Path, *, steps: list[int], total: int, seconds: list[float], probes,
                     progress: bool) -> list[dict]:  # fmt: skip
    """The probes of each snapshot, each written to `work` once (a resumed call reads them back). Minutes are
    steps x the median step time: robust to stretches when other jobs shared the CPU, which a plain sum of
    step times would count as training."""
    median_step, snapshots = statistics.median(seconds), []
    for s in steps:
        record = work / f"snap-{s:08d}.json"
        if not record.exists():
            enc = load_weights(build_encoder(cfg), work / f"snap-{s:08d}.safetensors")
            print(f"  probing the snapshot after step {s}", flush=True)
            minutes = dict(
                train_minutes=round(s * median_step / 60, 2),
                train_minutes_summed=round(sum(seconds[:s]) / 60, 2),
            )
            write_json(
                record,
                {"step": s, "fraction": s / total, **minutes, **probes.evaluate(enc, progress=progress)},
            )
        snapshots.append(json.loads(record.read_text()))
    return snapshots


def _float16_if_harmless(cfg: Config, method: nn.Module, final: dict, probes, *, progress: bool):
    """(state to ship, probes of the shipped weights, whether float16): float16 where the probes of the
    rounded weights stay within HALF_TOLERANCE of float32's."""
    state = {k: v.detach().cpu().contiguous() for k, v in method.state_dict().items()}
    half = build_method(cfg)
    half.load_state_dict({k: v.float() for k, v in _half(state).items()})
    print("  probing the float16-rounded weights", flush=True)
    half_probes = probes.evaluate(half.eval_encoder.eval(), progress=progress)
    if all(abs(half_probes[m] - final[m]) < HALF_TOLERANCE for m in METRICS):
        return _half(state), half_probes, True
    return state, final, False


def _card(name: str, cfg: Config, result, *, seconds: list[float], wall: float, snapshots: list[dict],
          shipped_probes: dict, half: bool, quick: bool) -> dict:  # fmt: skip
    recipe, median_step = RECIPES[name], statistics.median(seconds)
    command = ["python scripts/pretrain.py", f"--config {BASE} --name course-{name}", *recipe.overrides]
    return {
        "name": name,
        "about": recipe.about,
        "method": cfg.method.name,
        "seed": recipe.seed,
        "overrides": list(recipe.overrides),
        "command": COMMAND.format(name=name),
        "pretrain_command": " ".join([*command, f"seed={recipe.seed}"]),
        "config": config_to_dict(cfg),
        "steps": result.step,
        "epochs": cfg.optim.epochs,
        "train_minutes": round(result.step * median_step / 60, 1),
        "step_seconds_median": round(median_step, 4),
        "train_minutes_summed": round(sum(seconds) / 60, 1),
        "wall_minutes_this_call": round(wall / 60, 1),
        "trained_on": device_name(),
        "dtype": "float16" if half else "float32",
        "probes": shipped_probes,
        "probes_float32": snapshots[-1],
        "snapshots": snapshots,
        "loss_curve": _loss_curve(result.history),
        "quick": quick,
    }


def _save(name: str, out: Path, state: dict, info: dict) -> Path:
    weights = _paths(name, out)[0]
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(state, str(tmp), metadata={"name": name, "config": json.dumps(info["config"])})
    os.chmod(tmp, 0o644)  # safetensors writes owner-only files; these are shipped
    os.replace(tmp, weights)
    return weights


def _load_state(cfg: Config, weights: Path) -> nn.Module:
    method = build_method(cfg)
    state = load_file(str(weights))
    method.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return method.eval_encoder.eval()


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
    cards, probes = {}, None
    for name in which:
        cfg = make_config(RECIPES[name].overrides, RECIPES[name].seed, quick=quick, base=BASE)
        cfg.name = f"course-{name}"
        cfg.ckpt_every, cfg.keep_last = (0, 1) if quick else (500, 1)
        work = Path(work_dir) / name
        work.mkdir(parents=True, exist_ok=True)
        total = total_steps_of(cfg, cfg.data.limit or TRAIN_SIZES[cfg.data.name])[1]
        steps = _snapshot_steps(total)
        print(f"course checkpoint {name}: {total} steps, snapshots after {steps}", flush=True)
        t0 = time.perf_counter()
        saver = _snapshot_saver(work, steps)
        result = train(
            cfg,
            hooks=RunFolder(work / "run", resume="auto", verbose=progress),
            progress=progress,
            on_step=saver,
        )
        wall = time.perf_counter() - t0
        seconds = [r["time"] for r in result.history]  # per-step times, kept across a resume
        probes = probes or ProbeSets(cfg, quick=quick)
        snapshots = _probe_snapshots(
            cfg, work, steps=steps, total=total, seconds=seconds, probes=probes, progress=progress
        )
        final = snapshots[-1]
        state, shipped_probes, half = _float16_if_harmless(
            cfg, result.method, final, probes, progress=progress
        )
        info = _card(name, cfg, result, seconds=seconds, wall=wall, snapshots=snapshots,
                     shipped_probes=shipped_probes, half=half, quick=quick)  # fmt: skip
        weights = _save(name, out, state, info)
        check = {"train": 300, "test": 100} if quick else KNN_CHECK
        info["knn_check"] = {**check, "knn": knn_check(_load_state(cfg, weights), cfg, quick=quick)}
        write_json(_paths(name, out)[1], info)
        cards[name] = info
    return cards


__all__ = [
    "KNN_CHECK",
    "SNAPSHOTS",
    "device_name",
    "extend_step_seconds",
    "knn_check",
    "retrain",
    "step_seconds",
]
