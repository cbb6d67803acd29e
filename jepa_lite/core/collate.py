"""Collators: the DataLoader's `collate_fn`, which stacks a list of samples into
a `Batch` and draws its masks.

The masks of sample slot s of step t depend only on (seed, t, s), not on which process or worker builds the
batch: the same config masks the same patches on 1 or 16 devices, and a resumed run redraws the masks it
would have drawn."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import get_worker_info

from .mask_strategies import sample_block_masks, sample_random_masks, sample_rasterized_masks
from .masks import Grid, _as_grid, _check_int, sample_masks


@dataclass
class Batch:
    """A training batch: images [B, C, H, W], context_idx [B, Kc], target_idx [B, M, Kt], labels [B],
    context_valid [B, Kc] (bool, True for a real context token) when contexts are padded, else None, and
    target_valid [B, M, Kt] (True for a real target patch) when target blocks are padded, else None."""

    images: Tensor
    context_idx: Tensor
    target_idx: Tensor
    labels: Tensor | None = None
    context_valid: Tensor | None = None
    target_valid: Tensor | None = None

    @classmethod
    def from_masks(
        cls,
        images: Tensor,
        context_idx: Tensor,
        target_idx: Tensor,
        labels=None,
        *,
        always_valid: bool = False,
    ) -> Batch:
        """A batch from a sampler's masks: -1 padding becomes `context_valid` / `target_valid`, and the padded
        slots repeat their row's (or block's) first patch: a valid index to gather, ignored by attention and
        by the loss. `always_valid`: give both masks even where nothing is padded (the same inputs to a
        compiled step every time)."""
        context_idx, context_valid = _unpad(context_idx, always_valid)
        target_idx, target_valid = _unpad(target_idx, always_valid)
        return cls(
            images, context_idx, target_idx, labels, context_valid=context_valid, target_valid=target_valid
        )

    def _map(self, fn) -> Batch:
        f = lambda t: None if t is None else fn(t)  # noqa: E731
        return Batch(
            f(self.images),
            f(self.context_idx),
            f(self.target_idx),
            f(self.labels),
            context_valid=f(self.context_valid),
            target_valid=f(self.target_valid),
        )

    def to(self, device, non_blocking: bool = False) -> Batch:
        """Move every tensor to `device`."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Page-lock every tensor, so DataLoader(pin_memory=True) works."""
        return self._map(lambda t: t.pin_memory())

    def __len__(self) -> int:
        return self.images.shape[0]


def _unpad(idx: Tensor, always: bool = False) -> tuple[Tensor, Tensor | None]:
    """Indices [..., K] with -1 padding -> (indices with each pad replaced by its row's first, valid [...,
    K]),
    or (idx, None) when nothing is padded (unless `always`)."""
    if not always and (idx.numel() == 0 or int(idx.min()) >= 0):
        return idx, None
    valid = idx >= 0
    return torch.where(valid, idx, idx[..., :1]), valid


def _mix(*values: int) -> int:
    """Deterministic 63-bit seed from a few ints."""
    seed = 0
    for v in values:
        seed = (seed * 1_000_003 + int(v)) % 2**63
    return seed


