"""Running the experiment grid: train a row (resumable), probe it on the shared probe sets, write one JSON per
run. `experiments.py` says what the rows are, `tables.py` how they are summarised."""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cluster.run_folder import RunFolder
from ..core.build import build_split, initial_encoder, total_steps_of
from ..core.config import Config, config_to_dict
from ..core.evaluate import PROBE_VERSION, evaluate_features, linear_probe
from ..core.features import extract_features, module_device, pixel_features, rankme
from ..core.train import train
from ..data.shapes import ShapesWorld
from ..registry import TRAIN_SIZES
from .experiments import (
    CURVE_IMAGES,
    PROBE_ITERS,
    SHAPES_SIZES,
    is_current,
    make_config,
    planned_runs,
    run_key,
)
from .tables import summarize


class ProbeSets:
    """The frozen-feature evaluation data of the grid, built once: Fashion-MNIST
    train/test and ShapesWorld."""

    def __init__(self, cfg: Config, *, quick: bool = False) -> None:
        self.train = build_split(cfg, train=True, limit=cfg.eval.train_limit)
        self.test = build_split(cfg, train=False, limit=cfg.eval.test_limit)
        mode = "quick" if quick else "full"
        n_train, n_test = SHAPES_SIZES[mode]
        self.max_iter = PROBE_ITERS[mode]
        grey = _to_grey(cfg.data.image_size)
        self.shapes_train = ShapesWorld(n_train, seed=0, transform=grey)
        self.shapes_test = ShapesWorld(n_test, seed=1, transform=grey)
        self.per_class = cfg.eval.low_shot_per_class
        self.batch_size = cfg.eval.batch_size

    def evaluate(self, encoder: nn.Module, *, progress: bool = False) -> dict[str, float]:
        """All six metrics of a frozen encoder (accuracies in %), probed on the encoder's device."""
        kw = dict(batch_size=self.batch_size, progress=progress)
        device = module_device(encoder)
        out = evaluate_features(
            *extract_features(encoder, self.train, **kw),
            *extract_features(encoder, self.test, **kw),
            per_class=self.per_class,
            max_iter=self.max_iter,
            device=device,
        )
        sx, _ = extract_features(encoder, self.shapes_train, **kw)
        tx, _ = extract_features(encoder, self.shapes_test, **kw)
        out.update(self._shapes_probes(sx.to(device), tx.to(device)))
        return out

    def evaluate_pixels(self) -> dict[str, float]:
        """The same metrics on raw pixels, the no-learning baseline."""
        out = evaluate_features(
            *pixel_features(self.train),
            *pixel_features(self.test),
            per_class=self.per_class,
            max_iter=self.max_iter,
        )
        out["probe_version"] = PROBE_VERSION
        sx = torch.stack([self.shapes_train[i][0] for i in range(len(self.shapes_train))]).flatten(1)
        tx = torch.stack([self.shapes_test[i][0] for i in range(len(self.shapes_test))]).flatten(1)
        out.update(self._shapes_probes(sx, tx))
        return out

    def _shapes_probes(self, train_x: Tensor, test_x: Tensor) -> dict[str, float]:
        a, b = self.shapes_train, self.shapes_test
        kw = dict(max_iter=self.max_iter)
        return {
            "count": linear_probe(train_x, a.counts - 1, test_x, b.counts - 1, **kw),
            "position": linear_probe(train_x, a.positions, test_x, b.positions, **kw),
        }


