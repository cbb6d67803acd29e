"""The one training loop, on accelerate: a notebook on a CPU and `scripts/pretrain.py` on 16 GPUs run this.

One optimizer step consumes one *global* batch, split over `world_size` processes and `accum` micro-batches.
Every sample carries the key (step, slot, global_batch), so the data order and the masks depend only on the
step: the same config gives the same optimisation on 1, 8 or 16 devices, and a resumed run continues
exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import datetime
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import Config, check_config, config_to_dict
from .data import build_dataset
from .masks import MaskCollator, make_collator
from .methods import IJEPA, MAE, Invariant
from .models import PixelDecoder, Predictor, ProjectionHead, ViTEncoder, attention_kernels, official_init_
from .preempt import Preempted, StopRequests
from .runlock import RunLock
from .schedules import Schedules, param_groups, set_optimizer_values

__all__ = [
    "build_encoder",
    "build_method",
    "build_collator",
    "build_split",
    "build_train_set",
    "split_global_batch",
    "GlobalBatchSampler",
    "KeyedDataset",
    "TrainResult",
    "train",
]


def build_encoder(cfg: Config, in_chans: int) -> ViTEncoder:
    """The ViT of the config: a timm name, or the explicit small size for 28/32-px images."""
    m = cfg.model
    if m.name:
        enc = ViTEncoder(m.name, img_size=cfg.data.image_size, in_chans=in_chans, drop_path_rate=m.drop_path)
    else:
        enc = ViTEncoder(
            img_size=cfg.data.image_size, patch_size=m.patch_size, in_chans=in_chans, embed_dim=m.embed_dim,
            depth=m.depth, num_heads=m.num_heads, drop_path_rate=m.drop_path,
        )  # fmt: skip
    enc.grad_checkpointing = m.grad_checkpointing
    if m.init == "official":
        official_init_(enc)
    return enc


def build_method(cfg: Config, in_chans: int) -> nn.Module:
    """IJEPA, MAE or Invariant on the config's encoder."""
    enc = build_encoder(cfg, in_chans)
    m, name = cfg.model, cfg.method.name
    narrow = dict(predictor_dim=m.predictor_dim, depth=m.predictor_depth, num_heads=m.predictor_heads)
    if name == "ijepa":
        pred = Predictor(enc.grid, enc.embed_dim, **narrow)
        pred.grad_checkpointing = m.grad_checkpointing
        if m.init == "official":
            official_init_(pred)
        return IJEPA(enc, pred, loss=cfg.method.loss, target_mode=cfg.method.target_mode,
                     crop_scale=cfg.method.crop_scale)  # fmt: skip
    if name == "mae":
        decoder = PixelDecoder(enc.grid, enc.embed_dim, enc.patch_size, in_chans, **narrow)
        if m.init == "official":
            official_init_(decoder)
        return MAE(enc, decoder, norm_pix=cfg.method.norm_pix, crop_scale=cfg.method.crop_scale,
                   per_block=cfg.method.pixel_decode == "per_block")  # fmt: skip
    if name == "invariant":
        head = ProjectionHead(enc.embed_dim, hidden_dim=4 * enc.embed_dim, out_dim=128)
        return Invariant(enc, head, temperature=cfg.method.temperature, crop_scale=cfg.data.crop_scale)
    raise ValueError(f"method {name!r} is not one of 'ijepa', 'mae', 'invariant'")


def build_collator(cfg: Config, grid: tuple[int, int]) -> MaskCollator:
    """The mask collator of the config (MAE defaults to 75% random masking, the MAE paper's)."""
    mk = cfg.mask
    if mk.strategy == "multiblock":
        kw = dict(n_targets=mk.n_targets, target_scale=mk.target_scale, target_aspect=mk.target_aspect,
                  context_scale=mk.context_scale, min_context=mk.min_context)  # fmt: skip
        if mk.context_fill != "subsample":  # the default's kwargs stay those of sample_multiblock_grids
            kw["context_fill"] = mk.context_fill
        if mk.context_fill == "fixed":
            kw.update(context_length=mk.context_length, target_length=mk.target_length)
    elif mk.strategy == "random":
        kw = dict(target_ratio=mk.target_ratio)
    elif mk.strategy == "block":
        kw = dict(target_aspect=mk.target_aspect)
    else:
        kw = {}
    return make_collator(mk.strategy, grid, seed=cfg.seed, **kw)


NUISANCE_SEEDS = {True: 0, False: 1}  # the training and the test split get different detail


