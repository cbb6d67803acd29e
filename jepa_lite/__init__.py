"""jepa_lite: a small, readable I-JEPA (Assran et al., CVPR 2023) with MAE and an invariant baseline.

Modules, one concept each, in the order one training step reads them:

- the I-JEPA path: registry (valid names), config, fashion_mnist / shapes / image_folders / data (datasets),
  nuisance (label-free background detail), masks and mask_strategies (multi-block and the other maskings),
  collate (the `Batch`), models (ViT encoder, predictor), ema, sigreg (LeJEPA's regulariser), methods
  (IJEPA, MAE, Invariant, LeJEPA), schedules, build (config -> parts), flops, batches (the global-batch
  contract), steplog, train (the one loop), features and evaluate (frozen features, probes);
- the course's lab: experiments, grid, tables, gap (the experiment grid and why MAE leads), pretrained and
  retrain (the course checkpoints), decoder and blue_box (what the predictor knows, drawn), collapse_lab
  (what keeps a JEPA from collapse, watched in a minute);
- running on a cluster: checkpoint, preempt, runlock (resume, preemption, one run per folder), protocols,
  feature_store, sgd_probe, protocol_eval (the paper's evaluation with every process of a job);
- drawing and interop: viz/, widgets/, diagrams, interop/ (official and Hugging Face checkpoints).
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