def _to_grey(size: int) -> Callable[[Tensor], Tensor]:
    """ShapesWorld colour image [3, 32, 32] -> one grey channel [1, size, size]
    (channel mean, antialiased)."""

    def grey(img: Tensor) -> Tensor:
        g = img.mean(dim=0, keepdim=True)
        return F.interpolate(
            g[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0]

    return grey


def rankme_probe(images: Tensor, every: int) -> Callable[[int, nn.Module, dict], None]:
    """An `on_step` callback that adds `rankme` of the eval encoder on fixed `images` every `every` steps."""

    def on_step(step: int, method: nn.Module, row: dict) -> None:
        if (step + 1) % every == 0 or step == 0:
            enc = method.eval_encoder
            was = enc.training
            enc.eval()
            with torch.inference_mode():
                feats = enc(images.to(next(enc.parameters()).device)).mean(dim=1)
            enc.train(was)
            row["rankme"] = rankme(feats.float())

    return on_step


def run_one(
    overrides: tuple[str, ...],
    seed: int,
    probes: ProbeSets,
    *,
    work_dir: str | Path,
    quick: bool = False,
    progress: bool = True,
) -> dict:
    """Train one row of the grid (resuming from `work_dir/<key>` if a checkpoint is there) and probe it.

    Returns a JSON-able dict: key, overrides, seed, steps, train/eval seconds, the six metrics, the RankMe
    curve, and for plain I-JEPA rows also `init` (the same metrics of the encoder at initialisation)."""
    cfg = make_config(overrides, seed, quick=quick)
    key = run_key(overrides, seed)
    cfg.ckpt_every = 0 if quick else 50
    cfg.keep_last = 1
    n_curve = min(CURVE_IMAGES["quick" if quick else "full"], len(probes.test))
    curve_images = torch.stack([probes.test[i][0] for i in range(n_curve)])  # RankMe curve
    t0 = time.perf_counter()
    init = initial_encoder(cfg) if not overrides else None  # before train: seeds
    result = train(
        cfg,
        hooks=RunFolder(Path(work_dir) / key, resume="auto", verbose=progress),
        progress=progress,
        on_step=rankme_probe(curve_images, every=max(1, _total_steps(cfg) // 10)),
    )
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    out = {
        "key": key,
        "overrides": list(overrides),
        "seed": seed,
        "method": cfg.method.name,
        "steps": result.step,
        "train_seconds": round(train_s, 1),
        "config": config_to_dict(cfg),
        "probe_version": PROBE_VERSION,
    }
    out.update(probes.evaluate(result.method.eval_encoder, progress=progress))
    if init is not None:
        out["init"] = probes.evaluate(init, progress=progress)
    out["eval_seconds"] = round(time.perf_counter() - t1, 1)
    out["rankme_curve"] = [(r["step"], r["rankme"]) for r in result.history if "rankme" in r]
    out["final_loss"] = result.history[-1]["loss"] if result.history else math.nan
    return out


def run_grid(
    groups: Iterable[str],
    out: str | Path,
    *,
    quick: bool = False,
    seeds: int | None = None,
    max_runs: int | None = None,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
) -> dict:
    """Run every planned run of `groups` not yet in `out/runs/` (one JSON each), then write and return the
    summary. `shard` (i, n): only the rows whose position among the plan's rows is i modulo n, so that n
    processes, one per core, share a grid without ever training the same run.

    Killed runs resume from `out/.work/<key>` (checkpoints every 50 steps, deleted once the run's JSON
    exists);
    `max_runs` stops after that many new runs. Raw pixels are probed once into `out/pixels.json`."""
    groups = list(groups)
    out = Path(out)
    run_dir, work = out / "runs", out / ".work"
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = _shard(planned_runs(groups, seeds=seeds), *shard)
    done = {k: r for k, r in load_runs(run_dir).items() if is_current(r)}
    todo = [(o, s) for o, s in plan if run_key(o, s) not in done]
    print(
        f"{len(plan)} runs planned for {', '.join(groups)}; {len(plan) - len(todo)} done, {len(todo)} to do"
        " (a run probed by an older protocol counts as to do)"
    )
    todo = todo[:max_runs] if max_runs is not None else todo
    pixels_file = out / "pixels.json"
    pixels = json.loads(pixels_file.read_text()) if pixels_file.exists() else None
    need_pixels = "architectures" in groups and not (pixels and is_current(pixels))
    probe_sets: dict[tuple, ProbeSets] = {}  # one per kind of image: clean, or with a nuisance and strength

    def probes_for(cfg: Config) -> ProbeSets:
        key = (cfg.data.nuisance, cfg.data.nuisance_strength)
        if key not in probe_sets:
            probe_sets[key] = ProbeSets(cfg, quick=quick)
        return probe_sets[key]

    if need_pixels:
        pixels = probes_for(make_config((), 0, quick=quick)).evaluate_pixels()
        write_json(pixels_file, pixels)
    for i, (overrides, seed) in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {' '.join(overrides) or 'default'} seed {seed}", flush=True)
        probes = probes_for(make_config(overrides, seed, quick=quick))
        result = run_one(overrides, seed, probes, work_dir=work, quick=quick, progress=progress)
        write_json(run_dir / f"{result['key']}.json", result)
        shutil.rmtree(work / result["key"], ignore_errors=True)
        print(
            f"    linear probe {result['linear_probe']:.1f}, k-NN {result['knn']:.1f}, low-shot "
            f"{result['low_shot']:.1f}, RankMe {result['rankme']:.2f}, count {result['count']:.1f}, position "
            f"{result['position']:.1f} ({result['train_seconds'] + result['eval_seconds']:.0f} s)",
            flush=True,
        )
    return summarize(load_runs(run_dir), pixels, groups, seeds=seeds)


def step_seconds_of(
    rows: dict[str, tuple[tuple[str, ...], int]],
    *,
    base: str,
    steps: int = 400,
    warmup: int = 50,
    quick: bool = False,
) -> dict[str, float]:
    """Median seconds per training step of each row ({name: (overrides, seed)} of config `base`), timed one
    after another in this process on real batches: step costs compare only as ratios measured in one run."""
    if steps <= warmup:
        raise ValueError(f"steps ({steps}) must exceed warmup ({warmup}): the warm-up steps are not timed")
    timing = {}
    for name, (overrides, seed) in rows.items():
        cfg = make_config(overrides, seed, quick=quick, base=base)
        cfg.optim.max_steps, cfg.ckpt_every = steps, 0
        result = train(cfg, progress=False)
        timing[name] = statistics.median(r["time"] for r in result.history[warmup:])
        print(f"  {name}: {timing[name]:.4f} s per step (median of {steps - warmup})", flush=True)
    return timing


def _shard(plan: list[tuple[tuple[str, ...], int]], i: int, n: int) -> list[tuple[tuple[str, ...], int]]:
    """The runs of `plan` whose row (overrides) is the i-th modulo n among the plan's distinct rows."""
    if not 0 <= i < n:
        raise ValueError(f"shard {i}/{n}: the index must lie in [0, {n})")
    rows = list(dict.fromkeys(o for o, _ in plan))
    return [(o, s) for o, s in plan if rows.index(o) % n == i]


def load_runs(run_dir: str | Path) -> dict[str, dict]:
    """Every finished run's JSON in `run_dir`, by key."""
    runs = {}
    for f in sorted(Path(run_dir).glob("*.json")):
        data = json.loads(f.read_text())
        runs[data["key"]] = data
    return runs


def write_json(path: Path, data: dict) -> None:
    """Write atomically (tmp + rename): a killed run never leaves a half-written result."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _total_steps(cfg: Config) -> int:
    n = cfg.data.limit or TRAIN_SIZES[cfg.data.name]
    return total_steps_of(cfg, n)[1]
