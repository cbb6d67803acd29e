"""The one training loop, on accelerate: a notebook on a CPU and `scripts/pretrain.py` on 16 GPUs run this.

One optimizer step consumes one *global* batch, split over `world_size` processes and `accum` micro-batches
(batches.py). Every sample carries the key (step, slot, global_batch), so the data order and the masks depend
only on the step: the same config gives the same optimisation on 1, 8 or 16 devices, and a resumed run
continues exactly where it stopped.

    setup -> hooks.open (resume) -> for each step: step() -> log -> hooks.after_step -> hooks.close

A run kept in a folder (checkpoints, `--resume auto`, preemption, one run per folder) plugs in through
`RunHooks`, implemented by `jepa_lite.cluster.run_folder.RunFolder`; nothing here imports the cluster layer.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .batches import GlobalBatchSampler, KeyedDataset, split_global_batch
from .build import build_collator, build_method, build_train_set, make_accelerator, total_steps_of
from .config import Config, check_config
from .flops import ijepa_step_flops
from .models import attention_kernels
from .schedules import Schedules, param_groups, set_optimizer_values
from .steplog import StepLogger

__all__ = ["RunHooks", "TrainResult", "train"]


class RunHooks:
    """Where a run lives, as the one loop sees it: five calls, made on every process, and `run_dir`, where
    the loop writes metrics.csv. This default keeps nothing on disk, leaves signals alone and is never asked
    to stop: a notebook's run. `jepa_lite.cluster.run_folder.RunFolder` keeps a run in a folder (a lock,
    `--resume auto`, checkpoints, preemption, a clear message when another process dies) through the same
    calls; the loop itself stays the same."""

    run_dir: Path | None = None  # metrics.csv goes here, and TrainResult names it

    def open(self, acc: Accelerator, cfg: Config, stack: contextlib.ExitStack) -> int:
        """Before the first step, the method and optimizer prepared; enters what it holds into `stack`.
        Returns the step to start from."""
        return 0

    def stop_requested(self) -> bool:
        """Was this process asked to stop? (`_step` reduces it over processes with the loss)"""
        return False

    def after_step(self, done: int, total: int, stop: bool) -> None:
        """After `done` of `total` steps; `stop`: some process was asked to stop. May raise to end the run."""

    def close(self, done: int) -> None:
        """After the last step of this call, `done` steps in all."""

    def failed(self, err: Exception, reached: int) -> Exception | None:
        """An error ended the loop after `reached` steps: an error to raise in its place, or None."""
        return None


@dataclass
class TrainResult:
    """What `train` returns: the trained method (unwrapped), per-step logs, the run folder and last step.
    (The encoder a run started from: `build.initial_encoder(cfg, in_chans)`.)"""

    method: nn.Module
    history: list[dict] = field(default_factory=list)
    run_dir: Path | None = None
    step: int = 0


@dataclass
class _Run:
    """The objects one run's steps share, built by `_setup`."""

    cfg: Config
    acc: Accelerator
    dataset: Dataset
    method: nn.Module  # wrapped by accelerate (DDP on several processes)
    core: nn.Module  # the method itself: its update_target and its encoders
    optimizer: torch.optim.Optimizer
    sched: Schedules
    collator: Callable
    micro: int
    accum: int
    total: int
    flops_per_image: float  # analytic model FLOPs of one step per image (nan for methods flops.py lacks)


def _setup(cfg: Config, dataset: Dataset | None, accelerator: Accelerator | None) -> _Run:
    """Seed, then build the data, method, optimizer and schedules: this order fixes the initial weights."""
    acc = accelerator or make_accelerator(cfg)
    set_seed(cfg.seed)  # identical initial weights on every process
    if dataset is None:
        dataset = build_train_set(cfg)
    method = build_method(cfg)
    if (channels := dataset[0][0].shape[0]) != method.eval_encoder.in_chans:
        raise ValueError(f"the dataset's images have {channels} channels, data.name={cfg.data.name!r} has "
                         f"{method.eval_encoder.in_chans}")  # fmt: skip
    collator = build_collator(cfg, method.eval_encoder.grid)
    flops = ijepa_step_flops(cfg, collator=collator).total if cfg.method.name == "ijepa" else math.nan
    micro, accum = split_global_batch(cfg.optim.global_batch, acc.num_processes, cfg.optim.max_device_batch)
    _, total, warmup = total_steps_of(cfg, len(dataset))
    o = cfg.optim
    sched = Schedules(
        total_steps=total, warmup_steps=warmup, lr=o.lr, start_lr=o.start_lr, final_lr=o.final_lr,
        weight_decay=o.weight_decay, final_weight_decay=o.final_weight_decay, ema_start=o.ema[0],
        ema_end=o.ema[1],
    )  # fmt: skip
    optimizer = torch.optim.AdamW(
        param_groups(method), lr=o.lr, betas=o.betas, fused=acc.device.type == "cuda"
    )
    # compiled in place, so state-dict keys stay the same; fixed masks compile once, others are dynamic
    if cfg.compile:
        method.compile(dynamic=cfg.mask.context_fill != "fixed")
    method, optimizer = acc.prepare(method, optimizer)
    return _Run(
        cfg=cfg, acc=acc, dataset=dataset, method=method, core=acc.unwrap_model(method), optimizer=optimizer,
        sched=sched, collator=collator, micro=micro, accum=accum, total=total, flops_per_image=flops,
    )  # fmt: skip


