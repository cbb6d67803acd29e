"""jepa_lite: a small, readable I-JEPA (Assran et al., CVPR 2023) with MAE and an invariant baseline.

Layers, bottom up, each importing only from the ones before it (tests/test_layout.py checks it); the three
that matter are core/, lab/ and cluster/:

- registry (every valid name) and data/ (the datasets: Fashion-MNIST, ShapesWorld, image folders, CIFAR-10,
  STL-10, label-irrelevant nuisance detail);
- core/, the I-JEPA path a learner reads in one sitting: masks, collate, models, ema, methods, schedules, the
  one training loop (train) and the probes (features, evaluate), with the plumbing the loop needs;
- interop/, the official and Hugging Face checkpoints, key for key;
- cluster/, what a long run on many GPUs needs: checkpoints, preemption, one run per folder (plugged into the
  core's loop as `RunFolder`), and the paper's evaluation with every process of a job;
- lab/, the course's experiments: the grid and its tables, why MAE leads here, the course checkpoints and
  their retraining, the blue-box decoder, the collapse lab;
- beside the lab, the drawings: viz/, widgets/, diagrams (they import the core only).
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
