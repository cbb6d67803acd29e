"""Tests for jepa_lite.widgets: the pure explorer function, and the slider wiring of the widget."""

import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
import traitlets
from hypothesis import given, settings
from hypothesis import strategies as st

from jepa_lite.core.masks import block_size, masks_to_grid, sample_masks
from jepa_lite.widgets import (
    check_setting,
    ema_explorer,
    format_stats,
    mask_explorer,
    mask_explorer_data,
    plot_momentum_schedule,
)


def test_explorer_data_default_statistics():
    d = mask_explorer_data(8, batch_size=64, seed=0)
    assert d["error"] is None
    B, M, kt = d["target_idx"].shape
    assert (B, M) == (64, 4) and d["context_idx"].shape == (64, d["context_len"])
    assert d["block_h"] * d["block_w"] == kt == d["target_len"]
    assert d["coverage"].shape == (8, 8)
    assert 0 < d["context_fraction"] < 1 and 0 < d["target_fraction"] < 1
    # the coverage map is the mean context membership, so it sums to Kc
    assert float(d["coverage"].sum()) == pytest.approx(d["context_len"], rel=1e-5)


def test_explorer_data_block_size_matches_geometry_for_fixed_scale():
    d = mask_explorer_data(10, target_scale=(0.2, 0.2), target_aspect=(1.0, 1.0), batch_size=8)
    assert (d["block_h"], d["block_w"]) == block_size(0.2, 1.0, 10)


def test_explorer_data_is_deterministic_given_seed():
    a, b = mask_explorer_data(8, seed=3), mask_explorer_data(8, seed=3)
    assert torch.equal(a["context_idx"], b["context_idx"]) and torch.equal(a["target_idx"], b["target_idx"])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(target_scale=(0.3, 0.1)),
        dict(target_aspect=(0.0, 1.0)),
        dict(n_targets=0),
        dict(context_scale=(0.5, 1.2)),
        dict(grid=1),
        dict(batch_size=0),
    ],
)
def test_invalid_settings_give_a_message_not_an_exception(kwargs):
    kwargs = dict(kwargs)
    grid = kwargs.pop("grid", 8)
    d = mask_explorer_data(grid, **kwargs)
    assert d["error"] and d["context_idx"] is None
    assert format_stats(d).startswith("Invalid setting")


def test_impossible_context_is_reported_readably():
    d = mask_explorer_data(2, n_targets=4)  # any target block on a 2x2 grid leaves < 4 context patches
    assert "target scale" in d["error"] and "grid size" in d["error"]


def test_unlucky_draws_are_reported_with_the_sampler_error():
    # 4 blocks of 3x4 on a 4x4 grid: possible only when all overlap, so the sampler gives up
    d = mask_explorer_data(4, target_scale=(0.6, 0.6), n_targets=4, batch_size=64)
    assert "targets M = 4" in d["error"] and "target scale" in d["error"]
    assert "RuntimeError" in d["error"] and "min_context" in d["error"]


def test_widget_renders_default_once_headless():
    w = mask_explorer(batch_size=32)
    assert w.result["error"] is None and w.result["target_idx"].shape[1] == 4
    assert all(getattr(c, "continuous_update", False) is False for c in w.children[:-1])
    assert "stats" not in format_stats(w.result)


def test_setting_sliders_changes_the_result():
    images = torch.randn(4, 1, 32, 32)
    w = mask_explorer(images, batch_size=32)
    ts, ta, nt, cs, grid = w.children[:5]
    base = w.result["target_len"]
    ts.value = (0.3, 0.35)
    assert w.result["target_len"] > base
    nt.value = 2
    assert w.result["target_idx"].shape[1] == 2
    grid.value = 12
    assert w.result["grid"] == (12, 12) and w.result["coverage"].shape == (12, 12)
    kc = w.result["context_len"]
    cs.value = (0.4, 0.45)
    assert w.result["context_len"] < kc
    ta.value = (3.0, 3.5)  # tall blocks
    assert w.result["block_h"] > w.result["block_w"]
    grid.value = 2  # impossible: message, no exception
    assert w.result["error"] is not None


# ---------------------------------------------------------------------------------------------------------
# abuse: bad slider combinations show a message naming the slider, never a traceback


@pytest.fixture(scope="module")
def explorer():
    return mask_explorer(torch.randn(4, 1, 28, 28), batch_size=16)


def _set(widget, **values):
    """Set sliders by parameter name, in the given order (each assignment redraws once)."""
    names = ["target_scale", "target_aspect", "n_targets", "context_scale", "grid"]
    for name, value in values.items():
        widget.children[names.index(name)].value = value


DEFAULTS = dict(
    target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5), n_targets=4, context_scale=(0.85, 1.0), grid=7
)


