"""The target encoder of I-JEPA is an exponential moving average (EMA) of the context encoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["ema_update", "momentum_at", "init_share", "ema_trace"]


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, for every parameter, in a few fused kernels.

    Buffers (the fixed positions) are not averaged. `momentum` must lie in [0, 1]: 0 copies the online
    weights, 1 freezes the target.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum {momentum} must lie in [0, 1]")
    tgt = list(target.parameters())
    src = list(online.parameters())
    if len(tgt) != len(src):
        raise ValueError(f"target has {len(tgt)} parameter tensors but online has {len(src)}")
    if momentum == 1.0:
        return
    src = [s.detach().to(t.dtype) for t, s in zip(tgt, src)]
    torch._foreach_lerp_(tgt, src, 1.0 - momentum)


def momentum_at(step: int, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """Linear EMA momentum schedule of the paper: `start` at step 0, `end` at the last step."""
    if total_steps <= 0:
        raise ValueError(f"total_steps {total_steps} must be positive")
    frac = min(max(step / total_steps, 0.0), 1.0)
    return start + (end - start) * frac


def init_share(momenta) -> float:
    """Weight of the initial target encoder left in the EMA after updates with these momenta: prod(m_t).

    After T updates, target = prod(m) * target_0 + (a mix of online encoders), so with m rising from 0.996 the
    target stays mostly its random initialisation for the first few hundred steps."""
    share = 1.0
    for m in momenta:
        if not 0.0 <= m <= 1.0:
            raise ValueError(f"EMA momentum {m} must lie in [0, 1]")
        share *= m
    return share


def ema_trace(values: Tensor | Sequence[float], momentum: float | Sequence[float]) -> Tensor:
    """Exponential moving average of a sequence [T]: e_0 = x_0, e_t = m_t * e_{t-1} + (1 - m_t) * x_t,
    the rule of the target encoder applied to numbers; `momentum` is a float or a per-step schedule [T]."""
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    m = torch.as_tensor(momentum, dtype=torch.float64).flatten()
    if m.numel() == 1:
        m = m.expand(len(x))
    if len(m) != len(x):
        raise ValueError(f"momentum schedule has {len(m)} values but the sequence has {len(x)}")
    if len(m) and not bool(((m >= 0) & (m <= 1)).all()):
        raise ValueError(f"momentum must lie in [0, 1], got values in [{m.min():.3g}, {m.max():.3g}]")
    out = torch.empty_like(x)
    e = x[0] if len(x) else None
    for t in range(len(x)):
        e = m[t] * e + (1 - m[t]) * x[t]
        out[t] = e
    return out.float()
