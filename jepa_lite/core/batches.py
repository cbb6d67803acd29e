"""How one global batch is cut into per-process micro-batches, and the keys that make its data order and
masks depend on the step alone: the same config gives the same optimisation on 1, 8 or 16 devices, and a
resumed run continues exactly where it stopped."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler


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

    def __init__(
        self,
        n: int,
        global_batch: int,
        *,
        micro: int,
        accum: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start_step: int = 0,
        total_steps: int,
    ) -> None:
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
                f"training sample {index} ({type(self.dataset).__name__}) could not be loaded at step "
                f"{step}: {type(err).__name__}: {err}"
            ) from err
        return image, label, (step, slot, g)
