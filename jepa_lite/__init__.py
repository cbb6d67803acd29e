"""jepa_lite: a small, readable I-JEPA (Assran et al., CVPR 2023) with MAE and an invariant baseline.

Modules, one concept each: masks (multi-block masking), models (ViT encoder, predictor), ema, methods
(IJEPA, MAE, Invariant), schedules, data, train (the accelerate loop), evaluate (probes), viz, widgets,
checkpoint, config.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"


def quick_mode() -> bool:
    """True when JEPA_QUICK is set to a true value: notebooks and tests shrink steps and data, same cells."""
    return os.environ.get("JEPA_QUICK", "0").lower() not in ("", "0", "false", "no")


def pick(full, quick):
    """`quick` in quick mode, `full` otherwise: `steps = pick(300, 5)`."""
    return quick if quick_mode() else full