class MaskCollator:
    """DataLoader `collate_fn` that stacks (image, label[, key]) samples and draws masks for them.

    With keys `(step, slot, global_batch)` the masks depend only on (seed, step): masks for the whole global
    batch are drawn and the rows at each sample's slot returned, so any split of a global batch across
    processes gives the same masks as one process. Without keys the generator is seeded from (seed, epoch,
    worker id, call counter): reproducible, and different in each worker; call `set_epoch` each epoch if the
    DataLoader's workers are not persistent (their counters restart).
    """

    def __init__(self, grid: Grid, *, seed: int = 0, **mask_kwargs):
        self.grid = _as_grid(grid)
        self.seed = _check_int("seed", seed, 0)
        self.mask_kwargs = mask_kwargs
        self.fixed_shapes = mask_kwargs.get("context_fill") == "fixed"  # batches always carry valid masks
        self.epoch = 0
        self._calls = 0
        self.sample(1, torch.Generator().manual_seed(0))  # validate the arguments now, not in a worker

    sampler = None  # each strategy's sampling function: (batch_size, grid, *, generator, **kwargs) -> masks

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Draw context_idx [B, Kc] and target_idx [B, M, Kt] with the strategy's sampler."""
        if self.sampler is None:
            raise NotImplementedError("MaskCollator is abstract: use make_collator(strategy, grid)")
        return type(self).sampler(batch_size, self.grid, generator=generator, **self.mask_kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Fold the epoch into the seed of key-less batches."""
        self.epoch = _check_int("epoch", epoch, 0)

    def __call__(self, samples: list[tuple]) -> Batch:
        if len(samples) == 0:
            raise ValueError("samples is empty: the collator needs at least one sample")
        parts = [
            (s, None, None) if isinstance(s, Tensor) else tuple(s) + (None,) * (3 - len(s)) for s in samples
        ]
        if any(len(p) != 3 for p in parts):
            raise ValueError("each sample must be image, (image,), (image, label) or (image, label, key)")
        images = torch.stack([torch.as_tensor(p[0]) for p in parts])
        images = images if images.is_floating_point() else images.float()
        labels = None
        if all(p[1] is not None for p in parts):
            labels = torch.tensor([int(p[1]) for p in parts], dtype=torch.long)
        keys = [p[2] for p in parts]
        if all(k is None for k in keys):
            info = get_worker_info()
            seed = _mix(self.seed, self.epoch, 0 if info is None else info.id, self._calls)
            self._calls += 1
            context_idx, target_idx = self.sample(len(samples), torch.Generator().manual_seed(seed))
        else:
            context_idx, target_idx = self._keyed(keys)
        return Batch.from_masks(images, context_idx, target_idx, labels, always_valid=self.fixed_shapes)

    def _keyed(self, keys: list) -> tuple[Tensor, Tensor]:
        """Rows of the global batch's masks at each key's slot."""
        try:
            keys = [tuple(int(v) for v in k) for k in keys]
        except TypeError:
            raise ValueError(
                "either every sample carries a key (step, slot, global_batch) or none does"
            ) from None
        if any(len(k) != 3 for k in keys):
            raise ValueError(f"key={keys[0]!r}: each key must be (step, slot, global_batch)")
        step, _, global_batch = keys[0]
        if any(k[0] != step or k[2] != global_batch for k in keys):
            raise ValueError(f"keys must share step and global_batch within a batch, got {sorted(set(keys))}")
        _check_int("step", step, 0)
        _check_int("global_batch", global_batch, 1)
        slots = torch.tensor([k[1] for k in keys])
        if int(slots.min()) < 0 or int(slots.max()) >= global_batch:
            raise ValueError(f"slot values {slots.tolist()} must lie in [0, global_batch={global_batch})")
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + step) % 2**63)
        context_idx, target_idx = self.sample(global_batch, generator)
        return context_idx.index_select(0, slots), target_idx.index_select(0, slots)


class MultiBlockMaskCollator(MaskCollator):
    """The paper's multi-block masks (kwargs of `sample_masks`)."""

    sampler = staticmethod(sample_masks)


class RandomMaskCollator(MaskCollator):
    """Random-patch masks (kwargs of `sample_random_masks`)."""

    sampler = staticmethod(sample_random_masks)


class BlockMaskCollator(MaskCollator):
    """Single-block masks (kwargs of `sample_block_masks`)."""

    sampler = staticmethod(sample_block_masks)


class RasterizedMaskCollator(MaskCollator):
    """Quadrant masks (`sample_rasterized_masks`)."""

    sampler = staticmethod(sample_rasterized_masks)


COLLATORS: dict[str, type[MaskCollator]] = {
    "multiblock": MultiBlockMaskCollator,
    "random": RandomMaskCollator,
    "block": BlockMaskCollator,
    "rasterized": RasterizedMaskCollator,
}


def make_collator(strategy: str, grid: Grid, *, seed: int = 0, **kwargs) -> MaskCollator:
    """Collator for a masking strategy: 'multiblock' (the paper's), 'random', 'block' or 'rasterized'."""
    if strategy not in COLLATORS:
        raise ValueError(f"strategy={strategy!r} is not one of {sorted(COLLATORS)}")
    return COLLATORS[strategy](grid, seed=seed, **kwargs)
