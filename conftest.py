"""Repository-wide pytest setup: notebooks run in quick mode (fewer steps, smaller data, same cells)."""

import os

os.environ.setdefault(
    "JEPA_QUICK", "1"
)  # read by jepa_lite.quick_mode(); kernels started by nbval inherit it
# One BLAS thread per process: on 2 shared cores, 2 threads oversubscribe (a notebook cell went 16 s -> 138 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")