def _batches(run: _Run, start: int):
    """The micro-batches of steps start, start+1, ...: this process's share of each global batch."""
    cfg, acc = run.cfg, run.acc
    sampler = GlobalBatchSampler(
        len(run.dataset),
        cfg.optim.global_batch,
        micro=run.micro,
        accum=run.accum,
        rank=acc.process_index,
        world_size=acc.num_processes,
        seed=cfg.seed,
        start_step=start,
        total_steps=run.total,
    )
    nw = cfg.data.num_workers
    loader = DataLoader(
        KeyedDataset(run.dataset),
        batch_sampler=sampler,
        collate_fn=run.collator,
        num_workers=nw,
        pin_memory=acc.device.type == "cuda",
        persistent_workers=nw > 0,
        prefetch_factor=4 if nw > 0 else None,
    )
    rng = torch.get_rng_state()
    batches = iter(loader)  # draws the loader's base seed from the global RNG
    if start > 0:  # the checkpoint's RNG state already holds that draw: crops and drop-path resume exactly
        torch.set_rng_state(rng)
    return batches


def _step(run: _Run, batches, step: int, values: dict, hooks: RunHooks) -> tuple[float, bool]:
    """One optimizer step over `accum` micro-batches, then the EMA update of the target encoder. Returns the
    loss averaged over processes and whether any process was asked to stop (one reduction for both)."""
    acc, method = run.acc, run.method
    set_optimizer_values(run.optimizer, values["lr"], values["wd"])
    loss_sum = torch.zeros((), device=acc.device)
    for a in range(run.accum):
        batch = next(batches).to(acc.device, non_blocking=True)
        sync = contextlib.nullcontext() if a == run.accum - 1 else acc.no_sync(method)
        with sync:
            with acc.autocast(), attention_kernels(acc.device):
                loss, _ = method(batch)
            acc.backward(loss / run.accum)
        loss_sum += loss.detach().float()
    if run.cfg.optim.grad_clip:
        acc.clip_grad_norm_(method.parameters(), run.cfg.optim.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.core.update_target(values["momentum"])
    asked = 1.0 if hooks.stop_requested() else 0.0
    both = acc.reduce(torch.stack([loss_sum / run.accum, loss_sum.new_tensor(asked)]), reduction="sum")
    loss_val = (both[0] / acc.num_processes).item()
    if not math.isfinite(loss_val):
        bad_input = "" if bool(torch.isfinite(batch.images).all()) else " (the batch holds NaN/inf pixels)"
        raise FloatingPointError(
            f"loss is {loss_val} at step {step}{bad_input}; stopping (no checkpoint is "
            "written after it: the run folder's newest one is intact)"
        )
    return loss_val, float(both[1]) > 0


def train(
    cfg: Config,
    *,
    dataset: Dataset | None = None,
    hooks: RunHooks | None = None,
    accelerator: Accelerator | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    on_step: Callable[[int, nn.Module, dict], None] | None = None,
) -> TrainResult:
    """Train the config's method; `hooks=RunFolder(run_dir, resume="auto")` keeps the run in a folder.

    `stop_after`: return after this many steps of *this* call (the schedules still span the whole run).
    `on_step(step, method, row)`: called on the main process after each optimizer step (notebook probes)."""
    check_config(cfg)
    hooks = hooks or RunHooks()
    run = _setup(cfg, dataset, accelerator)
    acc = run.acc
    with contextlib.ExitStack() as stack:
        start = hooks.open(acc, cfg, stack)
        batches = _batches(run, start)
        end = run.total if stop_after is None else min(run.total, start + stop_after)
        log = StepLogger(
            cfg, hooks.run_dir, start=start, end=end, total=run.total, flops_per_image=run.flops_per_image,
            main=acc.is_main_process, progress=progress, device=acc.device, num_processes=acc.num_processes,
        )  # fmt: skip
        stack.callback(log.close)
        try:
            _loop(run, batches, log, hooks, on_step=on_step)
            hooks.close(end)
        except Exception as err:
            reached = log.history[-1]["step"] + 1 if log.history else start
            if (replacement := hooks.failed(err, reached)) is not None:
                raise replacement from err
            raise
    return TrainResult(run.core, log.history, hooks.run_dir, end)


def _loop(run: _Run, batches, log: StepLogger, hooks: RunHooks, *, on_step) -> None:
    """The steps of this call, each: schedules, step, log, the notebook's callback, then the run's hooks
    (a checkpoint every `ckpt_every` steps, or a checkpoint and a stop when one was asked for)."""
    main = run.acc.is_main_process
    run.method.train()
    for step in log:
        t0 = time.perf_counter()
        values = run.sched.at(step)
        loss, stop = _step(run, batches, step, values, hooks=hooks)
        row = log.log(step, loss, values, time.perf_counter() - t0)
        if main and on_step is not None:
            on_step(step, run.core, row)
        hooks.after_step(step + 1, run.total, stop)
