"""The collapse lab of notebook 10: what keeps a JEPA out of its trivial solution (every image mapped to one
vector, which the predictor then outputs for a loss of zero), watched in a minute of CPU.

A small ViT at a high learning rate finds the trivial solution within a few dozen steps when nothing stops it.
Each variant is the same model and data with one change (an EMA teacher, no teacher, no teacher but SIGReg),
trained by the one training loop; every `every` steps the encoder that defines the targets
(`method.eval_encoder`) encodes a fixed batch of images, and two label-free monitors of its pooled features
are recorded: RankMe (1 = every image the same direction) and the feature std (0 = collapsed).

    logs, methods = run_lab({"EMA": ["method.target_mode=ema"], "none": ["method.target_mode=online"]},
                            steps=400, every=10, data=train_set, probe_images=images)
    logs["none"]["rankme"]   # RankMe every 10 steps; methods["none"] is the trained method
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..core.config import load_config
from ..core.features import feature_std, rankme
from ..core.train import train

# The lab's model and optimiser: a 64-wide, 2-deep ViT, a 1-deep predictor, batch 64, lr 3e-3 without warm-up.
# The EMA starts at 0.98 so that the teacher leaves its random initialisation within a few hundred steps
# (notebook 04 prints the share left: about 2%), which a fair comparison with the teacher-free runs needs.
LAB = (
    "model.embed_dim=64",
    "model.depth=2",
    "model.num_heads=4",
    "model.predictor_dim=32",
    "model.predictor_depth=1",
    "model.predictor_heads=2",
    "optim.global_batch=64",
    "optim.epochs=100",
    "optim.lr=3e-3",
    "optim.warmup_epochs=0",
    "optim.ema=[0.98,1.0]",
)
MONITORS = ("step", "loss", "rankme", "feature_std")


@torch.no_grad()
def monitors(encoder: nn.Module, images: Tensor) -> tuple[float, float]:
    """(RankMe, feature std) of the encoder's average-pooled features of `images` [N, C, H, W]."""
    was_training = encoder.training
    encoder.eval()
    feats = encoder(images).mean(dim=1).float()  # [N, D]
    encoder.train(was_training)
    return rankme(feats), feature_std(feats)


def run_lab(
    variants: Mapping[str, Sequence[str]],
    *,
    steps: int,
    every: int,
    data: Dataset,
    probe_images: Tensor,
) -> tuple[dict[str, dict[str, list[float]]], dict[str, nn.Module]]:
    """Train each variant (its overrides on top of `LAB`) for `steps` steps on `data`. Returns (logs,
    methods): per variant, the step, loss, RankMe and feature std measured every `every` steps and after
    the last one, and the trained method."""
    logs, methods = {}, {}
    for name, overrides in variants.items():
        cfg = load_config(overrides=[*LAB, f"optim.max_steps={steps}", *overrides])
        log = logs[name] = {key: [] for key in MONITORS}

        def on_step(step: int, method: nn.Module, row: dict, log: dict = log) -> None:
            if step % every and step != steps - 1:
                return
            r, s = monitors(method.eval_encoder, probe_images)
            for key, value in zip(MONITORS, (step, row["loss"], r, s)):
                log[key].append(value)

        methods[name] = train(cfg, dataset=data, progress=False, on_step=on_step).method.eval()
    return logs, methods


__all__ = ["LAB", "monitors", "run_lab"]
