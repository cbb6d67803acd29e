"""The course's experiment grid: the paper's comparisons and ablations, each row one change to the default run.

Every row trains the grid's base config `fmnist_grid` (187 steps of batch 256, a 4-deep ViT: a few CPU minutes)
with `jepa_lite.train` plus its dotted overrides,
then probes the frozen, average-pooled encoder: linear probe, k-NN, 1% low-shot and RankMe on Fashion-MNIST,
and, like the paper's Clevr/Count and Clevr/Dist columns, a transfer probe of object count and position on
ShapesWorld (rendered in 28-px grey so the Fashion-MNIST encoder can read it). `scripts/reproduce.py` runs the
grid and writes `results/`; notebook 06 reads it.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import Config, apply_overrides, config_to_dict, load_config
from .evaluate import (
    MAX_ITER,
    PROBE_VERSION,
    evaluate_features,
    extract_features,
    linear_probe,
    module_device,
    pixel_features,
    rankme,
)

GRID_BASE = (
    "fmnist_grid"  # the config every row of the grid changes (not the course default, fmnist_vit_tiny)
)
METRICS = ("linear_probe", "knn", "low_shot", "rankme", "count", "position")
MAE_PRESET = ("method.name=mae", "mask.strategy=random", "mask.target_ratio=0.75")  # as scripts/pretrain.py
SMALL_BATCH = ("optim.global_batch=32", "optim.lr=3.5e-4", "optim.start_lr=7e-5")  # the 30-min recipe
# the course default (configs/fmnist_vit_tiny.yaml) as overrides of the grid base
COURSE_DEFAULT = (*SMALL_BATCH, "optim.epochs=1.2", "model.depth=2")
WIDE_384 = (SMALL_BATCH[0], "optim.lr=1.75e-4", "optim.start_lr=3.5e-5", "optim.epochs=2.3",
            "model.embed_dim=384", "model.num_heads=6")  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One line of a results table: a name, the overrides that make it from the base config, and its seeds."""

    name: str
    overrides: tuple[str, ...] = ()
    seeds: int = 1


