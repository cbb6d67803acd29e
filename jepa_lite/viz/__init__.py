"""Figures for the notebooks. Every function draws with matplotlib and returns the `Figure` (a notebook ends
the line with `;`, a test inspects the axes); images are expected normalised `[C, H, W]` and are rescaled
to [0, 1] per image for display.

    viz.masks     masks and patches on images
    viz.training  curves, hidden patches, energy, step costs, EMA, collapse
    viz.results   probes, the experiment grid, accuracy against compute and against nuisance strength
"""

from .masks import (
    CONTEXT_COLOR,
    TARGET_COLORS,
    image_to_display,
    mask_label_map,
    plot_coverage,
    plot_mask_grid,
    plot_mask_overlay,
    plot_mask_panels,
    plot_patches,
    plot_sincos_positions,
    plot_size_histograms,
)
from .results import (
    PROBE_NAMES,
    plot_accuracy_vs_compute,
    plot_experiment_summary,
    plot_gap,
    plot_nuisance,
    plot_probe_bars,
    plot_screen,
    spread_labels,
)
from .training import (
    COLLAPSE_TITLES,
    CURVE_TITLES,
    METHOD_COLORS,
    hide_patches,
    plot_collapse_lab,
    plot_curves,
    plot_ema_trace,
    plot_energy,
    plot_image_rows,
    plot_step_costs,
    plot_training_curves,
)

__all__ = [
    "CONTEXT_COLOR",
    "TARGET_COLORS",
    "mask_label_map",
    "image_to_display",
    "plot_mask_overlay",
    "plot_mask_grid",
    "plot_mask_panels",
    "plot_coverage",
    "plot_size_histograms",
    "plot_patches",
    "plot_sincos_positions",
    "plot_curves",
    "METHOD_COLORS",
    "hide_patches",
    "plot_image_rows",
    "plot_energy",
    "plot_step_costs",
    "plot_ema_trace",
    "COLLAPSE_TITLES",
    "plot_collapse_lab",
    "CURVE_TITLES",
    "plot_training_curves",
    "PROBE_NAMES",
    "plot_probe_bars",
    "spread_labels",
    "plot_experiment_summary",
    "plot_accuracy_vs_compute",
    "plot_nuisance",
    "plot_gap",
    "plot_screen",
]
