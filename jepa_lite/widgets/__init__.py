"""The interactive explorers of the notebooks: sliders over the mask geometry (01) and the EMA rule (04).

`mask_explorer_data` and `ema_explorer_data` are the pure functions (tested directly); `mask_explorer` and
`ema_explorer` wrap them with `ipywidgets.interactive`. Headless, a widget renders its default once; set
`.value` on a child slider to redraw (that is how the tests drive it). A slider setting that cannot work
prints a message naming the slider (`check_setting`) in the output area instead of a traceback.
"""

from .ema_explorer import (
    MOMENTUM_STOPS,
    ema_explorer,
    ema_explorer_data,
    format_ema_stats,
    plot_momentum_schedule,
)
from .mask_explorer import check_setting, format_stats, mask_explorer, mask_explorer_data

__all__ = [
    "check_setting",
    "mask_explorer_data",
    "format_stats",
    "mask_explorer",
    "ema_explorer_data",
    "format_ema_stats",
    "plot_momentum_schedule",
    "ema_explorer",
    "MOMENTUM_STOPS",
]
