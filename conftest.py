"""Repository-wide pytest setup: notebooks run in quick mode (fewer steps, smaller data, same cells)."""

import os

os.environ.setdefault(
    "JEPA_QUICK", "1"
)  # read by jepa_lite.quick_mode(); kernels started by nbval inherit it
