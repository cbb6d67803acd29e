"""The one training loop, on accelerate: a notebook on a CPU and `scripts/pretrain.py` on 16 GPUs run this.

One optimizer step consumes one *global* batch, split over `world_size` processes and `accum` micro-batches
(batches.py). Every sample carries the key (step, slot, global_batch), so the data order and the masks depend
only on the step: the same config gives the same optimisation on 1, 8 or 16 devices, and a resumed run
continues exactly where it stopped.

    setup -> (resume) -> for each step: step() -> log -> checkpoint or stop -> final checkpoint
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .batches import GlobalBatchSampler, KeyedDataset, split_global_batch
from .build import build_collator, build_method, build_train_set, make_accelerator, total_steps_of
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import Config, check_config, config_to_dict
from .flops import ijepa_step_flops
from .models import attention_kernels
from .preempt import Preempted, StopRequests
from .runlock import RunLock
from .schedules import Schedules, param_groups, set_optimizer_values
from .steplog import StepLogger

__all__ = ["TrainResult", "train"]


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


def _step(run: _Run, batches, step: int, values: dict, stop: StopRequests) -> tuple[float, bool]:
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
    asked = 1.0 if stop.reason() else 0.0
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
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    accelerator: Accelerator | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    on_step: Callable[[int, nn.Module, dict], None] | None = None,
) -> TrainResult:
    """Train the config's method; logs every step to `run_dir/metrics.csv` if a run folder is given.

    `resume`: a checkpoint folder, or 'auto' for the latest complete one in run_dir (none -> fresh start).
    `stop_after`: return after this many steps of *this* call (the schedules still span the whole run).
    `on_step(step, method, row)`: called on the main process after each optimizer step (notebook probes)."""
    check_config(cfg)
    if str(resume) == "auto" and run_dir is None:
        raise ValueError("resume='auto' needs run_dir, the run folder to look for checkpoints in")
    run = _setup(cfg, dataset, accelerator)
    acc, main = run.acc, run.acc.is_main_process
    run_dir = Path(run_dir) if run_dir is not None else None
    meta = {"config": config_to_dict(cfg)}
    step = 0
    with contextlib.ExitStack() as stack:
        # the lock first: another live run in this folder stops us before anything is read or written
        lock = stack.enter_context(RunLock(run_dir)) if run_dir is not None and main else None
        stop = stack.enter_context(StopRequests(run_dir if main else None))  # one process watches the file
        stop.clear_file()  # a request left over from before this run started is not for it
        if lock is not None:
            (run_dir / "config.yaml").write_text(yaml.safe_dump(meta["config"], sort_keys=False))
        start = _resume(run, run_dir, resume, progress)
        batches = _batches(run, start)
        end = run.total if stop_after is None else min(run.total, start + stop_after)
        where = dict(main=main, progress=progress, device=acc.device, num_processes=acc.num_processes)
        log = StepLogger(
            cfg, run_dir, start=start, end=end, total=run.total, flops_per_image=run.flops_per_image, **where
        )
        stack.callback(log.close)

        def checkpoint(done: int) -> Path | None:
            return save_checkpoint(acc, run_dir, done, meta, cfg.keep_last) if run_dir is not None else None

        try:
            _loop(run, batches, log, stop, lock=lock, checkpoint=checkpoint, on_step=on_step)
            step = end
            checkpoint(step)
            stop.clear_file()  # a request that came too late to matter: the run is complete
        except Exception as err:
            if acc.num_processes > 1 and _lost_a_process(err):
                reached = log.history[-1]["step"] + 1 if log.history else start
                raise _lost_contact(acc, run_dir, reached, err) from err
            raise
    return TrainResult(run.core, log.history, run_dir, step)


def _loop(run: _Run, batches, log: StepLogger, stop: StopRequests, *, lock, checkpoint, on_step) -> None:
    """The steps of this call, each: schedules, step, log, callbacks, heartbeat, then a checkpoint every
    `ckpt_every` steps or, when a stop was asked for, a checkpoint and `Preempted`."""
    cfg, main = run.cfg, run.acc.is_main_process
    run.method.train()
    for step in log:
        t0 = time.perf_counter()
        values = run.sched.at(step)
        loss, stop_now = _step(run, batches, step, values, stop)
        row = log.log(step, loss, values, time.perf_counter() - t0)
        if main and on_step is not None:
            on_step(step, run.core, row)
        done = step + 1
        if lock is not None:
            lock.heartbeat()
        if stop_now and done < run.total:
            ckpt = checkpoint(done)
            reason = stop.reason() or "another process was asked to stop"
            stop.clear_file()
            raise Preempted(done, ckpt, reason)
        if cfg.ckpt_every and done % cfg.ckpt_every == 0 and done < run.total:
            checkpoint(done)


def _resume(run: _Run, run_dir: Path | None, resume: str | Path | None, progress: bool) -> int:
    """Load the checkpoint `resume` names (or, for 'auto', the run's latest complete one, saying which on
    the main process); the step to start from."""
    if resume is None:
        return 0
    main = run.acc.is_main_process
    if str(resume) == "auto":
        ckpt = latest_checkpoint(run_dir)
        if main:
            found = (
                f"resuming from {ckpt}" if ckpt else f"no complete checkpoint in {run_dir}: starting fresh"
            )
            print(f"--resume auto: {found}", flush=True)
        if ckpt is None:
            return 0
    else:
        ckpt = Path(resume)
    start = load_checkpoint(run.acc, ckpt)["step"]
    if main and progress:
        print(f"resumed from {ckpt} at step {start}")
    return start


def _lost_a_process(err: BaseException) -> bool:
    """Did a collective fail because another process is gone (gloo/NCCL errors, a collective timeout)?"""
    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = str(err).lower()
    return any(
        s in text for s in ("connection closed by peer", "connection reset", "gloo", "nccl", "timed out")
    )


def _lost_contact(acc: Accelerator, run_dir: Path | None, step: int, err: BaseException) -> RuntimeError:
    """The error a surviving process raises when another died: where to resume from. Printed at once, while
    SIGTERM is still caught: the launcher terminates the survivors right after a death, often before a
    traceback would be printed."""
    last = latest_checkpoint(run_dir, verify=False) if run_dir is not None else None
    msg = (
        f"process {acc.process_index} of {acc.num_processes} lost contact with the others at step {step}: "
        f"another process died or its node was lost ({type(err).__name__}: {str(err)[:300]}). The newest "
        f"complete checkpoint is {last or '(none)'}: restart the job with --resume auto"
    )
    print(msg, file=sys.stderr, flush=True)
    return RuntimeError(msg)