def build_split(cfg: Config, *, train: bool, limit: int | None = None) -> Dataset:
    """A split of the config's dataset as training and probes read it: the loader's crops for natural images
    (training split), and the config's label-irrelevant detail (`data.nuisance`) where it asks for some."""
    d = cfg.data
    kw = dict(crop_scale=d.crop_scale) if train else {}
    dataset = build_dataset(d.name, root=d.root, train=train, image_size=d.image_size, limit=limit, **kw)
    if d.nuisance != "none":
        from .nuisance import with_nuisance

        dataset = with_nuisance(dataset, d.nuisance, d.nuisance_strength, seed=NUISANCE_SEEDS[train])
    return dataset


def build_train_set(cfg: Config) -> Dataset:
    """The config's training set (its loader's crops for natural images; none for Fashion-MNIST)."""
    return build_split(cfg, train=True, limit=cfg.data.limit)


def split_global_batch(
    global_batch: int, world_size: int, max_device_batch: int | None = None
) -> tuple[int, int]:
    """(per-device micro-batch, accumulation steps) so that micro * accum * world_size == global_batch."""
    if global_batch <= 0:
        raise ValueError(f"optim.global_batch {global_batch} must be positive")
    if global_batch % world_size:
        raise ValueError(f"optim.global_batch {global_batch} is not divisible by the world size {world_size}")
    per_device = global_batch // world_size
    cap = per_device if max_device_batch is None else max_device_batch
    if cap <= 0:
        raise ValueError(f"optim.max_device_batch {max_device_batch} must be positive")
    micro = max(d for d in range(1, min(cap, per_device) + 1) if per_device % d == 0)
    return micro, per_device // micro


class GlobalBatchSampler(Sampler):
    """Yields this process's micro-batches of keys `(index, step, slot, global_batch)`, step after step.

    The epoch's permutation is seeded by (seed, epoch); slot s of the global batch of step t is the sample at
    position t*G + s of that permutation. Rank r, micro-batch a take slots [(a*W + r)*micro, +micro)."""

    def __init__(self, n: int, global_batch: int, *, micro: int, accum: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, start_step: int = 0, total_steps: int) -> None:  # fmt: skip
        if n < global_batch:
            raise ValueError(f"dataset of {n} images is smaller than optim.global_batch {global_batch}")
        self.n, self.g, self.micro, self.accum = n, global_batch, micro, accum
        self.rank, self.world, self.seed = rank, world_size, seed
        self.start, self.total = start_step, total_steps
        self.steps_per_epoch = n // global_batch

    def _perm(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        return torch.randperm(self.n, generator=gen)

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int]]]:
        epoch, perm = -1, None
        for step in range(self.start, self.total):
            if step // self.steps_per_epoch != epoch:
                epoch = step // self.steps_per_epoch
                perm = self._perm(epoch)
            base = (step % self.steps_per_epoch) * self.g
            for a in range(self.accum):
                first = (a * self.world + self.rank) * self.micro
                yield [(int(perm[base + s]), step, s, self.g) for s in range(first, first + self.micro)]

    def __len__(self) -> int:
        return (self.total - self.start) * self.accum


