"""Every list of valid names, in one place: config validation, the builders and the scripts read them here.

A name added to a tuple below must also be given its implementation where the comment says; the tests check
that each registry and its implementation list the same names."""

from __future__ import annotations

# datasets (jepa_lite.data.build_dataset) and the size of each one's training split, for step arithmetic that
# must not read the data (`scripts/pretrain.py --dry-run`); 'imagefolder' assumes ImageNet-1k's train split
TRAIN_SIZES = {
    "fmnist": 60_000,
    "shapes": 10_000,
    "cifar10": 50_000,
    "stl10": 5_000,
    "imagefolder": 1_281_167,
}
DATASETS = tuple(TRAIN_SIZES)

# pretraining methods (jepa_lite.core.methods.METHODS) and what each needs of the batch unless the user says
# otherwise: MAE masks 75% of the patches at random, as in the MAE paper; I-JEPA with SIGReg takes its
# targets from the context encoder itself, with gradients (no EMA teacher)
METHODS = ("ijepa", "mae", "invariant", "lejepa", "ijepa_sigreg")
METHOD_NAMES = {
    "ijepa": "I-JEPA",
    "mae": "MAE",
    "invariant": "Invariant (InfoNCE)",
    "lejepa": "LeJEPA (SIGReg)",
    "ijepa_sigreg": "I-JEPA + SIGReg, no EMA",
}  # as tables and figures say
METHOD_PRESETS = {
    "ijepa": (),
    "mae": ("mask.strategy=random", "mask.target_ratio=0.75"),
    "invariant": (),
    "lejepa": (),
    "ijepa_sigreg": ("method.target_mode=online",),
}

# mask strategies (jepa_lite.core.collate.COLLATORS) and how contexts of different sizes share a batch
MASK_STRATEGIES = ("multiblock", "random", "block", "rasterized")
CONTEXT_FILLS = ("subsample", "pad", "fixed")

# label-irrelevant detail drawn into the background (jepa_lite.data.nuisance)
NUISANCE_KINDS = ("noise", "stripes")

# accelerate's mixed-precision modes, plus 'auto' (bf16 where the GPU has it, else full precision)
PRECISIONS = ("auto", "no", "bf16", "fp16")

# the smaller choices of the method and model sections (jepa_lite.core.methods, jepa_lite.core.models)
LOSSES = ("smooth_l1", "l2")
TARGET_MODES = ("ema", "online_stopgrad", "online")
PIXEL_DECODES = ("joint", "per_block")
INITS = ("depth_rescale", "official")