# The paper's tables at course scale. A row without overrides is the default I-JEPA run (shared across groups).
GROUPS: dict[str, list[Row]] = {
    "architectures": [
        Row("I-JEPA", (), 3),
        Row("MAE", MAE_PRESET, 3),
        Row("Invariant (InfoNCE)", ("method.name=invariant",), 3),
    ],
    "masking": [
        Row("multi-block"),
        Row("rasterized", ("mask.strategy=rasterized",)),
        Row("block", ("mask.strategy=block",)),
        Row("random", ("mask.strategy=random",)),
    ],
    "target_scale": [
        Row("0.075-0.1", ("mask.target_scale=[0.075,0.1]",)),
        Row("0.15-0.2"),
        Row("0.25-0.3", ("mask.target_scale=[0.25,0.3]",)),
    ],
    "context_scale": [
        Row("0.4-0.5", ("mask.context_scale=[0.4,0.5]",)),
        Row("0.65-0.75", ("mask.context_scale=[0.65,0.75]",)),
        Row("0.85-1.0"),
    ],
    "n_targets": [
        Row("1", ("mask.n_targets=1",)),
        Row("2", ("mask.n_targets=2",)),
        Row("4"),
    ],
    "targets_pixels_vs_repr": [
        Row("representations (I-JEPA)"),
        Row("pixels (MAE loss, multi-block masks)", ("method.name=mae",)),
    ],
    "collapse": [
        Row("EMA target"),
        Row("online target, stop-gradient", ("method.target_mode=online_stopgrad",)),
        Row("online target, no stop-gradient", ("method.target_mode=online",)),
    ],
    "predictor": [
        Row("depth 1", ("model.predictor_depth=1",)),
        Row("depth 3", ()),
        Row("depth 6", ("model.predictor_depth=6",)),
        Row("width 48", ("model.predictor_dim=48",)),
        Row("width 384", ("model.predictor_dim=384",)),
    ],
    # Not a table of the paper: how far the course's short budget is from converged. With EMA 0.996 -> 1.0 over
    # 187 steps the target encoder keeps about exp(-187 * 0.002) = 69% of its initial weights.
    "training_budget": [
        Row("0.8 epochs (187 steps)"),
        Row("EMA 0.98-1.0, 187 steps", ("optim.ema=[0.98,1.0]",)),
        Row("5.5 epochs (1287 steps)", ("optim.epochs=5.5",)),
        # Same images (0.8 epoch) and about the same CPU time as the default, but 8x more, smaller updates;
        # the learning rate scaled by sqrt(32/256) from the default's. Then that recipe for longer.
        Row("batch 32, 0.8 epochs (1500 steps)", SMALL_BATCH),
        Row("batch 32, 6 epochs (11250 steps)", (*SMALL_BATCH, "optim.epochs=6"), 2),  # the best: 2 seeds
        # Twice the 6-epoch budget: how fast does the linear probe still grow?
        Row("batch 32, 12 epochs (22500 steps)", (*SMALL_BATCH, "optim.epochs=12")),
        # A 384-wide encoder (wider pooled features) at half the lr, for the CPU time of the 6-epoch row (its steps cost 2-2.7x).
        Row("384 wide, batch 32, 2.3 epochs (4312 steps)", WIDE_384, 2),
        # A 2-deep encoder: level with 4 deep at 1500 steps and 1.4x faster, so the 6-epoch row's cost buys 8.4.
        Row(
            "2 deep, batch 32, 8.4 epochs (15750 steps)",
            (*SMALL_BATCH, "optim.epochs=8.4", "model.depth=2"),
            2,
        ),
        # Much longer runs of the cheapest encoder per epoch: how far does the curve climb on a CPU?
        Row("2 deep, batch 32, 24 epochs (45000 steps)", (*SMALL_BATCH, "optim.epochs=24", "model.depth=2")),
        Row("2 deep, batch 32, 32 epochs (60000 steps)", (*SMALL_BATCH, "optim.epochs=32", "model.depth=2")),
        # Fairness: the same small-batch recipe given to the two baselines of the architectures table.
        Row("MAE, batch 32, 0.8 epochs", (*MAE_PRESET, *SMALL_BATCH)),
        Row("Invariant, batch 32, 0.8 epochs", ("method.name=invariant", *SMALL_BATCH)),
    ],
    # The masking table again at the small-batch recipe (8x more updates): is multi-block's loss at batch 256
    # a property of the masks or of an under-trained encoder? Three seeds: the gaps are about a point.
    "masking_batch32": [
        Row("multi-block", SMALL_BATCH, 3),
        Row("rasterized", ("mask.strategy=rasterized", *SMALL_BATCH), 3),
        Row("block", ("mask.strategy=block", *SMALL_BATCH), 3),
        Row("random", ("mask.strategy=random", *SMALL_BATCH), 3),
    ],
    # Where the official I-JEPA recipe differs from the course default, one switch at a time, at the default's
    # 2,250 steps: keep every context patch (padding and a key-padding attention mask) instead of subsampling
    # each context to the batch's shortest; the official initialisation (every weight at std 0.02, the patch
    # embedding included, no depth rescale); a RandomResizedCrop(0.3-1.0) of each image, its only augmentation.
    "official_recipe": [
        Row("course default", COURSE_DEFAULT),
        Row("every context patch kept", (*COURSE_DEFAULT, "mask.context_fill=pad")),
        Row("official initialisation", (*COURSE_DEFAULT, "model.init=official")),
        Row("crops 0.3-1.0", (*COURSE_DEFAULT, "method.crop_scale=[0.3,1.0]")),
    ],
}

# Representations against pixels where pixels carry detail the label does not need (jepa_lite.nuisance): the
# course default's budget for I-JEPA, MAE (pixel targets, random masks) and I-JEPA with pixel targets (its
# multi-block masks, each block decoded in its own pass), on clean images and at three strengths of
# unpredictable noise and of predictable stripes in the background; probes on the same kind of images.
NUISANCE_METHODS = {
    "I-JEPA": COURSE_DEFAULT,
    "MAE": (*MAE_PRESET, *COURSE_DEFAULT),
    "I-JEPA, pixel targets": ("method.name=mae", "method.pixel_decode=per_block", *COURSE_DEFAULT),
}
NUISANCE_STRENGTHS = (1.0, 0.5, 0.25)
NUISANCE_SETTINGS = [(None, 0.0)] + [(k, s) for s in NUISANCE_STRENGTHS for k in ("noise", "stripes")]
# setting by setting, the three methods side by side, strongest detail first (a grid run in parts with
# --seeds 1 --max-runs N answers the question for every method before it refines the curves)
GROUPS["nuisance"] = [
    Row(f"{method}, {kind} {strength}" if kind else f"{method}, clean",
        (*overrides, *((f"data.nuisance={kind}", f"data.nuisance_strength={strength}") if kind else ())), 2)
    for kind, strength in NUISANCE_SETTINGS
    for method, overrides in NUISANCE_METHODS.items()
]  # fmt: skip
OPT_IN = ("nuisance",)  # hours of CPU each: run when asked for (`--groups nuisance`), not with the rest
DEFAULT_GROUPS = [g for g in GROUPS if g not in OPT_IN]

