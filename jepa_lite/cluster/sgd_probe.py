"""A linear probe that scales: mini-batch SGD over stored features, for ImageNet-size feature sets.

The course's probe (`evaluate.linear_probe`) fits a multinomial logistic regression to convergence with
full-batch L-BFGS: exact and seed-free, but every iteration touches every feature, and 1.28M x 1280 features
need the whole set in memory per step. Here the same model (standardised features, a linear layer,
cross-entropy + wd/2 * ||W||^2) is trained on mini-batches with momentum SGD or LARS (layer-wise adaptive
rates, You et al. 2017: the I-JEPA paper's ImageNet probe, appendix A.2, after MAE), under a cosine or a step
learning-rate schedule, the features streamed in blocks from a memory map (`feature_store.open_store`) to the
device. On a small problem both reach the same accuracy (tests/test_eval_at_scale.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from timm.optim import Lars
from torch import Tensor, nn
from tqdm.auto import tqdm

BLOCK = 65_536  # rows moved to the device at a time


def _rows(x: np.ndarray | Tensor, start: int, stop: int, device: torch.device) -> Tensor:
    block = x[start:stop]
    block = torch.from_numpy(np.array(block)) if isinstance(block, np.ndarray) else block
    return block.to(device=device, dtype=torch.float32)


def streamed_moments(x: np.ndarray | Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and std `[D]` of features `[N, D]` read block by block (float64 sums)."""
    n, total, squares = len(x), 0.0, 0.0
    for start in range(0, n, BLOCK):
        block = _rows(x, start, start + BLOCK, device).double()
        total, squares = total + block.sum(0), squares + block.square().sum(0)
    mean = total / n
    std = (squares / n - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
    return mean.float(), std.float()


def _standardised(x, mean: Tensor, std: Tensor, device: torch.device) -> Tensor:
    """All of `x` on `device`, standardised, float32: ImageNet's 6.5 GB of ViT-H features fit on one GPU."""
    out = torch.empty(len(x), x.shape[1], device=device)
    for start in range(0, len(x), BLOCK):
        out[start : start + BLOCK] = (_rows(x, start, start + BLOCK, device) - mean) / std
    return out


def _optimizer(model: nn.Linear, name: str, lr: float, momentum: float, weight_decay: float):
    """Momentum SGD or LARS; weight decay and LARS's trust ratio on the weight only, as in MAE's probe."""
    groups = [
        dict(params=[model.weight], weight_decay=weight_decay, always_adapt=True),
        dict(params=[model.bias], weight_decay=0.0, always_adapt=False),
    ]
    if name == "sgd":
        return torch.optim.SGD(
            [{k: v for k, v in g.items() if k != "always_adapt"} for g in groups], lr, momentum
        )
    if name == "lars":
        return Lars(groups, lr=lr, momentum=momentum)
    raise ValueError(f"optimizer={name!r} must be 'sgd' or 'lars'")


def lr_at(step: int, total: int, lr: float, schedule: str, steps_per_decay: int) -> float:
    """Cosine from `lr` to 0 over `total` steps, or `lr` divided by 10 every `steps_per_decay` steps."""
    if schedule == "cosine":
        return 0.5 * lr * (1 + math.cos(math.pi * step / total))
    if schedule == "step":
        return lr * 0.1 ** (step // steps_per_decay)
    raise ValueError(f"schedule={schedule!r} must be 'cosine' or 'step'")


def sgd_linear_probe(
    train_x: np.ndarray | Tensor,
    train_y: np.ndarray | Tensor,
    test_x: np.ndarray | Tensor,
    test_y: np.ndarray | Tensor,
    *,
    epochs: int = 100,
    batch_size: int = 1024,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    optimizer: str = "sgd",
    schedule: str = "cosine",
    decay_epochs: int = 15,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> float:
    """Test accuracy (%) of a linear classifier trained by SGD on standardised features `[N, D]`.

    Loss: mean cross-entropy + wd/2 * ||W||^2 (the bias is not decayed); `optimizer` 'sgd' (momentum) or
    'lars'; learning rate `lr` on a 'cosine' schedule to zero over `epochs` or a 'step' schedule (divided by
    10 every `decay_epochs`); zero initialisation; batches drawn with `seed`.
    Features and labels may be memory maps; the training set is standardised by its own streamed moments."""
    if epochs < 1 or batch_size < 1 or not lr > 0 or weight_decay < 0:
        raise ValueError(f"epochs={epochs}, batch_size={batch_size} must be >= 1, lr={lr} > 0, wd >= 0")
    device = torch.device(device)
    mean, std = streamed_moments(train_x, device)
    x = _standardised(train_x, mean, std, device)  # [N, D]
    y = torch.as_tensor(np.array(train_y), device=device).long()  # [N]
    num_classes = int(y.max()) + 1
    model = nn.Linear(x.shape[1], num_classes, device=device)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    opt = _optimizer(model, optimizer, lr, momentum, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = epochs * steps_per_epoch
    generator = torch.Generator(device=device).manual_seed(seed)
    bar = tqdm(total=total, desc="SGD probe", disable=not progress)
    for epoch in range(epochs):
        order = torch.randperm(len(x), device=device, generator=generator)
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, lr, schedule, steps_per_decay=decay_epochs * steps_per_epoch)
            idx = order[i * batch_size : (i + 1) * batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])  # the optimizer adds wd * W to the gradient
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update()
    bar.close()
    del x
    correct = 0
    with torch.no_grad():
        labels = torch.as_tensor(np.array(test_y), device=device).long()
        for start in range(0, len(test_x), BLOCK):
            logits = model((_rows(test_x, start, start + BLOCK, device) - mean) / std)
            correct += (logits.argmax(1) == labels[start : start + BLOCK]).sum().item()
    return 100.0 * correct / len(test_x)


__all__ = ["lr_at", "sgd_linear_probe", "streamed_moments"]