@pytest.mark.parametrize(
    "bad, names",
    [
        (dict(context_scale=(0.2, 0.2), grid=3), ["context scale", "1x1"]),  # context block of 1 patch
        (dict(grid=2), ["target scale", "grid size"]),  # every target block eats the 2x2 context
        (dict(grid=4, target_scale=(0.6, 0.6), n_targets=4), ["targets M = 4", "target scale"]),  # by chance
        (dict(grid=5, target_scale=(0.6, 0.6), n_targets=8), ["targets M = 8"]),  # more targets than fit
    ],
)
def test_bad_slider_combinations_show_a_message_naming_the_slider(explorer, capsys, bad, names):
    _set(explorer, **DEFAULTS)
    assert explorer.result["error"] is None
    capsys.readouterr()
    _set(explorer, **bad)  # must not raise
    out = " ".join(capsys.readouterr().out.split())  # the widget wraps long lines
    assert explorer.result["error"] and explorer.result["context_idx"] is None
    assert "Invalid setting, nothing drawn." in out and "Traceback" not in out
    for name in names:
        assert name in out and name in explorer.result["error"]
    _set(explorer, **DEFAULTS)  # and it recovers
    assert explorer.result["error"] is None and explorer.result["target_idx"].shape[1] == 4


def test_blocks_too_large_for_the_grid_are_drawn_with_a_note(explorer, capsys):
    _set(explorer, **DEFAULTS)
    capsys.readouterr()
    _set(explorer, n_targets=1, target_scale=(0.6, 0.6), target_aspect=(4.0, 4.0))  # asks for 11 rows of 7
    out = " ".join(capsys.readouterr().out.split())
    assert explorer.result["error"] is None and explorer.result["block_h"] == 7
    assert "Note: target scale up to 0.60 with target aspect 4.00-4.00" in out and "clipped" in out
    assert explorer.result["notes"] and "Note:" in format_stats(explorer.result)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(target_scale=(0.3, 0.1)), "target scale=(0.3, 0.1)"),
        (dict(target_scale=(0.0, 0.2)), "target scale"),
        (dict(target_aspect=(-1.0, 1.0)), "target aspect"),
        (dict(context_scale=(0.5, 1.5)), "context scale"),
        (dict(n_targets=0), "targets M=0"),
        (dict(n_targets=2.5), "targets M=2.5"),
        (dict(grid=1), "grid size = 1"),
        (dict(grid="8"), "grid size = '8'"),
    ],
)
def test_callback_with_values_the_sliders_cannot_hold(explorer, capsys, kwargs, name):
    capsys.readouterr()
    result = explorer.f(**{**DEFAULTS, **kwargs})  # the callback itself, as ipywidgets calls it
    out = " ".join(capsys.readouterr().out.split())
    assert result["error"] and name in result["error"] and name in out and "Traceback" not in out
    error, _ = check_setting(**{**DEFAULTS, **kwargs})
    assert name in error


def test_check_setting_accepts_the_paper_setting_silently():
    assert check_setting(8) == (None, [])
    assert check_setting(14) == (None, [])


def test_mask_explorer_rejects_bad_arguments_at_once():
    with pytest.raises(ValueError, match="images"):
        mask_explorer(torch.randn(2, 1, 32, 32), n_show=4)
    with pytest.raises(ValueError, match="images"):
        mask_explorer(torch.randn(1, 32, 32))
    with pytest.raises(ValueError, match="batch_size"):
        mask_explorer(batch_size=0)
    with pytest.raises(ValueError, match="n_show"):
        mask_explorer(n_show=0)


def test_images_that_do_not_match_the_grid_are_left_out_with_a_note(capsys):
    w = mask_explorer(torch.randn(4, 1, 32, 32), batch_size=16)
    capsys.readouterr()
    w.children[4].value = 12  # 32 px do not split into 12 patches
    out = " ".join(capsys.readouterr().out.split())
    assert w.result["error"] is None and "do not split into a 12x12 grid" in out


@pytest.mark.parametrize(
    "momentum, noise, name",
    [
        (1.5, 0.5, "momentum 1.5"),
        (-0.1, 0.5, "momentum -0.1"),
        (0.9, -1.0, "noise -1.0"),
        ("fast", 0.5, "momentum m = 'fast'"),
    ],
)
def test_ema_callback_shows_a_message_for_bad_values(capsys, momentum, noise, name):
    w = ema_explorer(n_steps=200)
    capsys.readouterr()
    result = w.f(momentum, noise)
    out = " ".join(capsys.readouterr().out.split())
    assert result["error"] and "Invalid setting, nothing drawn." in out and name in out
    w.children[0].value = 0.99  # the sliders still work afterwards
    assert w.result["error"] is None and w.result["lag"] == 100