# What the quick mode (CI, notebooks' quick runs) changes: tiny data, a few steps, small probes.
QUICK = ("data.limit=512", "optim.global_batch=32", "optim.max_steps=3", "optim.warmup_epochs=0",
         "eval.train_limit=300", "eval.test_limit=150", "eval.low_shot_per_class=10")  # fmt: skip
SHAPES_SIZES = {"full": (10_000, 2_000), "quick": (100, 50)}
# test images whose RankMe is tracked during training (the quick runs' curve is three points of 64 images)
CURVE_IMAGES = {"full": 512, "quick": 64}
# L-BFGS iterations per probe fit (quick mode probes a few hundred samples)
PROBE_ITERS = {"full": MAX_ITER, "quick": 20}
# Runs probed by an older `PROBE_VERSION` (jepa_lite/evaluate.py) are re-run by `run_grid` and flagged in the
# tables until then.
STALE_MARK = "†"
STALE_NOTE = (f"probed by an older protocol than the current version {PROBE_VERSION} (version 1: 100 L-BFGS "
              "iterations, L2 from 1e-4, under-fits ViT features by 4-16 points): not comparable with "
              "the other rows; `python scripts/reproduce.py` re-runs it.")  # fmt: skip
QUICK_SEEDS = 2  # quick mode caps every row at two seeds (enough to exercise mean ± std)


def run_key(overrides: Iterable[str], seed: int) -> str:
    """Folder-safe identity of a run: the same overrides (in any order) and seed share one run."""
    text = json.dumps(sorted(overrides)) + f"|seed={seed}"
    return f"seed{seed}-" + hashlib.sha1(text.encode()).hexdigest()[:10]


def make_config(overrides: Iterable[str], seed: int, *, quick: bool = False, base: str = GRID_BASE) -> Config:
    """The base config with a row's overrides, the seed and (quick) the tiny budget applied."""
    cfg = load_config(base)
    apply_overrides(cfg, [*overrides, f"seed={seed}", *(QUICK if quick else ())])
    return cfg


def planned_runs(groups: Iterable[str], *, seeds: int | None = None) -> list[tuple[tuple[str, ...], int]]:
    """Unique (overrides, seed) pairs needed by `groups`, in table order; `seeds` caps every row's seeds."""
    seen, runs = set(), []
    for g in groups:
        if g not in GROUPS:
            raise ValueError(f"unknown experiment group {g!r}; choose from {', '.join(GROUPS)}")
        for row in GROUPS[g]:
            for s in range(min(row.seeds, seeds) if seeds else row.seeds):
                key = run_key(row.overrides, s)
                if key not in seen:
                    seen.add(key)
                    runs.append((row.overrides, s))
    return runs


# ----------------------------------------------------------------------------------------------------------
# probes


class ProbeSets:
    """The frozen-feature evaluation data of the grid, built once: Fashion-MNIST train/test and ShapesWorld."""

    def __init__(self, cfg: Config, *, quick: bool = False) -> None:
        from .data import ShapesWorld
        from .train import build_split

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
        out = evaluate_features(*extract_features(encoder, self.train, **kw), *extract_features(encoder, self.test, **kw),
                                per_class=self.per_class, max_iter=self.max_iter, device=device)  # fmt: skip
        sx, _ = extract_features(encoder, self.shapes_train, **kw)
        tx, _ = extract_features(encoder, self.shapes_test, **kw)
        out.update(self._shapes_probes(sx.to(device), tx.to(device)))
        return out

    def evaluate_pixels(self) -> dict[str, float]:
        """The same metrics on raw pixels, the no-learning baseline."""
        out = evaluate_features(*pixel_features(self.train), *pixel_features(self.test),
                                per_class=self.per_class, max_iter=self.max_iter)  # fmt: skip
        out["probe_version"] = PROBE_VERSION
        sx = torch.stack([self.shapes_train[i][0] for i in range(len(self.shapes_train))]).flatten(1)
        tx = torch.stack([self.shapes_test[i][0] for i in range(len(self.shapes_test))]).flatten(1)
        out.update(self._shapes_probes(sx, tx))
        return out

    def _shapes_probes(self, train_x: Tensor, test_x: Tensor) -> dict[str, float]:
        a, b = self.shapes_train, self.shapes_test
        kw = dict(max_iter=self.max_iter)
        return {"count": linear_probe(train_x, a.counts - 1, test_x, b.counts - 1, **kw),
                "position": linear_probe(train_x, a.positions, test_x, b.positions, **kw)}  # fmt: skip


