"""Per-step schedules of the paper: warm-up then cosine learning rate, cosine weight decay, linear momentum.

All are pure functions of the step, so a resumed run recomputes them exactly from its step counter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .ema import momentum_at

__all__ = ["warmup_cosine", "cosine", "Schedules", "param_groups", "set_optimizer_values"]


def warmup_cosine(step: int, total: int, *, warmup: int, start: float, peak: float, final: float) -> float:
    """Linear warm-up from `start` to `peak` over `warmup` steps, then cosine from
    `peak` to `final` at `total`."""
    if total <= 0 or warmup < 0:
        raise ValueError(f"need total > 0 and warmup >= 0, got total={total}, warmup={warmup}")
    if step < warmup:
        return start + (peak - start) * step / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine(step: int, total: int, *, start: float, end: float) -> float:
    """Cosine ramp from `start` (step 0) to `end` (step `total`); the paper's
    weight decay goes 0.04 -> 0.4."""
    if total <= 0:
        raise ValueError(f"total {total} must be positive")
    progress = min(max(step / total, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Schedules:
    """The three schedules of a run, evaluated at a step: `Schedules(...).at(step) -> {lr, wd, momentum}`."""

    total_steps: int
    warmup_steps: int
    lr: float = 1e-3
    start_lr: float = 2e-4
    final_lr: float = 1e-6
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    ema_start: float = 0.996
    ema_end: float = 1.0

    def at(self, step: int) -> dict[str, float]:
        lr = warmup_cosine(
            step,
            self.total_steps,
            warmup=self.warmup_steps,
            start=self.start_lr,
            peak=self.lr,
            final=self.final_lr,
        )
        wd = cosine(step, self.total_steps, start=self.weight_decay, end=self.final_weight_decay)
        m = momentum_at(step, self.total_steps, self.ema_start, self.ema_end)
        return {"lr": lr, "wd": wd, "momentum": m}


def param_groups(model: nn.Module) -> list[dict]:
    """AdamW groups: weight decay on matrices only; none on biases, norms, mask tokens (1-D or smaller)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith("mask_token") else decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False, "weight_decay": 0.0}]


def set_optimizer_values(optimizer: torch.optim.Optimizer, lr: float, wd: float) -> None:
    """Write this step's lr and weight decay into every group (decay only where the group applies it)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["weight_decay"] = wd if group.get("apply_wd", True) else 0.0