def test_ema_momentum_slider_is_log_spaced_and_reaches_the_papers_range():
    from jepa_lite.widgets import MOMENTUM_STOPS

    w = ema_explorer(n_steps=300)
    momentum = w.children[0]
    assert momentum.options == tuple((f"{m:.4f}", m) for m in MOMENTUM_STOPS) and momentum.value == 0.9
    gaps = [math.log10(1 - m) for m in MOMENTUM_STOPS if m not in (0.996, 1.0)]
    assert all(abs((b - a) + 0.25) < 1e-3 for a, b in zip(gaps, gaps[1:]))  # four stops per decade of 1 - m
    in_paper_range = [m for m in MOMENTUM_STOPS if 0.99 <= m <= 1.0]
    assert {0.99, 0.996, 1.0} <= set(in_paper_range) and len(in_paper_range) >= 8
    momentum.value = 1.0  # the end of the paper's schedule: a frozen target
    assert w.result["error"] is None and w.result["lag"] is None and math.isinf(w.result["window"])
    with pytest.raises(traitlets.TraitError):
        momentum.value = 1.5  # not a stop: the slider refuses it, the callback never sees it


def test_momentum_schedule_panel_draws_the_schedule_and_the_sliders_value():
    fig = plot_momentum_schedule(0.99, 200)
    ax = fig.axes[0]
    schedule, slider = ax.lines[0], ax.lines[1]
    assert abs(schedule.get_ydata()[0] - 0.004) < 1e-9 and schedule.get_ydata()[-1] < 1e-4  # 0.996 -> 1
    assert abs(slider.get_ydata()[0] - 0.01) < 1e-12 and ax.get_yscale() == "log"
    frozen = plot_momentum_schedule(1.0, 200).axes[0]
    assert len(frozen.lines) == 1 and "never moves" in frozen.texts[0].get_text()


@pytest.mark.parametrize("kwargs, match", [(dict(jump_at=600), "jump_at"), (dict(n_steps=1), "n_steps")])
def test_ema_explorer_rejects_bad_arguments_at_once(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ema_explorer(**kwargs)


# every combination the sliders can hold: never an exception, and an error only when no draw can work
def _range(lo: float, hi: float, step: float):
    """(min, max) pairs on a range slider's steps."""
    n = round((hi - lo) / step)
    pairs = st.tuples(st.integers(0, n), st.integers(0, n))
    return pairs.map(lambda ab: (round(lo + min(ab) * step, 4), round(lo + max(ab) * step, 4)))


@settings(max_examples=80, deadline=None)
@given(
    grid=st.integers(2, 16),
    n_targets=st.integers(1, 8),
    target_scale=_range(0.02, 0.6, 0.01),
    target_aspect=_range(0.2, 4.0, 0.05),
    context_scale=_range(0.2, 1.0, 0.01),
)
def test_any_slider_setting_gives_masks_or_a_message(
    grid, n_targets, target_scale, target_aspect, context_scale
):
    kwargs = dict(
        n_targets=n_targets,
        target_scale=target_scale,
        target_aspect=target_aspect,
        context_scale=context_scale,
    )
    d = mask_explorer_data(grid, batch_size=8, **kwargs)  # must not raise
    if d["error"] is None:
        assert d["context_idx"].shape[1] >= 4 and d["target_idx"].shape[:2] == (8, n_targets)
    else:
        assert any(label in d["error"] for label in ("context scale", "target scale", "targets M"))
    error, _ = check_setting(grid, **kwargs)
    if error:  # no false alarm: the sampler itself cannot draw this setting either, whatever the seed
        for seed in range(3):
            with pytest.raises((ValueError, RuntimeError)):
                sample_masks(8, grid, generator=torch.Generator().manual_seed(seed), **kwargs)


def test_strategies_keep_their_own_geometry_and_say_so():
    for strategy, (m, note) in {
        "rasterized": (3, "quadrant"),
        "block": (1, "60%"),
        "random": (1, "at random"),
    }.items():
        d = mask_explorer_data(
            7, strategy=strategy, batch_size=32, target_scale=(0.3, 0.4)
        )  # sliders ignored
        assert d["error"] is None and d["target_idx"].shape[1] == m, strategy
        assert any(note in n and "multi-block masks only" in n for n in d["notes"]), d["notes"]
        in_ctx = masks_to_grid(d["context_idx"], 7)
        in_tgt = masks_to_grid(d["target_idx"], 7).any(1)
        assert not (in_ctx & in_tgt).any(), strategy  # the context never sees a target patch
        assert torch.allclose(d["target_coverage"], in_tgt.float().mean(0))
    assert mask_explorer_data(7, strategy="random")["block_h"] is None  # random masks are not a block
    assert "not one of: multi-block" in mask_explorer_data(7, strategy="blocks")["error"]


def test_resample_button_draws_a_new_batch_and_the_dropdown_switches_strategy():
    w = mask_explorer(torch.randn(4, 1, 28, 28), batch_size=16)
    strategy, draw, button, output = w.children[5:]
    assert strategy.value == "multi-block" and draw.value == 0 and output is w.children[-1]
    before = w.result["context_idx"].clone()
    button.click()
    assert draw.value == 1 and not torch.equal(before, w.result["context_idx"])
    again = mask_explorer_data(7, batch_size=16, seed=1)  # the drawn batch is the one of draw number 1
    assert torch.equal(again["context_idx"], w.result["context_idx"])
    strategy.value = "rasterized"
    assert w.result["target_idx"].shape[1] == 3 and w.result["context_len"] == 9  # a 3x3 quadrant of 7x7
