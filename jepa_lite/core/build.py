"""Builders: from a `Config` to the objects one training step needs (dataset, encoder, method, mask
collator, accelerator) and the step arithmetic of a run. `train`, the experiment grid, the shipped checkpoints
and the scripts all build through here, so a config means the same run everywhere."""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed
from torch import nn
from torch.utils.data import Dataset

from ..data import build_dataset, dataset_info
from ..data.nuisance import with_nuisance
from ..registry import PRECISIONS
from .collate import MaskCollator, make_collator
from .config import Config
from .methods import IJEPA, MAE, Invariant, LeJEPA
from .models import PixelDecoder, Predictor, ProjectionHead, ViTEncoder, official_init_

VIEW_CROP_SCALE = (0.3, 1.0)  # the invariant method's view crop when method.crop_scale is null
LEJEPA_GLOBAL_SCALE = (0.4, 1.0)  # LeJEPA's global views' crop when method.crop_scale is null


def in_chans_of(cfg: Config) -> int:
    """Image channels of the config's dataset: the one source of this fact (`data.dataset_info`)."""
    return dataset_info(cfg.data.name)["in_chans"]


def build_encoder(cfg: Config, in_chans: int | None = None) -> ViTEncoder:
    """The ViT of the config: a timm name, or the explicit small size for 28/32-px images. `in_chans`
    defaults to the config's dataset's channels (give it for weights made for other images)."""
    in_chans = in_chans_of(cfg) if in_chans is None else in_chans
    m = cfg.model
    if m.name:
        enc = ViTEncoder(m.name, img_size=cfg.data.image_size, in_chans=in_chans, drop_path_rate=m.drop_path)
    else:
        enc = ViTEncoder(
            img_size=cfg.data.image_size,
            patch_size=m.patch_size,
            in_chans=in_chans,
            embed_dim=m.embed_dim,
            depth=m.depth,
            num_heads=m.num_heads,
            drop_path_rate=m.drop_path,
        )
    enc.grad_checkpointing = m.grad_checkpointing
    if m.init == "official":
        official_init_(enc)
    return enc


def _build_ijepa(cfg: Config, enc: ViTEncoder, in_chans: int, narrow: dict) -> IJEPA:
    pred = Predictor(enc.grid, enc.embed_dim, **narrow)
    pred.grad_checkpointing = cfg.model.grad_checkpointing
    if cfg.model.init == "official":
        official_init_(pred)
    me = cfg.method
    return IJEPA(
        enc,
        pred,
        loss=me.loss,
        target_mode=me.target_mode,
        crop_scale=me.crop_scale,
        foreground_targets=me.foreground_targets,
    )


def _build_mae(cfg: Config, enc: ViTEncoder, in_chans: int, narrow: dict) -> MAE:
    decoder = PixelDecoder(enc.grid, enc.embed_dim, enc.patch_size, in_chans, **narrow)
    if cfg.model.init == "official":
        official_init_(decoder)
    me = cfg.method
    return MAE(
        enc, decoder, norm_pix=me.norm_pix, crop_scale=me.crop_scale, per_block=me.pixel_decode == "per_block"
    )


def _build_invariant(cfg: Config, enc: ViTEncoder, in_chans: int, narrow: dict) -> Invariant:
    head = ProjectionHead(enc.embed_dim, hidden_dim=4 * enc.embed_dim, out_dim=128)
    views = cfg.method.crop_scale or VIEW_CROP_SCALE
    return Invariant(enc, head, temperature=cfg.method.temperature, crop_scale=views)


def _build_ijepa_sigreg(cfg: Config, enc: ViTEncoder, in_chans: int, narrow: dict) -> IJEPA:
    """I-JEPA's masks and predictor, targets from the context encoder with gradients, SIGReg for the EMA."""
    method = _build_ijepa(cfg, enc, in_chans, narrow)
    method.target_mode = "online"
    method.sigreg_weight, method.sigreg_slices = cfg.method.sigreg_weight, cfg.method.sigreg_slices
    return method