def _to_grey(size: int) -> Callable[[Tensor], Tensor]:
    """ShapesWorld colour image [3, 32, 32] -> one grey channel [1, size, size] (channel mean, antialiased)."""

    def grey(img: Tensor) -> Tensor:
        g = img.mean(dim=0, keepdim=True)
        return F.interpolate(
            g[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0]

    return grey


# ----------------------------------------------------------------------------------------------------------
# running


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
    from .train import train

    cfg = make_config(overrides, seed, quick=quick)
    key = run_key(overrides, seed)
    cfg.ckpt_every = 0 if quick else 50
    cfg.keep_last = 1
    n_curve = min(CURVE_IMAGES["quick" if quick else "full"], len(probes.test))
    curve_images = torch.stack([probes.test[i][0] for i in range(n_curve)])  # RankMe curve
    t0 = time.perf_counter()
    result = train(cfg, run_dir=Path(work_dir) / key, resume="auto", progress=progress,
                   on_step=rankme_probe(curve_images, every=max(1, _total_steps(cfg) // 10)))  # fmt: skip
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    out = {"key": key, "overrides": list(overrides), "seed": seed, "method": cfg.method.name,
           "steps": result.step, "train_seconds": round(train_s, 1), "config": config_to_dict(cfg),
           "probe_version": PROBE_VERSION}  # fmt: skip
    out.update(probes.evaluate(result.method.eval_encoder, progress=progress))
    if not overrides and result.init_encoder is not None:
        out["init"] = probes.evaluate(result.init_encoder, progress=progress)
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
    progress: bool = True,
) -> dict:
    """Run every planned run of `groups` not yet in `out/runs/` (one JSON each), then write and return the summary.

    Killed runs resume from `out/.work/<key>` (checkpoints every 50 steps, deleted once the run's JSON exists);
    `max_runs` stops after that many new runs. Raw pixels are probed once into `out/pixels.json`."""
    import shutil

    groups = list(groups)
    out = Path(out)
    run_dir, work = out / "runs", out / ".work"
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = planned_runs(groups, seeds=seeds)
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
        print(f"    linear probe {result['linear_probe']:.1f}, k-NN {result['knn']:.1f}, low-shot "
              f"{result['low_shot']:.1f}, RankMe {result['rankme']:.2f}, count {result['count']:.1f}, position "
              f"{result['position']:.1f} ({result['train_seconds'] + result['eval_seconds']:.0f} s)", flush=True)  # fmt: skip
    return summarize(load_runs(run_dir), pixels, groups, seeds=seeds)


def is_current(result: dict) -> bool:
    """Whether a run's result (or pixels.json) was probed by the current `PROBE_VERSION` (none recorded: 1)."""
    return result.get("probe_version", 1) >= PROBE_VERSION


def load_runs(run_dir: str | Path) -> dict[str, dict]:
    """Every finished run's JSON in `run_dir`, by key."""
    runs = {}
    for f in sorted(Path(run_dir).glob("*.json")):
        data = json.loads(f.read_text())
        runs[data["key"]] = data
    return runs


def write_json(path: Path, data: dict) -> None:
    """Write atomically (tmp + rename): a killed run never leaves a half-written result."""
    import os

    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _total_steps(cfg: Config) -> int:
    from .train import total_steps_of

    n = cfg.data.limit or 60_000
    return total_steps_of(cfg, n)[1]


# ----------------------------------------------------------------------------------------------------------
# tables


def _stats(values: list[float]) -> dict[str, float]:
    mean = statistics.fmean(values)
    return {"mean": mean, "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarize(
    runs: dict[str, dict], pixels: dict | None, groups: Iterable[str] = GROUPS, *, seeds: int | None = None
) -> dict:
    """results/summary.json: group -> rows of {name, n (seeds done), seeds (planned, capped at `seeds`),
    metric: {mean, std}}.

    A row whose runs are not all done reports the seeds it has (`n` < `seeds`), and none if it has none.
    The architectures group also gets the random-init rows (init of every default I-JEPA seed) and raw pixels."""
    summary: dict[str, list[dict]] = {}
    for g in groups:
        rows = []
        for row in GROUPS[g]:
            n = min(row.seeds, seeds) if seeds else row.seeds
            done = [runs[k] for k in (run_key(row.overrides, s) for s in range(n)) if k in runs]
            rows.append(_row(row.name, done, n))
        if g == "architectures":
            n = min(3, seeds) if seeds else 3
            inits = [dict(runs[k]["init"], probe_version=runs[k].get("probe_version", 1))
                     for k in (run_key((), s) for s in range(n)) if "init" in runs.get(k, {})]  # fmt: skip
            rows.append(_row("random init", inits, n))
            rows.append(_row("raw pixels", [pixels] if pixels else [], 1))
        summary[g] = rows
    return summary


def _row(name: str, done: list[dict], seeds: int) -> dict:
    current = [d for d in done if is_current(d)]
    done = current or done  # never average over two probe protocols: re-run seeds replace the old ones
    row = {"name": name, "n": len(done), "seeds": seeds}
    if not current and done:
        row["stale"] = len(done)  # all probed by an older protocol: flagged in the tables until re-run
    for m in METRICS:
        vals = [d[m] for d in done if m in d and math.isfinite(d[m])]
        if vals:
            row[m] = _stats(vals)
    if done and "train_seconds" in done[0]:
        row["train_minutes"] = round(statistics.fmean(d["train_seconds"] for d in done) / 60, 1)
    return row


def grid_cost(runs: dict[str, dict], groups: Iterable[str] = GROUPS, *, seeds: int | None = None) -> dict:
    """Minutes of training and of probes that the finished runs of each group took on their host, and of the
    whole grid with every shared run counted once ("all"): what a fresh `scripts/reproduce.py` would spend."""
    groups = list(groups)
    cost = {}
    for g in [*groups, "all"]:
        keys = [run_key(o, s) for o, s in planned_runs(groups if g == "all" else [g], seeds=seeds)]
        done = [runs[k] for k in keys if k in runs]
        cost[g] = {"runs": len(done), "planned": len(keys),
                   "train_minutes": round(sum(d.get("train_seconds") or 0 for d in done) / 60, 1),
                   "probe_minutes": round(sum(d.get("eval_seconds") or 0 for d in done) / 60, 1)}  # fmt: skip
    return cost


def cost_table(cost: dict) -> str:
    """`grid_cost` as Markdown: runs done/planned, training and probe minutes per group, then the whole grid."""
    lines = ["### cost", "", "| group | runs | train min | probe min |", "|---|---|---|---|"]
    for g, c in cost.items():
        name = "all groups, each run once" if g == "all" else g
        lines.append(
            f"| {name} | {c['runs']}/{c['planned']} | {c['train_minutes']:.0f} | {c['probe_minutes']:.0f} |"
        )
    return "\n".join([*lines, ""])


def markdown_table(summary: dict) -> str:
    """The summary as Markdown: one table per group, `mean ± std` (over seeds) per metric."""
    heads = {"linear_probe": "linear probe", "knn": "k-NN", "low_shot": "1% low-shot", "rankme": "RankMe",
             "count": "count (Shapes)", "position": "position (Shapes)"}  # fmt: skip
    lines = []
    for g, rows in summary.items():
        lines += [f"### {g}", "", "| row | seeds | " + " | ".join(heads[m] for m in METRICS) + " | train min |",
                  "|---|---|" + "---|" * (len(METRICS) + 1)]  # fmt: skip
        for r in rows:
            cells = [_cell(r.get(m), m) for m in METRICS]
            seeds = f"{r['n']}/{r['seeds']}"
            name = f"{r['name']} {STALE_MARK}" if r.get("stale") else r["name"]
            lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + f" | {r.get('train_minutes', '')} |")
        lines.append("")
    if any(r.get("stale") for rows in summary.values() for r in rows):
        lines += [f"{STALE_MARK} {STALE_NOTE}", ""]
    return "\n".join(lines)


def _cell(stat: dict | None, metric: str) -> str:
    if stat is None:
        return "not run"
    digits = 2 if metric == "rankme" else 1
    if stat["std"] == 0:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