class KeyedDataset(Dataset):
    """Wraps a dataset of (image, label) so that a key (index, step, slot, global_batch) returns
    (image, label, (step, slot, global_batch)) for the mask collator's seeding."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int, int]):
        index, step, slot, g = key
        try:
            image, label = self.dataset[index][:2]
        except Exception as err:  # name the sample: in a DataLoader worker the traceback alone does not
            raise RuntimeError(
                f"training sample {index} ({type(self.dataset).__name__}) could not be loaded at step {step}: "
                f"{type(err).__name__}: {err}"
            ) from err
        return image, label, (step, slot, g)


@dataclass
class TrainResult:
    """What `train` returns: the trained method (unwrapped), per-step logs, the run folder and last step."""

    method: nn.Module
    history: list[dict] = field(default_factory=list)
    run_dir: Path | None = None
    step: int = 0
    init_encoder: nn.Module | None = None


def _resolve_precision(mode: str) -> str:
    if mode == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    if mode not in ("no", "bf16", "fp16"):
        raise ValueError(f"mixed_precision {mode!r} is not one of 'auto', 'no', 'bf16', 'fp16'")
    return mode


def _init_elastic_process_group(backend: str, timeout: datetime.timedelta) -> None:
    """Under torchrun (and `accelerate launch`, which uses it), start the default process group with store keys
    private to this restart attempt. After an elastic restart (`--max-restarts`) the new processes share the
    launcher's key-value store with the dead ones, and gloo reads each peer's listening address from it: without
    a per-attempt prefix a process may read the address a dead process left, and fail to connect."""
    import os

    import torch.distributed as dist

    env = os.environ
    if (
        "TORCHELASTIC_RESTART_COUNT" not in env
        or int(env.get("WORLD_SIZE", "1")) < 2
        or dist.is_initialized()
    ):
        return
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    hosted_by_launcher = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), world,
                          is_master=not hosted_by_launcher and rank == 0, timeout=timeout)  # fmt: skip
    store = dist.PrefixStore(f"jepa_lite/attempt_{env['TORCHELASTIC_RESTART_COUNT']}", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)


def make_accelerator(cfg: Config):
    """accelerate's Accelerator for the config's precision. Without CUDA, a multi-process launch (torchrun or
    `accelerate launch`, WORLD_SIZE > 1) must ask for CPU explicitly, or each process would train alone."""
    import os

    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    # a collective that waits longer than dist_timeout for a lost process fails instead of hanging for hours
    timeout = InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=cfg.dist_timeout))
    _init_elastic_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout.timeout)
    return Accelerator(
        mixed_precision=_resolve_precision(cfg.mixed_precision), cpu=cpu, kwargs_handlers=[timeout]
    )


def total_steps_of(cfg: Config, n_images: int) -> tuple[int, int, int]:
    """(steps per epoch, total optimizer steps, warm-up steps) of a config on a dataset of n images."""
    spe = n_images // cfg.optim.global_batch
    if spe == 0:
        raise ValueError(
            f"dataset of {n_images} images is smaller than optim.global_batch {cfg.optim.global_batch}"
        )
    total = max(1, round(cfg.optim.epochs * spe))
    if cfg.optim.max_steps is not None:
        if cfg.optim.max_steps <= 0:
            raise ValueError(f"optim.max_steps {cfg.optim.max_steps} must be positive")
        total = min(total, cfg.optim.max_steps)
    warmup = min(round(cfg.optim.warmup_epochs * spe), total)
    return spe, total, warmup


def train(
    cfg: Config,
    *,
    dataset: Dataset | None = None,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    accelerator=None,
    progress: bool = True,
    stop_after: int | None = None,
    on_step: Callable[[int, nn.Module, dict], None] | None = None,
) -> TrainResult:
    """Train the config's method; logs every step to `run_dir/metrics.csv` if a run folder is given.

    `resume`: a checkpoint folder, or 'auto' for the latest complete one in run_dir (none -> fresh start).
    `stop_after`: return after this many steps of *this* call (the schedules still span the whole run).
    `on_step(step, method, row)`: called on the main process after each optimizer step (notebook probes)."""
    from accelerate.utils import set_seed

    check_config(cfg)
    if str(resume) == "auto" and run_dir is None:
        raise ValueError("resume='auto' needs run_dir, the run folder to look for checkpoints in")
    acc = accelerator or make_accelerator(cfg)
    set_seed(cfg.seed)  # identical initial weights on every process
    if dataset is None:
        dataset = build_train_set(cfg)
    in_chans = dataset[0][0].shape[0]
    method = build_method(cfg, in_chans)
    init_encoder = copy.deepcopy(method.eval_encoder).eval() if acc.is_main_process else None
    collator = build_collator(cfg, method.eval_encoder.grid)
    micro, accum = split_global_batch(cfg.optim.global_batch, acc.num_processes, cfg.optim.max_device_batch)
    spe, total, warmup = total_steps_of(cfg, len(dataset))
    o = cfg.optim
    sched = Schedules(
        total, warmup, o.lr, o.start_lr, o.final_lr, o.weight_decay, o.final_weight_decay, *o.ema
    )
    fused = acc.device.type == "cuda"
    optimizer = torch.optim.AdamW(param_groups(method), lr=o.lr, betas=o.betas, fused=fused)
    if (
        cfg.compile
    ):  # in place, so state-dict keys stay the same; fixed masks compile once, others are dynamic
        method.compile(dynamic=cfg.mask.context_fill != "fixed")
    method, optimizer = acc.prepare(method, optimizer)
    core = acc.unwrap_model(method)

    run_dir = Path(run_dir) if run_dir is not None else None
    lock = RunLock(run_dir) if run_dir is not None and acc.is_main_process else None
    stop = StopRequests(run_dir if acc.is_main_process else None)  # one process watches the stop file
    bar = writer = None
    if lock is not None:
        lock.acquire()  # before anything is read or written: another live run in this folder stops us here
    try:
        stop.__enter__()
        stop.clear_file()  # a request left over from before this run started is not for it
        start = 0
        if resume is not None:
            ckpt = latest_checkpoint(run_dir) if str(resume) == "auto" else Path(resume)
            if ckpt is not None:
                start = load_checkpoint(acc, ckpt)["step"]
                if acc.is_main_process and progress:
                    print(f"resumed from {ckpt} at step {start}")
        if run_dir is not None and acc.is_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
        history = _read_history(run_dir, start) if run_dir is not None and start > 0 else []

        sampler = GlobalBatchSampler(len(dataset), o.global_batch, micro=micro, accum=accum, rank=acc.process_index,
                                     world_size=acc.num_processes, seed=cfg.seed, start_step=start, total_steps=total)  # fmt: skip
        nw = cfg.data.num_workers
        loader = DataLoader(KeyedDataset(dataset), batch_sampler=sampler, collate_fn=collator, num_workers=nw,
                            pin_memory=fused, persistent_workers=nw > 0, prefetch_factor=4 if nw > 0 else None)  # fmt: skip
        rng = torch.get_rng_state()
        batches = iter(loader)  # draws the loader's base seed from the global RNG
        if (
            start > 0
        ):  # the checkpoint's RNG state already holds that draw: crops and drop-path resume exactly
            torch.set_rng_state(rng)
        end = total if stop_after is None else min(total, start + stop_after)
        bar = tqdm(range(start, end), initial=start, total=total, disable=not (progress and acc.is_main_process),
                   desc=f"{cfg.method.name} {cfg.name}", dynamic_ncols=True)  # fmt: skip
        writer = (
            _CsvLog(run_dir / "metrics.csv", keep_until=start)
            if run_dir is not None and acc.is_main_process
            else None
        )
        per_image_flops = _step_flops_per_image(cfg)
        device_name = torch.cuda.get_device_name(acc.device) if acc.device.type == "cuda" else "cpu"
        method.train()
        step = start
        for step in bar:
            t0 = time.perf_counter()
            vals = sched.at(step)
            set_optimizer_values(optimizer, vals["lr"], vals["wd"])
            loss_sum = torch.zeros((), device=acc.device)
            for a in range(accum):
                batch = next(batches).to(acc.device, non_blocking=True)
                sync = contextlib.nullcontext() if a == accum - 1 else acc.no_sync(method)
                with sync:
                    with acc.autocast(), attention_kernels(acc.device):
                        loss, _ = method(batch)
                    acc.backward(loss / accum)
                loss_sum += loss.detach().float()
            if o.grad_clip:
                acc.clip_grad_norm_(method.parameters(), o.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            core.update_target(vals["momentum"])
            # the loss, averaged over processes, and whether any process was asked to stop: one reduction
            asked = 1.0 if stop.reason() else 0.0
            both = acc.reduce(torch.stack([loss_sum / accum, loss_sum.new_tensor(asked)]), reduction="sum")
            loss_val, stop_now = (both[0] / acc.num_processes).item(), float(both[1]) > 0
            if not math.isfinite(loss_val):
                bad_input = (
                    "" if bool(torch.isfinite(batch.images).all()) else " (the batch holds NaN/inf pixels)"
                )
                raise FloatingPointError(
                    f"loss is {loss_val} at step {step}{bad_input}; stopping (no checkpoint is written after it: "
                    f"the newest one in {run_dir} is intact)"
                )
            dt = time.perf_counter() - t0
            row = {"step": step, "loss": loss_val, **vals, "img_per_s": o.global_batch / dt, "time": dt,
                   **_throughput(o.global_batch / acc.num_processes / dt, per_image_flops, device_name)}  # fmt: skip
            history.append(row)
            if acc.is_main_process:
                if writer:
                    writer.write(row)
                bar.set_postfix(
                    loss=f"{loss_val:.4f}",
                    lr=f"{vals['lr']:.2e}",
                    refresh=False,
                    **{"img/s/dev": f"{row['img_per_s_device']:.0f}"},
                    **({"mfu": f"{100 * row['mfu']:.1f}%"} if math.isfinite(row["mfu"]) else {}),
                )
                if on_step is not None:
                    on_step(step, core, row)
            done = step + 1
            if lock is not None:
                lock.heartbeat()
            if stop_now and done < total:
                ckpt = None
                if run_dir is not None:
                    ckpt = save_checkpoint(acc, run_dir, done, {"config": config_to_dict(cfg)}, cfg.keep_last)
                reason = stop.reason() or "another process was asked to stop"
                stop.clear_file()
                raise Preempted(done, ckpt, reason)
            if run_dir is not None and cfg.ckpt_every and done % cfg.ckpt_every == 0 and done < total:
                save_checkpoint(acc, run_dir, done, {"config": config_to_dict(cfg)}, cfg.keep_last)
        step = end
        if run_dir is not None:
            save_checkpoint(acc, run_dir, step, {"config": config_to_dict(cfg)}, cfg.keep_last)
        stop.clear_file()  # a request that came too late to matter: the run is complete
    except Exception as err:
        if acc.num_processes > 1 and _lost_a_process(err):
            last = latest_checkpoint(run_dir, verify=False) if run_dir is not None else None
            msg = (
                f"process {acc.process_index} of {acc.num_processes} lost contact with the others at step {step}: "
                f"another process died or its node was lost ({type(err).__name__}: {str(err)[:300]}). The newest "
                f"complete checkpoint is {last or '(none)'}: restart the job with --resume auto"
            )
            # said now, while SIGTERM is still caught: the launcher terminates the survivors right after a death,
            # often before the traceback below would be printed
            print(msg, file=sys.stderr, flush=True)
            raise RuntimeError(msg) from err
        raise
    finally:
        stop.__exit__()
        if bar is not None:
            bar.close()
        if writer:
            writer.close()
        if lock is not None:
            lock.release()
    return TrainResult(core, history, run_dir, step, init_encoder)


def _lost_a_process(err: BaseException) -> bool:
    """Did a collective fail because another process is gone (gloo/NCCL errors, a collective timeout)?"""
    import torch.distributed as dist

    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = str(err).lower()
    return any(
        s in text for s in ("connection closed by peer", "connection reset", "gloo", "nccl", "timed out")
    )


def _step_flops_per_image(cfg: Config) -> float:
    """Analytic model FLOPs per image of one I-JEPA step at the collator's mean token counts (nan for MAE and
    Invariant, which flops.py does not model)."""
    if cfg.method.name != "ijepa":
        return math.nan
    from .flops import ijepa_step_flops

    return ijepa_step_flops(cfg).total


def _throughput(img_per_s_device: float, flops_per_image: float, device_name: str) -> dict[str, float]:
    """Per-device images/s, model TFLOP/s and MFU (nan where the device's peak or the FLOPs are unknown)."""
    from .flops import mfu

    flops_per_s = img_per_s_device * flops_per_image
    util = mfu(flops_per_s, device_name) if math.isfinite(flops_per_s) else None
    return {"img_per_s_device": img_per_s_device, "tflops": flops_per_s / 1e12,
            "mfu": math.nan if util is None else util}  # fmt: skip


class _CsvLog:
    """Per-step metrics CSV; on resume, rows after the checkpoint's step are dropped (they will be redone)."""

    FIELDS = [
        "step",
        "loss",
        "lr",
        "wd",
        "momentum",
        "img_per_s",
        "time",
        "img_per_s_device",
        "tflops",
        "mfu",
    ]

    def __init__(self, path: Path, keep_until: int) -> None:
        rows = _read_rows(path, keep_until)
        tmp = path.with_name(path.name + ".tmp")  # rewritten beside and renamed: a crash never loses rows
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.FIELDS)
            writer.writeheader()
            writer.writerows({k: r.get(k, "") for k in self.FIELDS} for r in rows)
        os.replace(tmp, path)
        self.file = open(path, "a", newline="")  # noqa: SIM115 - closed by close()
        self.writer = csv.DictWriter(self.file, fieldnames=self.FIELDS)

    def write(self, row: dict) -> None:
        self.writer.writerow({k: row[k] for k in self.FIELDS})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _read_rows(path: Path, keep_until: int) -> list[dict]:
    if keep_until <= 0 or not path.is_file():
        return []
    with open(path, newline="") as f:  # a row cut short by a crash has missing (None) fields: dropped
        return [r for r in csv.DictReader(f) if None not in r.values() and int(r["step"]) < keep_until]


def _read_history(run_dir: Path, keep_until: int) -> list[dict]:
    rows = _read_rows(run_dir / "metrics.csv", keep_until)
    return [{k: (int(v) if k == "step" else float(v or "nan")) for k, v in r.items()} for r in rows]