def _build_lejepa(cfg: Config, enc: ViTEncoder, in_chans: int, narrow: dict) -> LeJEPA:
    me = cfg.method
    projector = ProjectionHead(enc.embed_dim, hidden_dim=4 * enc.embed_dim, out_dim=64)
    kw = dict(global_scale=me.crop_scale or LEJEPA_GLOBAL_SCALE, local_scale=me.local_scale)
    return LeJEPA(
        enc, projector, views=me.views, sigreg_weight=me.sigreg_weight, sigreg_slices=me.sigreg_slices, **kw
    )


# one builder per name of registry.METHODS: the method's own modules on top of the config's encoder
METHOD_BUILDERS = {
    "ijepa": _build_ijepa,
    "mae": _build_mae,
    "invariant": _build_invariant,
    "lejepa": _build_lejepa,
    "ijepa_sigreg": _build_ijepa_sigreg,
}


def build_method(cfg: Config, in_chans: int | None = None) -> nn.Module:
    """IJEPA, MAE or Invariant on the config's encoder (channels: as `build_encoder`)."""
    in_chans = in_chans_of(cfg) if in_chans is None else in_chans
    name = cfg.method.name
    if name not in METHOD_BUILDERS:
        raise ValueError(f"method {name!r} is not one of {', '.join(METHOD_BUILDERS)}")
    m = cfg.model
    narrow = dict(predictor_dim=m.predictor_dim, depth=m.predictor_depth, num_heads=m.predictor_heads)
    return METHOD_BUILDERS[name](cfg, build_encoder(cfg, in_chans), in_chans, narrow)


def initial_encoder(cfg: Config, in_chans: int | None = None) -> ViTEncoder:
    """The encoder `train(cfg)` starts from (the same seed, the same draws): the random-init baseline of a
    run. Seeds the global RNG as `train` does, so call it before training, not between steps."""
    set_seed(cfg.seed)
    return build_method(cfg, in_chans).eval_encoder.eval()


def build_collator(cfg: Config, grid: tuple[int, int]) -> MaskCollator:
    """The mask collator of the config (MAE defaults to 75% random masking, the MAE paper's)."""
    mk = cfg.mask
    if mk.strategy == "multiblock":
        kw = dict(
            n_targets=mk.n_targets,
            target_scale=mk.target_scale,
            target_aspect=mk.target_aspect,
            context_scale=mk.context_scale,
            min_context=mk.min_context,
        )
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
        dataset = with_nuisance(dataset, d.nuisance, d.nuisance_strength, seed=NUISANCE_SEEDS[train])
    return dataset


def build_train_set(cfg: Config) -> Dataset:
    """The config's training set (its loader's crops for natural images; none for Fashion-MNIST)."""
    return build_split(cfg, train=True, limit=cfg.data.limit)


def _resolve_precision(mode: str) -> str:
    if mode == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    if mode not in PRECISIONS:
        raise ValueError(f"mixed_precision {mode!r} is not one of {', '.join(PRECISIONS)}")
    return mode


def _init_elastic_process_group(backend: str, timeout: datetime.timedelta) -> None:
    """Under torchrun (and `accelerate launch`, which uses it), start the default process group with store
    keys private to this restart attempt. After an elastic restart (`--max-restarts`) the new processes share
    the launcher's key-value store with the dead ones, and gloo reads each peer's listening address from it:
    without a per-attempt prefix a process may read the address a dead process left, and fail to connect."""
    env = os.environ
    if (
        "TORCHELASTIC_RESTART_COUNT" not in env
        or int(env.get("WORLD_SIZE", "1")) < 2
        or dist.is_initialized()
    ):
        return
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    hosted_by_launcher = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        env["MASTER_ADDR"],
        int(env["MASTER_PORT"]),
        world,
        is_master=not hosted_by_launcher and rank == 0,
        timeout=timeout,
    )
    store = dist.PrefixStore(f"jepa_lite/attempt_{env['TORCHELASTIC_RESTART_COUNT']}", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)


def make_accelerator(cfg: Config):
    """accelerate's Accelerator for the config's precision. Without CUDA, a multi-process launch (torchrun or
    `accelerate launch`, WORLD_SIZE > 1) must ask for CPU explicitly, or each process would train alone."""
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
